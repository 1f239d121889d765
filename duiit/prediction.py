"""Running the predictor on slices, and volume-level outputs aggregated from slices.

Aggregation (documented behaviour): a volume's class probabilities are the mean of the softmax
probabilities of its informative slices (see slices.informative); a regressed value is the mean of
its slices' values. Slice outputs are reported too.
"""

import numpy as np
import torch

from .metrics import classification_metrics, logit_margins, regression_metrics


@torch.inference_mode()
def run_predictor(predictor, slices: torch.Tensor, task: str, scale=(0.0, 1.0), device="cpu",
                  batch_size: int = 64, logits: bool = False) -> np.ndarray:
    """Slices in network range -> (N, K) class probabilities (or raw logits), or (N,) values in label units."""
    predictor.eval()
    outputs = []
    for start in range(0, slices.shape[0], batch_size):
        batch = slices[start:start + batch_size].to(device, torch.float32)
        out = predictor(batch).float()
        if task == "classification":
            outputs.append(out if logits else torch.softmax(out, dim=1))
        else:
            outputs.append(out[:, 0] * scale[1] + scale[0])
    if not outputs:
        return np.zeros((0,))
    return torch.cat(outputs).cpu().numpy()


def aggregate(outputs: np.ndarray) -> np.ndarray:
    return outputs.mean(axis=0)


def prediction_dict(outputs: np.ndarray, task: str, label_names: list, slice_indices) -> dict:
    volume = aggregate(outputs)
    if task == "classification":
        return {"task": task, "label_names": list(label_names),
                "volume": {"label": label_names[int(volume.argmax())], "probabilities": volume.tolist()},
                "slices": [{"index": int(k), "probabilities": p.tolist()} for k, p in zip(slice_indices, outputs)]}
    return {"task": task, "volume": {"value": float(volume)},
            "slices": [{"index": int(k), "value": float(v)} for k, v in zip(slice_indices, outputs)]}


def evaluate(predictor, slice_set, task: str, label_names: list, scale, device) -> dict:
    """Slice-level and volume-level metrics on a set of real target slices."""
    if len(slice_set) == 0:
        return {}
    labels = slice_set.labels.numpy()
    index = slice_set.case_index.numpy()
    if task == "classification":
        logits = run_predictor(predictor, slice_set.images, task, scale, device, logits=True)
        outputs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
        volumes = np.stack([aggregate(outputs[index == n]) for n in range(len(slice_set.cases))])
        volume_labels = np.array([label_names.index(c.label) for c in slice_set.cases])
        # slices are ranked by log-odds (no ties from saturated probabilities); volumes by mean probability
        return {"slice": classification_metrics(outputs, labels, scores=logit_margins(logits)),
                "volume": classification_metrics(volumes, volume_labels)}
    outputs = run_predictor(predictor, slice_set.images, task, scale, device)
    volumes = [aggregate(outputs[index == n]) for n in range(len(slice_set.cases))]
    from .cohort import regression_value
    volume_labels = np.array([regression_value(c.label) for c in slice_set.cases])
    return {"slice": regression_metrics(outputs, labels), "volume": regression_metrics(np.array(volumes), volume_labels)}
