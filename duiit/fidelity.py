"""Translation fidelity: does a translated volume look like CT, in HU, per tissue?

Unpaired (a real MR has no CT of the same head): compare the HU distributions of translated and real CT
per tissue class, each class found by HU thresholds on its own image inside the head.
Paired (MR simulated from a real CT): MAE in HU inside the head, PSNR over a 4000 HU range, SSIM, and the
translated HU inside the real CT's tissue classes.
"""

import numpy as np

from .metrics import mae, psnr, ssim

# HU classes (upper bounds exclusive): air/cavities, soft tissue (fat, brain, muscle, blood), bone
TISSUES = {"air": (-2000.0, -400.0), "soft tissue": (-400.0, 300.0), "bone": (300.0, 5000.0)}
HEAD_THRESHOLD_HU = -500.0
PSNR_RANGE_HU = 4000.0
BRAIN_HU = 20.0  # the paired check's no-information reference paints the head this grey
TARGET_MAE_HU = 100.0  # the paired check's target (issue 4); published unpaired brain MR -> CT: about 78-94 HU


def tissue_masks(ct_hu: np.ndarray, head: np.ndarray) -> dict:
    return {name: head & (ct_hu >= low) & (ct_hu < high) for name, (low, high) in TISSUES.items()}


def tissue_statistics(ct_hu: np.ndarray, head: np.ndarray) -> dict:
    """Per tissue: voxel fraction of the head, mean and std HU."""
    total = max(int(head.sum()), 1)
    stats = {}
    for name, mask in tissue_masks(ct_hu, head).items():
        values = ct_hu[mask]
        stats[name] = {"fraction": float(mask.sum() / total),
                       "mean_hu": float(values.mean()) if values.size else float("nan"),
                       "std_hu": float(values.std()) if values.size else float("nan")}
    return stats


def head_mask(ct_hu: np.ndarray) -> np.ndarray:
    """Voxels of the head: above -500 HU, with each axial slice's holes (sinuses, airways) filled."""
    import SimpleITK as sitk
    mask = (ct_hu > HEAD_THRESHOLD_HU).astype(np.uint8)
    return np.stack([sitk.GetArrayFromImage(sitk.BinaryFillhole(sitk.GetImageFromArray(plane))) > 0
                     for plane in mask])


def flat_grey_head(head: np.ndarray) -> np.ndarray:
    """The paired check's no-information reference: BRAIN_HU everywhere inside the head, air around it. A
    translator whose MAE is above this one's has not put the tissues where its CT has them."""
    return np.where(head, BRAIN_HU, -1000.0).astype(np.float32)


def paired_fidelity(translated_hu: np.ndarray, real_hu: np.ndarray, head=None) -> dict:
    """Translated vs the real CT it should reproduce (same grid)."""
    head = head_mask(real_hu) if head is None else head.astype(bool)
    clipped_t = np.clip(translated_hu, -1024, 3071)
    clipped_r = np.clip(real_hu, -1024, 3071)
    per_tissue = {}
    for name, mask in tissue_masks(clipped_r, head).items():
        if mask.any():
            per_tissue[name] = {"real_mean_hu": float(clipped_r[mask].mean()),
                                "translated_mean_hu": float(clipped_t[mask].mean()),
                                "mae_hu": mae(clipped_t, clipped_r, mask)}
    return {"mae_hu": mae(clipped_t, clipped_r, head), "psnr_db": psnr(clipped_t, clipped_r, PSNR_RANGE_HU, head),
            "ssim": ssim(clipped_t, clipped_r, PSNR_RANGE_HU), "tissues": per_tissue,
            "head_voxels": int(head.sum())}
