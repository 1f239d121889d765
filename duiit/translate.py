"""Translating a whole source volume (MR/PT) to a CT-like volume in HU on the input's exact grid.

The fast path, and why it is bounded in memory:
- The input is read in place: its axial (LPS) order is a numpy *view* of its own array
  (`slices.AxialLayout`), never a reoriented copy, and the normalisation is fitted on a subsample.
- Slices go through the network in batches; each batch is copied into one reused float32 buffer,
  normalised there (in place), resized to the network size, translated, mapped to HU at the
  network size, resized back and written straight into one preallocated output image on the
  input's grid (through an axial view of its own buffer). Peak memory is the input + the
  output(s) + a batch (Testing/benchmarks/results/speed_cpu.md measures it).
- The predictor runs per batch on the informative slices (no stack of all translated slices on
  the CPU; on CUDA they stay on the device until one transfer at the end, so nothing syncs).
- Inference mode throughout; only G is built (F too with the error map), straight from the
  bundle's tensors, and kept on the bundle object for the next volume (cohort export).

CUDA (guarded: the CPU always computes plain fp32, NCHW): cudnn benchmark mode with fixed batch
shapes, strict fp32 by default (no TF32), or on request the network body under bf16/fp16 autocast with
the last convolution + tanh in fp32, optional channels_last and torch.compile, pinned double-buffered
host batches with uploads on a side stream and non-blocking downloads that overlap the next batch's
compute. `FastPath` holds these choices; its defaults come from DUIIT_TRANSLATE_* environment variables
(PRECISION=auto|fp32|bf16|fp16, TF32, CHANNELS_LAST, COMPILE, CUDNN_BENCHMARK, PINNED = 0|1), so a
benchmark or a user can switch them. Testing/benchmarks/gpu_check.sh checks them on a GPU.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from dataclasses import dataclass, replace

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from torch import nn

from .bundle import Bundle
from .device import cuda_fp32_math, resolve_device
from .errors import DuiitError
from .networks import ResnetGenerator
from .normalisation import (CT_HIGH_HU, CT_LOW_HU, apply_standardisation, fit_source_normalisation,
                            hu_to_unit, unit_to_hu)
from .prediction import prediction_dict, run_predictor
from .slices import (MIN_FOREGROUND_FRACTION, AxialLayout, SquareFit, foreground_fraction, in_plane_spacing,
                     informative, to_axial, volume_to_slices)
from .view_averaging import ViewAveraging, check_view_count

# Default batch: about this many network pixels per batch (16 slices at 256 px), within [low, high].
BATCH_PIXELS = {"cpu": (2 ** 20, 4, 32), "cuda": (2 ** 21, 8, 64)}
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# What "auto" means on CUDA, from Testing/benchmarks/results/gpu_check.md (H200, reference generator): only
# strict fp32 keeps the 99.9th percentile |HU diff| in the head under 5 HU (0.04 HU); TF32 gave 18 HU, fp16
# 28 HU and bf16 218 HU (the CT map's air and bone segments are 2000-4000 HU per network unit), and strict
# fp32 still translates 512x512x300 in 1.3-1.5 s. channels_last is off: every InstanceNorm converts back to NCHW.
CUDA_AUTO_PRECISION = "fp32"
CUDA_CHANNELS_LAST = False


@dataclass(frozen=True)
class FastPath:
    """How translation runs on the device; the CPU always runs fp32 (exactly the reference's maths)."""
    precision: str = "auto"          # auto | fp32 | bf16 | fp16 (CUDA only; the CPU is always fp32)
    tf32: bool = False               # let fp32 convolutions round through TF32 (CUDA only; faster, less exact)
    channels_last: bool | None = None  # None: CUDA_CHANNELS_LAST (CUDA only)
    compile: bool = False            # torch.compile the generator body (CUDA only)
    cudnn_benchmark: bool = True     # CUDA only
    pinned: bool = True              # pinned buffers + side-stream copies (CUDA only)

    @classmethod
    def from_env(cls) -> "FastPath":
        def flag(name, default):
            value = os.environ.get(name, "").strip().lower()
            if value in ("", "auto"):
                return default
            return value in ("1", "true", "yes", "on")
        precision = os.environ.get("DUIIT_TRANSLATE_PRECISION", "auto").strip().lower() or "auto"
        if precision not in PRECISIONS:
            raise DuiitError(f"DUIIT_TRANSLATE_PRECISION={precision!r} is not one of {', '.join(PRECISIONS)}")
        return cls(precision=precision, tf32=flag("DUIIT_TRANSLATE_TF32", False),
                   channels_last=flag("DUIIT_TRANSLATE_CHANNELS_LAST", None),
                   compile=flag("DUIIT_TRANSLATE_COMPILE", False),
                   cudnn_benchmark=flag("DUIIT_TRANSLATE_CUDNN_BENCHMARK", True),
                   pinned=flag("DUIIT_TRANSLATE_PINNED", True))

    def resolve(self, device: torch.device) -> "FastPath":
        """Concrete choices for `device`."""
        if device.type != "cuda":
            return FastPath(precision="fp32", tf32=False, channels_last=False, compile=False, cudnn_benchmark=False,
                            pinned=False)
        precision = self.precision
        if precision == "auto":
            precision = CUDA_AUTO_PRECISION
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            precision = "fp16"
        channels_last = self.channels_last if self.channels_last is not None else CUDA_CHANNELS_LAST
        return replace(self, precision=precision, channels_last=channels_last)

    @property
    def autocast_dtype(self):
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)


