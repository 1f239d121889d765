"""Model bundles from strangers, beyond test_bundle.py (pickles, truncation, mismatch, newer version):
absurd network sizes are refused before anything is allocated, wrong JSON types and wrong tensors are
refused with a message, and no loader ever unpickles."""

import json
import pickle
import resource
import time

import pytest
import torch
from safetensors.torch import save as save_safetensors

from duiit.bundle import load_bundle, read_header
from duiit.errors import DuiitError
from robustness_tally import tally  # noqa: F401  (a fixture)
from test_bundle import rewrite_header


@pytest.fixture
def no_unpickling(monkeypatch):
    """Any use of pickle or torch.load while loading a bundle fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a bundle loader unpickled something")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)


def counted(tally):
    tally.add("bundle faults")
    tally.report("bundles", f"refused {tally.counts['bundle faults']} hostile model bundles (absurd network sizes, "
                            "wrong JSON types, wrong tensors): none unpickled, none slow, none allocated 256 MB")


def peak_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def assert_refused_quickly(path, words):
    started, peak = time.monotonic(), peak_bytes()
    with pytest.raises(DuiitError, match=words) as error:
        load_bundle(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    assert time.monotonic() - started < 5, "refusing took too long (something was built)"
    assert peak_bytes() - peak < 256 * 2 ** 20, "refusing allocated memory"


ABSURD_NETWORKS = {
    "generator 1e6 wide": {"generator_width": 10 ** 6},
    "1e7 residual blocks": {"generator_blocks": 10 ** 7},
    "1e6 px slices": {"image_size": 10 ** 6},
    "1000 predictor stages": {"predictor_depth": 1000},
    "100000^3-voxel-sized predictor": {"predictor_width": 100000},
    "negative width": {"generator_width": -8},
    "zero predictor depth": {"predictor_depth": 0},
    "predictor pooling 2 (0: mean, 1: maximum)": {"predictor_max_pool": 2},
    "image size not divisible by the downsamplings": {"image_size": 30},
}


@pytest.mark.parametrize("case", sorted(ABSURD_NETWORKS))
def test_absurd_network_sizes_are_refused_before_allocation(trained_bundle, tmp_path, no_unpickling, tally, case):
    path = tmp_path / "absurd.duiit"
    rewrite_header(trained_bundle, path, lambda h: h["network"].update(ABSURD_NETWORKS[case]))
    assert_refused_quickly(path, "network")
    with pytest.raises(DuiitError):
        read_header(path)  # the header alone is refused too (the Slicer panel shows headers)
    counted(tally)


WRONG_TYPES = {
    "width as a string": lambda h: h["network"].update(generator_width="8"),
    "width as a float": lambda h: h["network"].update(generator_width=8.0),
    "width as true": lambda h: h["network"].update(generator_blocks=True),
    "width as null": lambda h: h["network"].update(predictor_width=None),
    "width as a list": lambda h: h["network"].update(predictor_depth=[3]),
    "network as a list": lambda h: h.update(network=[32, 8]),
    "network as a string": lambda h: h.update(network="small"),
    "label names as a string": lambda h: h.update(label_names="ab"),
    "label names as numbers": lambda h: h.update(label_names=[0, 1]),
    "duplicate label names": lambda h: h.update(label_names=["a", "a"]),
    "regression scale with text": lambda h: h.update(regression_scale=["a", 1]),
    "regression scale NaN": lambda h: h.update(regression_scale=[float("nan"), 1.0]),
    "source modality CT": lambda h: h.update(source_modality="CT"),
    "source modality as a list": lambda h: h.update(source_modality=["MR"]),
    "target modality MR": lambda h: h.update(target_modality="MR"),
    "task as a number": lambda h: h.update(task=1),
    "metrics as a list": lambda h: h.update(metrics=[1, 2]),
    "normalisation as null": lambda h: h.update(normalisation=None),
    "no CT mapping": lambda h: h["normalisation"].pop("target"),
    "CT mapping unknown": lambda h: h["normalisation"].update(target={"method": "percentile"}),
    "CT knots falling": lambda h: h["normalisation"]["target"].update(knots_hu=[0.0, -150.0, 150.0, 3071.0]),
    "CT knots NaN": lambda h: h["normalisation"]["target"].update(knots_unit=[-1.0, float("nan"), 0.3, 1.0]),
    "CT knots unpaired": lambda h: h["normalisation"]["target"].update(knots_unit=[-1.0, 1.0]),
    "CT knots as text": lambda h: h["normalisation"]["target"].update(knots_hu="-1024,3071"),
    "MR standard falling": lambda h: h["normalisation"]["source"]["standard"]["unit"].reverse(),
    "MR standard NaN": lambda h: h["normalisation"]["source"]["standard"]["unit"].__setitem__(3, float("nan")),
    "MR standard short": lambda h: h["normalisation"]["source"]["standard"]["unit"].pop(),
    "MR standard at other percentiles": lambda h: h["normalisation"]["source"]["standard"].update(
        percentiles=[5, 50, 95]),
    "MR standard as text": lambda h: h["normalisation"]["source"].update(standard="-0.7,0,0.9"),
}


@pytest.mark.parametrize("case", sorted(WRONG_TYPES))
def test_header_with_wrong_json_types_is_refused(trained_bundle, tmp_path, no_unpickling, tally, case):
    path = tmp_path / "types.duiit"
    rewrite_header(trained_bundle, path, WRONG_TYPES[case])
    assert_refused_quickly(path, "bundle")
    counted(tally)


def rewrite_tensors(source, target, change):
    bundle = load_bundle(source)
    tensors = dict(bundle.tensors)
    change(tensors)
    target.write_bytes(save_safetensors(tensors, metadata={"duiit": json.dumps(bundle.header)}))


CONV = "translator.to_target.model.1.weight"
WRONG_TENSORS = {
    "conv weight as int32": (lambda t: t.update({CONV: t[CONV].to(torch.int32)}), "int32"),
    "conv weight as bool": (lambda t: t.update({CONV: t[CONV] > 0}), "bool"),
    "conv weight as uint8": (lambda t: t.update({CONV: t[CONV].to(torch.uint8)}), "uint8"),
    "batch counter as float": (lambda t: t.update({k: v.float() for k, v in t.items() if "num_batches" in k}),
                               "float32"),
    "conv weight transposed": (lambda t: t.update({CONV: t[CONV].transpose(0, 1).contiguous()}), "shape"),
    "conv weight flattened": (lambda t: t.update({CONV: t[CONV].flatten()}), "shape"),
    "a NaN weight": (lambda t: t[CONV].view(-1).__setitem__(0, float("nan")), "NaN"),
    "an infinite weight": (lambda t: t[CONV].view(-1).__setitem__(0, float("inf")), "NaN or infinite"),
    "a missing tensor": (lambda t: t.pop(CONV), "no tensor"),
    "an extra tensor": (lambda t: t.update({"payload.code": torch.zeros(4, dtype=torch.uint8)}), "unexpected"),
}


@pytest.mark.parametrize("case", sorted(WRONG_TENSORS))
def test_tensors_with_wrong_dtypes_shapes_or_values_are_refused(trained_bundle, tmp_path, no_unpickling, tally,
                                                                 case):
    change, words = WRONG_TENSORS[case]
    path = tmp_path / "tensors.duiit"
    rewrite_tensors(trained_bundle, path, change)
    assert_refused_quickly(path, words)
    counted(tally)


def test_float64_weights_still_load(trained_bundle, tmp_path, no_unpickling):
    """Another floating type is a precision choice, not damage: it loads (converted to the network's)."""
    path = tmp_path / "double.duiit"
    rewrite_tensors(trained_bundle, path, lambda t: t.update({k: v.double() for k, v in t.items()
                                                              if v.is_floating_point()}))
    bundle = load_bundle(path)
    assert next(bundle.translator().parameters()).dtype == torch.float32
