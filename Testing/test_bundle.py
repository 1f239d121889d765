"""Model bundles: one file, weights + JSON header; loading never executes code from the file."""

import json
import pickle
import struct

import pytest
import torch

from duiit.bundle import FORMAT_VERSION, load_bundle, read_header
from duiit.errors import DuiitError

MARKER = "duiit_test_code_ran"


class RunsCodeWhenUnpickled:
    def __reduce__(self):
        return (exec, (f"import builtins; builtins.{MARKER} = True",))


def test_header_has_what_a_user_needs(trained_bundle):
    header = read_header(trained_bundle)
    for key in ("format_version", "source_modality", "target_modality", "task", "label_names", "normalisation",
                "network", "data_summary", "metrics", "versions", "aggregation"):
        assert key in header, key
    assert header["source_modality"] == "MR" and header["target_modality"] == "CT"
    assert header["label_names"] == ["lesion", "none"]
    assert header["normalisation"]["target"]["method"] == "ct_hu_piecewise"
    # the MR histogram standard learned from the training MR, and each of them mapped onto it
    standard = header["normalisation"]["source"]["standard"]
    assert len(standard["unit"]) == len(standard["percentiles"]) and standard["unit"] == sorted(standard["unit"])
    mr = [c["normalisation"] for c in header["data_summary"]["cases"] if c["modality"] == "MR"]
    assert mr and all(r["standardisation"]["to_unit"][1:-1] == standard["unit"] for r in mr)
    assert set(header["versions"]) >= {"duiit", "torch", "numpy", "SimpleITK"}
    bundle = load_bundle(trained_bundle)
    assert bundle.has_translator


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_pickled_bundles_are_refused_without_running_code(tmp_path, how):
    import builtins
    path = tmp_path / "evil.duiit"
    payload = {"weights": torch.zeros(2), "trap": RunsCodeWhenUnpickled()}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(DuiitError, match="pickled object"):
        load_bundle(path)
    with pytest.raises(DuiitError, match="pickled object"):
        read_header(path)
    assert not hasattr(builtins, MARKER)


def test_truncated_bundle_is_refused(trained_bundle, tmp_path):
    data = trained_bundle.read_bytes()
    for cut in (5, 100, len(data) // 2, len(data) - 1):
        path = tmp_path / f"cut{cut}.duiit"
        path.write_bytes(data[:cut])
        with pytest.raises(DuiitError, match="truncated|too short|not a DUIIT|damaged"):
            load_bundle(path)


def rewrite_header(source, target, change):
    data = source.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    raw = json.loads(data[8:8 + length])
    header = json.loads(raw["__metadata__"]["duiit"])
    change(header)
    raw["__metadata__"]["duiit"] = json.dumps(header)
    new = json.dumps(raw).encode()
    new += b" " * ((8 - len(new) % 8) % 8)
    target.write_bytes(struct.pack("<Q", len(new)) + new + data[8 + length:])


def test_header_that_does_not_match_the_weights_is_refused(trained_bundle, tmp_path):
    path = tmp_path / "mismatch.duiit"
    rewrite_header(trained_bundle, path, lambda h: h["network"].update(generator_width=32))
    with pytest.raises(DuiitError, match="header does not match the weights"):
        load_bundle(path)
    rewrite_header(trained_bundle, path, lambda h: h.update(label_names=["a", "b", "c"]))
    with pytest.raises(DuiitError, match="header does not match the weights"):
        load_bundle(path)


def test_the_predictor_pools_as_its_header_says_and_older_bundles_by_the_mean(trained_bundle, tmp_path):
    pools = {}
    for name, change in (("max", lambda h: h["network"].update(predictor_max_pool=1)),
                         ("older", lambda h: h["network"].pop("predictor_max_pool"))):
        rewrite_header(trained_bundle, tmp_path / f"{name}.duiit", change)  # pooling has no weights of its own
        pools[name] = type(load_bundle(tmp_path / f"{name}.duiit").predictor().head[0]).__name__
    assert pools == {"max": "AdaptiveMaxPool2d", "older": "AdaptiveAvgPool2d"}


def test_newer_format_version_is_refused(trained_bundle, tmp_path):
    path = tmp_path / "newer.duiit"
    rewrite_header(trained_bundle, path, lambda h: h.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(DuiitError, match="newer than this DUIIT supports"):
        load_bundle(path)


def test_unrelated_files_are_refused(tmp_path):
    for name, content in (("empty.duiit", b""), ("text.duiit", b"hello world, not a bundle"),
                          ("json.duiit", b'{"a": 1}')):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(DuiitError, match=name):
            load_bundle(path)