@dataclass
class Translation:
    ct: sitk.Image                 # float32 HU, same size/spacing/origin/direction as the input
    error_map: sitk.Image | None   # |F(G(s)) - s| in normalised source units (0..2): where not to trust G
    prediction: dict
    device: str
    normalisation: dict


def slice_index_map(image: sitk.Image, depth: int):
    """Axial (LPS, inferior to superior) slice number -> the input's k index when its k axis is axial."""
    return AxialLayout.of(image).slice_index


# -- networks prepared for inference ------------------------------------------------------------------

class InferenceGenerator:
    """A ResnetGenerator for inference: body (optionally mixed precision, channels_last, compiled) and an
    fp32 head (last pad + conv + tanh), so the output's rounding stays far below one HU."""

    def __init__(self, generator: ResnetGenerator, device: torch.device, fast: FastPath, channel_pixels: int = 0):
        layers = list(generator.model)
        split = len(layers)
        if (len(layers) > 3 and isinstance(layers[-1], nn.Tanh) and isinstance(layers[-2], nn.Conv2d)
                and isinstance(layers[-3], nn.ReflectionPad2d)):
            split = len(layers) - 3
        head = layers[split:]
        if device.type == "cpu" and channel_pixels <= _OneOutputConv.MAX_CHANNEL_PIXELS:
            head = [_OneOutputConv(m) if _OneOutputConv.suits(m) else m for m in head]
        self.body = nn.Sequential(*layers[:split]).to(device).eval()
        self.head = nn.Sequential(*head).to(device).eval()
        self.device, self.fast = device, fast
        if fast.channels_last:
            self.body = self.body.to(memory_format=torch.channels_last)
        if fast.compile:
            self.body = torch.compile(self.body, dynamic=False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = self.fast.autocast_dtype
        if dtype is None:
            h = self.body(x)
        else:
            with torch.autocast(device_type=self.device.type, dtype=dtype):
                h = self.body(x)
            h = h.float()
        return self.head(h.contiguous())


class _OneOutputConv(nn.Module):
    """A Conv2d with one output channel as a depthwise convolution + a sum over channels: the same numbers
    (to float rounding), about 5x faster on the CPU, where oneDNN handles one output channel poorly (the
    generator's last 7x7 convolution was a fifth of its time at the small preset)."""

    # its intermediate is channels x rows x columns per slice: used only while that stays small (the small
    # preset: 16 x 64 x 64; the reference generator's 64 x 256 x 256 made it slower there, not faster)
    MAX_CHANNEL_PIXELS = 2 ** 20

    @staticmethod
    def suits(module) -> bool:
        return (isinstance(module, nn.Conv2d) and module.out_channels == 1 and module.groups == 1
                and module.padding_mode == "zeros")

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        channels = conv.in_channels
        self.register_buffer("weight", conv.weight.detach().reshape(channels, 1, *conv.kernel_size))
        self.register_buffer("bias", conv.bias.detach().reshape(1, 1, 1, 1) if conv.bias is not None else None)
        self.stride, self.padding, self.dilation, self.channels = conv.stride, conv.padding, conv.dilation, channels

    def forward(self, x):
        y = F.conv2d(x, self.weight, None, self.stride, self.padding, self.dilation, self.channels)
        y = y.sum(dim=1, keepdim=True)
        return y if self.bias is None else y + self.bias


def _state(bundle: Bundle, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in bundle.tensors.items() if k.startswith(prefix)}


def _generator(bundle: Bundle, which: str, device: torch.device, fast: FastPath) -> InferenceGenerator:
    """G ("to_target") or F ("to_source") alone, cached on the bundle per device and options."""
    cache = bundle.__dict__.setdefault("_inference_cache", {})
    key = (which, str(device), fast)
    if key not in cache:
        if not bundle.has_translator:
            bundle.translator()  # raises the one-line error naming the method
        with torch.device("meta"):
            generator = ResnetGenerator(bundle.network)
        try:
            generator.load_state_dict(_state(bundle, f"translator.{which}."), strict=True, assign=True)
        except RuntimeError as exc:
            raise DuiitError(f"{bundle.path}: the header does not match the weights "
                             f"({str(exc).splitlines()[0]})") from None
        network = bundle.network  # the last layer sees generator_width channels at image_size pixels
        cache[key] = InferenceGenerator(generator.float(), device, fast,
                                        channel_pixels=network.generator_width * network.image_size ** 2)
    return cache[key]


def _predictor(bundle: Bundle, device: torch.device):
    cache = bundle.__dict__.setdefault("_inference_cache", {})
    key = ("predictor", str(device))
    if key not in cache:
        cache[key] = bundle.predictor().to(device).eval()
    return cache[key]


# -- normalisation as one affine map + clip, applied in place to a float32 batch ---------------------------

def unit_affine(record: dict) -> tuple:
    """(scale, offset) with unit = clip(value * scale + offset, -1, 1) (the MR standard's map goes before the
    clip: _Job.normalise); the same map as normalisation.apply_normalisation(value, record)."""
    method = record["method"]
    if method == "ct_hu":
        low, high, factor = CT_LOW_HU, CT_HIGH_HU, 1.0
    else:
        low, high = float(record["low"]), float(record["high"])
        factor = float(record["factor"]) if method == "suv" else 1.0
        if high <= low:
            high = low + 1.0
    scale = 2.0 / (high - low)
    return factor * scale, -low * scale - 1.0


# -- prediction collected batch by batch -------------------------------------------------------------------

class _Predictions:
    """The predictor on the informative slices (slices.informative, applied batch by batch).

    CPU: runs per batch on the kept slices (no stack of translated slices). CUDA: keeps the translated
    slices and their foreground fractions on the device and decides at the end (no per-batch sync)."""

    def __init__(self, predictor, header, device: torch.device, deferred: bool):
        self.predictor, self.header, self.device = predictor, header, device
        self.task = header["task"]
        self.scale = header.get("regression_scale", [0.0, 1.0])
        self.deferred = deferred  # the CUDA pipeline
        self.outputs, self.indices, self.fakes = [], [], []
        self.best = (-1.0, None, 0)  # CPU: the most foreground slice so far, if none is kept

    def add(self, fake: torch.Tensor, start: int):
        if self.deferred:
            self.fakes.append(fake)
            return
        fractions = foreground_fraction(fake)
        keep = fractions >= MIN_FOREGROUND_FRACTION
        if keep.any():
            self.outputs.append(run_predictor(self.predictor, fake[keep], self.task, self.scale, self.device))
            self.indices += [start + int(n) for n in torch.nonzero(keep)[:, 0]]
        elif not self.outputs:
            best = int(fractions.argmax())
            if float(fractions[best]) > self.best[0]:
                self.best = (float(fractions[best]), fake[best:best + 1].clone(), start + best)

    def result(self, to_input) -> dict:
        if self.deferred:
            fakes = torch.cat(self.fakes)
            keep = informative(fakes).cpu()
            outputs = run_predictor(self.predictor, fakes[keep.to(fakes.device)], self.task, self.scale, self.device)
            indices = [int(n) for n in torch.nonzero(keep)[:, 0]]
        elif self.outputs:
            outputs, indices = np.concatenate(self.outputs), self.indices
        else:
            outputs = run_predictor(self.predictor, self.best[1], self.task, self.scale, self.device)
            indices = [self.best[2]]
        return prediction_dict(outputs, self.task, self.header.get("label_names") or [],
                               [to_input(n) for n in indices])


# -- the pipeline --------------------------------------------------------------------------------------

CHUNK_SLICES = 8  # CPU: slices normalised / resized back at a time, so full-resolution temporaries stay small


def _writable_array(image: sitk.Image) -> np.ndarray:
    """A writable numpy view of a SimpleITK image's own buffer (SimpleITK only offers a read-only one).
    Valid while `image` lives and is not shared (it is made here and only returned when filled)."""
    view = sitk.GetArrayViewFromImage(image)  # makes the buffer unique; read-only
    buffer = (ctypes.c_char * view.nbytes).from_address(view.__array_interface__["data"][0])
    return np.frombuffer(buffer, dtype=view.dtype).reshape(view.shape)


class _Output:
    """One float32 image on the input's grid, written batch by batch through an axial view of its buffer."""

    def __init__(self, image: sitk.Image, layout: AxialLayout):
        self.image = sitk.Image(image.GetSize(), sitk.sitkFloat32)
        self.axial = layout.view(_writable_array(self.image))

    def write(self, start: int, values: np.ndarray):
        """`values`: (n, rows, columns) float32, axial slices start .. start + n."""
        self.axial[start:start + values.shape[0]] = values

    def finish(self, original: sitk.Image) -> sitk.Image:
        self.axial = None
        self.image.CopyInformation(original)  # the input's geometry, verbatim
        return self.image


@contextlib.contextmanager
def _cudnn_benchmark(enabled: bool):
    if not enabled:
        yield
        return
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def default_batch_size(image_size: int, device: torch.device) -> int:
    pixels, low, high = BATCH_PIXELS["cuda" if device.type == "cuda" else "cpu"]
    return max(low, min(high, pixels // (image_size * image_size)))


def translate_volume(bundle: Bundle, image: sitk.Image, device="auto", series_tags=None,
                     with_error_map: bool = False, batch_size: int | None = None, progress=None,
                     fast: FastPath | None = None, views: int = 1) -> Translation:
    """`image` (MR/PT, any orientation) -> Translation (CT in HU on exactly the input's grid, prediction).

    `batch_size`: slices per network call (default: default_batch_size); `progress(done, total)` after each
    batch; `fast`: device options (default FastPath.from_env(); the CPU always computes in fp32); `views`:
    1, or average the generator over 2, 4 or 8 mirrored / shifted views (duiit/view_averaging.py), that
    many times the generator's work; the error map and the predictor see the averaged translation."""
    device, _ = resolve_device(device) if isinstance(device, str) else (torch.device(device), "")
    fast = (fast or FastPath.from_env()).resolve(device)
    header = bundle.header
    size = bundle.network.image_size
    batch_size = int(batch_size or default_batch_size(size, device))
    to_ct = _generator(bundle, "to_target", device, fast)
    if check_view_count(views) > 1:
        to_ct = ViewAveraging(to_ct, views, bundle.network.generator_downsamplings)
    job = _Job(
        to_ct=to_ct,
        to_source=_generator(bundle, "to_source", device, fast) if with_error_map else None,
        predictions=_Predictions(_predictor(bundle, device), header, device, deferred=_cuda_pipeline(device)),
        layout=AxialLayout.of(image), size=size, batch_size=batch_size, device=device, fast=fast,
        progress=progress)
    array = sitk.GetArrayViewFromImage(image)
    job.source = job.layout.view(array)             # (slices, rows, columns): a view, no copy
    job.fit = SquareFit.of(job.source.shape[1:], job.layout.in_plane_spacing, size)
    job.record = fit_source_normalisation(job.layout.subsample(array), header, series_tags)
    job.scale, job.offset = unit_affine(job.record)
    job.ct_record = header["normalisation"]["target"]
    job.ct = _Output(image, job.layout)
    job.error = _Output(image, job.layout) if with_error_map else None
    with torch.inference_mode():
        if job.predictions.deferred:
            with _cudnn_benchmark(fast.cudnn_benchmark), cuda_fp32_math(fast.tf32):
                _run_cuda(job)
        else:
            _run_cpu(job)
        prediction = job.predictions.result(job.layout.slice_index)
    return Translation(ct=job.ct.finish(image), error_map=job.error.finish(image) if with_error_map else None,
                       prediction=prediction, device=str(device), normalisation=job.record)


@dataclass
class _Job:
    to_ct: InferenceGenerator | ViewAveraging
    to_source: InferenceGenerator | None
    predictions: _Predictions
    layout: AxialLayout
    size: int
    batch_size: int
    device: torch.device
    fast: FastPath
    progress: object = None
    source: np.ndarray = None
    record: dict = None         # the source normalisation: scale, offset, then the MR standard's map if any
    scale: float = 1.0
    offset: float = 0.0
    ct_record: dict = None      # the bundle's CT normalisation: network units -> HU
    fit: SquareFit = None       # the slices' place in the network's square
    ct: _Output = None
    error: _Output = None

    def normalise(self, batch: torch.Tensor) -> torch.Tensor:
        """Source values -> network units: the affine map in place, then the clip (the MR standard's map
        before it, if any); normalisation.apply_normalisation to float32 rounding."""
        batch = batch.mul_(self.scale).add_(self.offset)
        if "standardisation" in self.record:
            return apply_standardisation(batch, self.record)
        return batch.clamp_(-1.0, 1.0)


def _run_cpu(job: _Job) -> None:
    """Batch by batch; full-resolution work in chunks of CHUNK_SLICES (normalise in a reused buffer, resize
    down into the batch; resize back and write straight into the output's view)."""
    depth, height, width = job.source.shape
    size, chunk = job.size, CHUNK_SLICES
    buffer = torch.empty((min(chunk, depth), height, width), dtype=torch.float32)
    small = torch.empty((min(job.batch_size, depth), 1, size, size), dtype=torch.float32)
    for start in range(0, depth, job.batch_size):
        count = min(job.batch_size, depth - start)
        for i in range(0, count, chunk):
            j = min(i + chunk, count)
            part = buffer[:j - i]
            np.copyto(part.numpy(), job.source[start + i:start + j], casting="unsafe")  # any dtype -> float32
            small[i:j] = job.fit.to_network(job.normalise(part)[:, None])
        net_in = small[:count]
        fake = job.to_ct(net_in)
        job.predictions.add(fake, start)
        hu = unit_to_hu(fake, job.ct_record)  # at the network size, then resized in HU
        error = (job.to_source(fake) - net_in).abs_() if job.error is not None else None
        for i in range(0, count, chunk):
            j = min(i + chunk, count)
            job.ct.write(start + i, job.fit.from_network(hu[i:j])[:, 0].numpy())
            if error is not None:
                job.error.write(start + i, job.fit.from_network(error[i:j])[:, 0].numpy())
        if job.progress:
            job.progress(start + count, depth)


def _run_cuda(job: _Job) -> None:
    """The CUDA pipeline. Pinned (the default): double-buffered pinned host batches, uploads on a side stream,
    results copied back without blocking and written to the output while the next batch computes. Else plain
    synchronous copies. Fixed batch shapes (the last batch padded) under cudnn benchmark / torch.compile."""
    depth, height, width = job.source.shape
    device, fast, batch_size = job.device, job.fast, job.batch_size
    pinned = fast.pinned
    slots = 2 if pinned else 1
    outputs = [job.ct] + ([job.error] if job.error is not None else [])
    host_in = [_host_buffer((batch_size, height, width), pinned) for _ in range(slots)]
    host_out = [[_host_buffer((batch_size, height, width), True) for _ in outputs]
                for _ in range(slots if pinned else 0)]
    copy_stream = _new_stream(device) if pinned else None
    uploaded = [None] * slots  # events: the upload out of each host input buffer is done
    pending = None             # (slot, start, count, event): results on their way back
    pad = fast.compile or fast.cudnn_benchmark

    def finish(item):
        slot, start, count, done = item
        done.synchronize()
        for output, host in zip(outputs, host_out[slot]):
            output.write(start, host[:count].numpy())
        if job.progress:
            job.progress(start + count, depth)

    for n, start in enumerate(range(0, depth, batch_size)):
        count = min(batch_size, depth - start)
        slot = n % slots
        if uploaded[slot] is not None:
            uploaded[slot].synchronize()
        host = host_in[slot][:count]
        np.copyto(host.numpy(), job.source[start:start + count], casting="unsafe")
        batch = _upload(host, device, copy_stream, uploaded, slot)
        batch = job.normalise(batch)[:, None]
        net_in = job.fit.to_network(batch)
        if pad and count < batch_size:
            net_in = torch.cat([net_in, net_in[-1:].expand(batch_size - count, -1, -1, -1)])
        fake_all = job.to_ct(net_in)
        fake = fake_all[:count]
        job.predictions.add(fake, start)
        results = [job.fit.from_network(unit_to_hu(fake, job.ct_record))[:, 0]]
        if job.error is not None:
            error = (job.to_source(fake_all)[:count] - net_in[:count]).abs_()
            results.append(job.fit.from_network(error)[:, 0])
        if not pinned:
            for output, result in zip(outputs, results):
                output.write(start, result.cpu().numpy())
            if job.progress:
                job.progress(start + count, depth)
            continue
        for result, out in zip(results, host_out[slot]):
            out[:count].copy_(result, non_blocking=True)
        done = _new_event()
        done.record(_current_stream(device))
        if pending is not None:
            finish(pending)  # the previous batch's results, while this batch computes
        pending = (slot, start, count, done)
    if pending is not None:
        finish(pending)


def _upload(host: torch.Tensor, device: torch.device, copy_stream, uploaded: list, slot: int) -> torch.Tensor:
    """Host batch -> device: from pinned memory on a side stream (overlapping compute), else plainly."""
    if copy_stream is None:
        return host.to(device)
    compute = _current_stream(device)
    with torch.cuda.stream(copy_stream):
        batch = host.to(device, non_blocking=True)
        uploaded[slot] = _new_event()
        uploaded[slot].record(copy_stream)
    compute.wait_stream(copy_stream)
    _record_stream(batch, compute)
    return batch


# CUDA primitives, one place each (the tests replace them to run the CUDA pipeline's logic on the CPU)
def _cuda_pipeline(device: torch.device) -> bool:
    return device.type == "cuda"


def _host_buffer(shape, pinned: bool) -> torch.Tensor:
    return torch.empty(shape, dtype=torch.float32, pin_memory=pinned)


def _new_stream(device):
    return torch.cuda.Stream(device)


def _new_event():
    return torch.cuda.Event()


def _current_stream(device):
    return torch.cuda.current_stream(device)


def _record_stream(tensor: torch.Tensor, stream) -> None:
    tensor.record_stream(stream)


def predict_volume(bundle: Bundle, ct_image: sitk.Image, device="auto") -> dict:
    """The predictor's outputs for a CT (or CT-like) volume in HU."""
    device, _ = resolve_device(device) if isinstance(device, str) else (torch.device(device), "")
    if bundle.header.get("target_modality", "CT") != "CT":
        raise DuiitError(f"{bundle.path}: predicts {bundle.header['target_modality']}, not CT")
    predictor = _predictor(bundle, device)
    axial = to_axial(ct_image)
    slices = volume_to_slices(hu_to_unit(sitk.GetArrayViewFromImage(axial).astype(np.float32),
                                         bundle.header["normalisation"]["target"]),
                              bundle.network.image_size, in_plane_spacing(axial))
    header = bundle.header
    keep = informative(slices)
    with cuda_fp32_math(tf32=False):  # as translation's default: the same outputs as on the CPU
        outputs = run_predictor(predictor, slices[keep], header["task"], header.get("regression_scale", [0.0, 1.0]),
                                device)
    to_input = AxialLayout.of(ct_image).slice_index
    indices = [to_input(int(n)) for n in torch.nonzero(keep)[:, 0]]
    return prediction_dict(outputs, header["task"], header.get("label_names") or [], indices)
