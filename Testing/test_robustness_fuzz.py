"""Fuzzing the readers with hypothesis: manifest CSVs (read and built into a cohort), DICOM series folders,
NIfTI / NRRD / MetaImage files and model bundles, each mutated from a valid file.

The property: every input either loads or fails with DuiitError (one line, naming the file or case);
any other exception, a hang or a crash (which takes pytest down) fails. The examples are derandomized
(the same inputs on every run, so CI is repeatable) and bounded: the whole file takes well under a minute.
"""

import contextlib
import csv
import gzip
import io
import json
import resource
import shutil
import struct

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicom_factory import write_series
from duiit import volume_io
from duiit.bundle import load_bundle, read_header
from duiit.cohort import build_cohort
from duiit.dicom_series import find_series
from duiit.errors import DuiitError
from duiit.manifest import read_manifest
from duiit.phantom import head_phantom
from robustness_tally import tally, watchdog  # noqa: F401  (tally is a fixture)

SECONDS_PER_INPUT = 10  # a watchdog per input: far above the milliseconds one takes
MEMORY_PER_INPUT = 512 * 1024 * 1024  # no input may raise the process's peak memory by more than this


def fuzz(examples):
    return settings(max_examples=examples, derandomize=True, database=None, deadline=None, print_blob=True,
                    suppress_health_check=list(HealthCheck))


class Outcomes:
    """Runs one input through a reader and counts how it ended."""

    def __init__(self, tally, name):
        self.tally, self.name = tally, name
        self.loaded = self.refused = 0

    def check(self, read, *names):
        """`read()` loads, or raises a one-line DuiitError that names one of `names`."""
        self.tally.add("fuzzed")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        outcome = "loaded"
        with watchdog(SECONDS_PER_INPUT):
            try:
                read()
            except DuiitError as exc:
                message = str(exc)
                assert message and "\n" not in message, repr(message)
                assert not names or any(str(n) in message for n in names), (message, names)
                outcome = "refused"
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - peak
        assert grown < MEMORY_PER_INPUT, f"one small input raised peak memory by {grown / 2 ** 20:.0f} MB"
        self.loaded += outcome == "loaded"
        self.refused += outcome == "refused"
        return outcome

    def report(self):
        total = self.loaded + self.refused
        self.tally.add(f"fuzzed:{self.name}", total)
        self.tally.report(f"fuzz:{self.name}", f"fuzzed {total} {self.name} inputs: {self.loaded} loaded, "
                          f"{self.refused} refused with a DuiitError, 0 other exceptions, hangs or crashes")


@pytest.fixture(scope="module", autouse=True)
def small_voxel_limit():
    """Mutated headers often declare a few billion voxels: with the limit at 4 M, the fuzzing tests
    refusal instead of spending seconds on multi-gigabyte allocations (tested on their own elsewhere)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(volume_io, "MAX_VOXELS", 4 * 1024 * 1024)
        yield


# -- manifest CSV + cohort --------------------------------------------------------------------------------

COLUMNS = ["path", "modality", "label", "patient_id", "study_uid", "series_uid", "split", "mask"]


@pytest.fixture(scope="module")
def manifest_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz_manifest")
    for n in range(3):
        for modality in ("CT", "MR"):
            image, mask = head_phantom((4, 16, 16), modality, lesion=n % 2 == 1, seed=n)
            sitk.WriteImage(image, str(folder / f"{modality.lower()}{n}.nii.gz"))
    sitk.WriteImage(mask, str(folder / "mask.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 8, 8), np.float32)), str(folder / "small_mask.nii.gz"))
    (folder / "text.nii.gz").write_text("not an image")
    (folder / "empty_folder").mkdir()
    write_series(folder / "ct_series", np.zeros((3, 16, 16)), "CT")
    return folder


PATHS = ["ct0.nii.gz", "ct1.nii.gz", "ct2.nii.gz", "mr0.nii.gz", "mr1.nii.gz", "mr2.nii.gz", "mask.nii.gz",
         "small_mask.nii.gz", "text.nii.gz", "empty_folder", "ct_series", "missing.nii.gz", "", ".", "..",
         "/", "ct0.nii.gz/x", "~/nothing.nii.gz", "~no_such_user/x.nii.gz", "a\0b.nii.gz", "x" * 300 + ".nii.gz",
         "manifest.csv"]
CELLS = st.one_of(
    st.sampled_from(PATHS),
    st.sampled_from(["CT", "MR", "PT", "ct", " mr ", "XX", "", "train", "val", "test", "TRAIN", "other",
                     "lesion", "none", "a", "b", "45Y", "006M", "12", "-3.5", "nan", "inf", "1e309", "5YY", "Y",
                     "P1", "P2", "C0", "1.2.3", "\ufeff", "\"", "'", ",", "\n", "\r", "\0"]),
    st.text(max_size=12))


VALID_ROWS = [("ct0.nii.gz", "CT"), ("ct1.nii.gz", "CT"), ("ct2.nii.gz", "CT"), ("mr0.nii.gz", "MR"),
              ("mr1.nii.gz", "MR"), ("mr2.nii.gz", "MR"), ("ct_series", "CT")]


@st.composite
def manifest_bytes(draw):
    """Mostly sound manifests with a few cells, bytes or the layout damaged; now and then random bytes."""
    task = draw(st.sampled_from(["classification", "regression"]))
    columns = draw(st.sampled_from(["required", "required", "all", "all", "shuffled", "random"]).flatmap(lambda kind: {
        "required": st.just(COLUMNS[:4]), "all": st.just(COLUMNS), "shuffled": st.permutations(COLUMNS),
        "random": st.lists(st.sampled_from(COLUMNS + ["", "extra", "PATH", " path "]), max_size=10)}[kind]))
    labels = ["lesion", "none"] if task == "classification" else ["40", "52.5", "045Y", "006M"]
    rows = []
    chosen = VALID_ROWS[:2] + VALID_ROWS[3:4] + draw(st.lists(st.sampled_from(VALID_ROWS), max_size=4))
    for number, (path, modality) in enumerate(chosen):
        values = {"path": path, "modality": modality, "label": labels[number % 2],
                  "patient_id": f"P{number}", "split": draw(st.sampled_from(["", "", "train", "val", "test"])),
                  "mask": draw(st.sampled_from(["", "", "", "mask.nii.gz", "small_mask.nii.gz"]))}
        rows.append([values.get(column, "") for column in columns])
    for row_index, column_index, cell in draw(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9), CELLS),
                                                        max_size=2)):
        if rows and columns:
            rows[row_index % len(rows)][column_index % len(columns)] = cell
    if rows:
        index = draw(st.integers(0, len(rows) - 1))
        ragged = draw(st.sampled_from(["", "", "", "", "longer", "shorter", "trailing comma"]))
        rows[index] = {"longer": rows[index] + [draw(CELLS)], "shorter": rows[index][:-1],
                       "trailing comma": rows[index] + [""]}.get(ragged, rows[index])
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows(rows)
    data = buffer.getvalue().encode("utf-8", "surrogatepass")
    mutation = draw(st.sampled_from(["none", "none", "none", "bytes", "truncate", "bom", "random"]))
    if mutation == "bytes":
        data = bytearray(data)
        for position, value in draw(st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 255)), max_size=4)):
            if data:
                data[position % len(data)] = value
        data = bytes(data)
    elif mutation == "truncate":
        data = data[:draw(st.integers(0, len(data)))]
    elif mutation == "bom":
        data = b"\xef\xbb\xbf" + data
    elif mutation == "random":
        data = draw(st.binary(max_size=200))
    return data, task


def test_fuzz_manifest_and_cohort(manifest_folder, tally):
    outcomes = Outcomes(tally, "manifest CSV")
    path = manifest_folder / "manifest.csv"

    @fuzz(120)
    @given(manifest_bytes())
    def run(example):
        data, task = example
        path.write_bytes(data)

        def read():
            cases = read_manifest(path)
            build_cohort(cases, "MR", "CT", task, 16, seed=0)

        outcomes.check(read)

    run()
    outcomes.report()


# -- DICOM series folders -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dicom_base(tmp_path_factory):
    folder = write_series(tmp_path_factory.mktemp("fuzz_dicom") / "base",
                          np.random.default_rng(0).normal(0, 100, (4, 16, 16)), "MR")
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# Tags that size, type or scale the pixel data are drawn three times as often as the others.
DICOM_FIELDS = ["Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel",
                "PhotometricInterpretation", "NumberOfFrames", "RescaleSlope", "RescaleIntercept", "PixelData"] * 3 + \
               ["PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient", "SliceThickness",
                "SeriesInstanceUID", "StudyInstanceUID", "Modality", "PlanarConfiguration", "PatientWeight", "Units",
                "SeriesTime", "PatientAge", "PatientID", "InstanceNumber", "SOPClassUID"]
DICOM_VALUES = st.one_of(
    st.none(),  # delete the element
    st.sampled_from([0, 1, 2, 3, 4, 7, 8, 12, 15, 16, 17, 32, 64, 255, 65535, -1, 2 ** 31]),
    st.integers(-2 ** 40, 2 ** 40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "MONOCHROME1", "RGB", "PALETTE COLOR", "YBR_FULL", "CT", "PT", "nan", "inf", "1\\2",
                     "0\\0", "-1\\1", "abc", "045Y", "1.2.3"]),
    st.text(max_size=20),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=7),
    st.binary(max_size=600))


@st.composite
def dicom_mutation(draw):
    kind = draw(st.sampled_from(["field", "field", "field", "bytes", "truncate", "insert", "extra_file", "remove"]))
    return kind, draw(st.integers(0, 3)), draw(st.sampled_from(["one", "all"])), draw(st.sampled_from(DICOM_FIELDS)), \
        draw(DICOM_VALUES), draw(st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 255)), min_size=1,
                                          max_size=6)), draw(st.binary(min_size=1, max_size=64))


def with_field(raw: bytes, name: str, value) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(raw))
    if value is None:
        if name in ds:
            delattr(ds, name)
    else:
        setattr(ds, name, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=False)
    return out.getvalue()


def test_fuzz_dicom_series(dicom_base, tmp_path_factory, tally):
    outcomes = Outcomes(tally, "DICOM series")
    folder = tmp_path_factory.mktemp("fuzz_dicom_case") / "series"
    names = sorted(dicom_base)

    @fuzz(220)
    @given(dicom_mutation())
    def run(mutation):
        kind, index, which, field, value, flips, junk = mutation
        files = dict(dicom_base)
        target = names[index]
        try:
            if kind == "field":
                for name in (names if which == "all" else [target]):
                    files[name] = with_field(files[name], field, value)
            elif kind == "bytes":
                data = bytearray(files[target])
                for position, byte in flips:
                    data[position % len(data)] = byte
                files[target] = bytes(data)
            elif kind == "truncate":
                files[target] = files[target][:flips[0][0] % len(files[target])]
            elif kind == "insert":
                position = flips[0][0] % len(files[target])
                files[target] = files[target][:position] + junk + files[target][position:]
            elif kind == "extra_file":
                files["zz_extra.dcm"] = files[target][:flips[0][0] % len(files[target])] + junk
            elif kind == "remove":
                del files[target]
        except Exception:  # pydicom refused to write this value: not an input
            return
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for name, data in files.items():
            (folder / name).write_bytes(data)
        outcomes.check(lambda: (volume_io.read_volume(folder), find_series(folder).tags), folder.name)

    run()
    outcomes.report()


# -- NIfTI / NRRD / MetaImage -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def volume_bases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz_volume_base")
    image, _ = head_phantom((4, 16, 16), "MR", seed=1)
    bases = {}
    for ext, pixel in ((".nii", sitk.sitkFloat32), (".nrrd", sitk.sitkInt16), (".mha", sitk.sitkFloat32)):
        sitk.WriteImage(sitk.Cast(image, pixel), str(folder / f"base{ext}"), useCompression=ext != ".nii")
        bases[ext] = (folder / f"base{ext}").read_bytes()
    return bases


# (offset, struct format) of the NIfTI-1 header fields ITK reads
NIFTI_FIELDS = [(0, "i"), (40, "h"), (42, "h"), (44, "h"), (46, "h"), (48, "h"), (50, "h"), (56, "h"), (68, "h"),
                (70, "h"), (72, "h"), (76, "f"), (80, "f"), (84, "f"), (88, "f"), (108, "f"), (112, "f"), (116, "f"),
                (122, "b"), (123, "b"), (252, "h"), (254, "h"), (256, "f"), (260, "f"), (264, "f"), (268, "f"),
                (280, "f"), (284, "f"), (300, "f"), (320, "f"), (324, "f"), (344, "i"), (348, "i")]
NUMBERS = st.one_of(st.sampled_from([0, -1, 1, 2, 3, 4, 5, 7, 8, 16, 64, 128, 256, 512, 1024, 2048, 2304, 32767,
                                     -32768, 2 ** 31 - 1, -2 ** 31]),
                    st.integers(-2 ** 31, 2 ** 31 - 1),
                    st.floats(allow_nan=True, allow_infinity=True, width=32))
HEADER_TOKENS = st.one_of(
    st.sampled_from(["0", "-1", "1", "2", "3", "4", "5", "10", "65", "100000", "4294967296", "1e308", "nan", "inf",
                     "", "abc", "16 16", "16 16 4", "16 16 4 1", "0 0 0", "-1 -1 -1", "1 1 1 1 1 1 1 1 1 1",
                     "(1,0,0) (0,1,0) (0,0,2)", "(nan,0,0) (0,1,0) (0,0,1)", "(0,0,0) (0,0,0) (0,0,0)", "none",
                     "raw", "ascii", "hex", "gzip", "bzip2", "big", "little", "double", "uchar", "block", "LOCAL",
                     "LIST", "missing.raw", "%d.raw 1 3 0", "MET_UCHAR", "MET_DOUBLE_ARRAY", "MET_OTHER", "True",
                     "False"]),
    st.integers(-2 ** 40, 2 ** 40).map(str),
    st.text(alphabet=st.characters(blacklist_characters="\n\r"), max_size=12))


# Header keys of the text formats, the ones that size or locate the data repeated to be drawn more often.
TEXT_KEYS = {
    ".mha": ["NDims"] * 4 + ["DimSize"] * 3 + ["ElementDataFile"] * 3 + ["ElementType", "ElementNumberOfChannels",
             "CompressedDataSize", "HeaderSize"] * 2 + ["ObjectType", "BinaryData", "BinaryDataByteOrderMSB",
             "CompressedData", "TransformMatrix", "Offset", "CenterOfRotation", "AnatomicalOrientation",
             "ElementSpacing", "ElementSize"],
    ".nrrd": ["sizes", "dimension"] * 3 + ["type", "encoding", "data file", "byte skip", "line skip"] * 2 +
             ["space", "space directions", "kinds", "endian", "space origin", "spacings", "space dimension",
              "measurement frame"],
}


@st.composite
def volume_mutation(draw, ext):
    kind = draw(st.sampled_from(["field", "field", "field", "field", "new_field", "bytes", "truncate", "insert",
                                 "delete_line"]))
    key = draw(st.sampled_from(TEXT_KEYS.get(ext, [""])))
    return (kind, key, draw(st.integers(0, 10 ** 6)), draw(NUMBERS), draw(HEADER_TOKENS),
            draw(st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=6)),
            draw(st.binary(min_size=1, max_size=32)), draw(st.booleans()))


def mutate_volume(base: bytes, ext: str, kind, key, number, value, token, flips, junk, big_endian) -> bytes:
    data = bytearray(base)
    nifti = ext.startswith(".nii")
    header_end = 352 if nifti else base.index(b"\n\n" if ext == ".nrrd" else b"LOCAL\n") + 6 - 4 * (ext == ".nrrd")
    if kind in ("field", "new_field") and nifti:
        offset, code = NIFTI_FIELDS[number % len(NIFTI_FIELDS)]
        try:
            struct.pack_into(("<" if not big_endian else ">") + code, data, offset,
                             int(value) if code in "hib" else float(value))
        except (struct.error, ValueError, OverflowError):
            pass
    elif kind in ("field", "new_field", "delete_line"):
        separator = ": " if ext == ".nrrd" else " = "
        lines = bytes(data[:header_end]).decode("latin-1").split("\n")
        keyed = [n for n, line in enumerate(lines) if line.split(separator)[0] == key]
        new_line = key + separator + token
        if kind == "delete_line":
            del lines[number % max(len(lines) - 1, 1)]
        elif kind == "field" and keyed:
            lines[keyed[0]] = new_line
        else:
            lines.insert(number % max(len(lines) - 2, 1) + (ext == ".nrrd"), new_line)
        data = bytearray("\n".join(lines).encode("latin-1", "replace")) + data[header_end:]
    elif kind == "bytes":
        for position, byte in flips:
            data[position % len(data)] = byte
    elif kind == "truncate":
        data = data[:number % len(data)]
    elif kind == "insert":
        position = number % len(data)
        data[position:position] = junk
    out = bytes(data)
    return gzip.compress(out, mtime=0) if ext == ".nii.gz" else out


@pytest.mark.parametrize("ext,examples", [(".nii", 220), (".nii.gz", 100), (".nrrd", 220), (".mha", 260)])
def test_fuzz_volume_headers(volume_bases, tmp_path_factory, tally, ext, examples):
    outcomes = Outcomes(tally, f"{ext} file")
    folder = tmp_path_factory.mktemp("fuzz_volume_case")
    path = folder / f"case{ext}"
    base = volume_bases[".nii" if ext == ".nii.gz" else ext]

    @fuzz(examples)
    @given(volume_mutation(ext))
    def run(mutation):
        for old in folder.iterdir():
            old.unlink()
        path.write_bytes(mutate_volume(base, ext, *mutation))
        outcomes.check(lambda: volume_io.read_volume(path), path.name)

    run()
    outcomes.report()


# -- model bundles --------------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2 ** 63, 2 ** 64), st.floats(allow_nan=False),
              st.sampled_from([0, -1, 1, 2, 10 ** 6, 10 ** 9, 10 ** 18, 1e308]), st.text(max_size=10)),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children,
                                                                               max_size=4)),
    max_leaves=8)
HEADER_KEYS = ["format", "format_version", "task", "source_modality", "target_modality", "label_names", "method",
               "normalisation", "network", "regression_scale", "data_summary", "metrics", "versions",
               "network.image_size", "network.generator_width", "network.generator_blocks",
               "network.generator_downsamplings", "network.predictor_width", "network.predictor_depth",
               "network.discriminator_width"]
DTYPES = ["F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2", "C64", "XX",
          ""]


@st.composite
def bundle_mutation(draw):
    kind = draw(st.sampled_from(["bytes", "bytes", "truncate", "extend", "length", "tensor_entry", "tensor_entry",
                                 "duiit_field", "duiit_field", "duiit_field", "drop_tensor"]))
    return (kind, draw(st.integers(0, 10 ** 9)), draw(st.sampled_from(["start", "header", "data"])),
            draw(st.lists(st.tuples(st.integers(0, 10 ** 9), st.integers(0, 255)), min_size=1, max_size=6)),
            draw(st.sampled_from(HEADER_KEYS)), draw(JSON_VALUES), draw(st.sampled_from(["dtype", "shape", "offsets"])),
            draw(st.sampled_from(DTYPES)), draw(st.lists(st.integers(-2, 2 ** 40), max_size=5)),
            draw(st.binary(max_size=64)))


def split_bundle(data: bytes):
    length = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + length]), data[8 + length:]


def join_bundle(table: dict, rest: bytes) -> bytes:
    raw = json.dumps(table).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    return struct.pack("<Q", len(raw)) + raw + rest


def mutate_bundle(data: bytes, kind, number, region, flips, key, value, entry_part, dtype, ints, junk) -> bytes:
    table, rest = split_bundle(data)
    header_length = len(data) - len(rest)
    if kind == "bytes":
        out = bytearray(data)
        low, high = {"start": (0, 16), "header": (8, header_length), "data": (header_length, len(data))}[region]
        for position, byte in flips:
            out[low + position % (high - low)] = byte
        return bytes(out)
    if kind == "truncate":
        return data[:number % len(data)]
    if kind == "extend":
        return data + junk
    if kind == "length":
        return struct.pack("<Q", number) + data[8:]
    names = sorted(k for k in table if k != "__metadata__")
    if kind == "drop_tensor":
        del table[names[number % len(names)]]
        return join_bundle(table, rest)
    if kind == "tensor_entry":
        entry = table[names[number % len(names)]]
        if entry_part == "dtype":
            entry["dtype"] = dtype
        elif entry_part == "shape":
            entry["shape"] = ints
        else:
            entry["data_offsets"] = ints[:2] if len(ints) >= 2 else ints
        return join_bundle(table, rest)
    header = json.loads(table["__metadata__"]["duiit"])
    if "." in key:
        outer, inner = key.split(".")
        if isinstance(header.get(outer), dict):
            header[outer][inner] = value
    else:
        header[key] = value
    table["__metadata__"]["duiit"] = json.dumps(header)
    return join_bundle(table, rest)


def test_fuzz_model_bundles(trained_bundle, tmp_path_factory, tally):
    outcomes = Outcomes(tally, "model bundle")
    base = trained_bundle.read_bytes()
    path = tmp_path_factory.mktemp("fuzz_bundle") / "case.duiit"

    @fuzz(260)
    @given(bundle_mutation())
    def run(mutation):
        path.write_bytes(mutate_bundle(base, *mutation))
        outcomes.check(lambda: (read_header(path), load_bundle(path)), path.name)

    run()
    outcomes.report()


# -- the inputs the fuzzing found, kept as fixed regression cases ------------------------------------------------

def metaimage(base: bytes, key: str, value: str) -> bytes:
    return mutate_volume(base, ".mha", "field", key, 0, 0, value, [(0, 0)], b"", False)


def nifti_field(base: bytes, offset: int, code: str, value) -> bytes:
    data = bytearray(base)
    struct.pack_into("<" + code, data, offset, value)
    return bytes(data)


KNOWN = {
    # ITK's MetaIO parser crashes (SIGSEGV / SIGABRT / SIGFPE) on these instead of raising
    "mha NDims -1": (".mha", lambda b: metaimage(b, "NDims", "-1"), "NDims"),
    "mha NDims 65": (".mha", lambda b: metaimage(b, "NDims", "65"), "NDims"),
    "mha NDims 100000": (".mha", lambda b: metaimage(b, "NDims", "100000"), "NDims"),
    "mha NDims 1e308": (".mha", lambda b: metaimage(b, "NDims", "1e308"), "NDims"),
    "mha data file pattern with step 0": (".mha", lambda b: metaimage(b, "ElementDataFile", "%d.raw 1 3 0"),
                                          "several files"),
    "mha data file list": (".mha", lambda b: metaimage(b, "ElementDataFile", "LIST"), "several files"),
    # a one-component vector pixel type: SimpleITK's Cast raised RuntimeError
    "mha MET_DOUBLE_ARRAY": (".mha", lambda b: metaimage(b, "ElementType", "MET_DOUBLE_ARRAY"), "pixel type"),
    # ITK's NIfTI reader filled the missing voxels with zeros and reported success
    "nii cut in the data": (".nii", lambda b: b[:len(b) - 100], "truncated"),
    "nii cut after the header": (".nii", lambda b: b[:360], "truncated"),
    "nii vox_offset past the end": (".nii", lambda b: nifti_field(b, 108, "f", 1e9), "truncated"),
    "nii.gz cut in the data": (".nii.gz", lambda b: gzip.compress(b, mtime=0)[:-200], "truncated"),
}


@pytest.mark.parametrize("case", sorted(KNOWN))
def test_volume_inputs_the_fuzzing_found(volume_bases, tmp_path, tally, case):
    ext, make, words = KNOWN[case]
    path = tmp_path / f"case{ext}"
    path.write_bytes(make(volume_bases[".nii" if ext == ".nii.gz" else ext]))
    with pytest.raises(DuiitError, match=words) as error:
        volume_io.read_volume(path)
    assert path.name in str(error.value)
    tally.add("regression cases")


@pytest.mark.parametrize("case", ["lying element length", "SamplesPerPixel 0", "PALETTE COLOR", "no RescaleSlope"])
def test_dicom_inputs_the_fuzzing_found(dicom_base, tmp_path, tally, case):
    """GDCM allocated 4 GB and took seconds for a 7-byte insertion (an element length read from a damaged VR);
    it raised RuntimeError from the folder scan for the three header values (or not: that depends on GDCM's
    global state, which earlier reads change, so for those the test asks only for load-or-DuiitError)."""
    files = dict(dicom_base)
    first = sorted(files)[0]
    if case == "lying element length":
        data = files[first]
        files[first] = data[:457] + b"\x00i\x91\x9b\x9f\xbf\xf4" + data[457:]
        words = "damaged DICOM file"
    else:
        field, value = {"SamplesPerPixel 0": ("SamplesPerPixel", 0),
                        "PALETTE COLOR": ("PhotometricInterpretation", "PALETTE COLOR"),
                        "no RescaleSlope": ("RescaleSlope", None)}[case]
        files = {name: with_field(data, field, value) for name, data in files.items()}
        words = None
    folder = tmp_path / "series"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if words:
        with pytest.raises(DuiitError, match=words):
            volume_io.read_volume(folder)
    else:
        with contextlib.suppress(DuiitError):
            volume_io.read_volume(folder)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - peak < MEMORY_PER_INPUT
    tally.add("regression cases")


def test_manifest_inputs_the_fuzzing_found(manifest_folder, tmp_path, tally):
    """A row longer than the header raised AttributeError; unusable paths raised OSError/RuntimeError later."""
    good = "path,modality,label,patient_id\n" + "".join(f"{manifest_folder / name},{modality},{'ab'[n % 2]},P{n}\n"
                                                         for n, (name, modality) in enumerate(VALID_ROWS[:4]))
    cases = {"a row longer than the header": (good + "x.nii.gz,CT,a,P9,surplus\n", "more fields"),
             "a path too long for the system": (good + "x" * 300 + ".nii.gz,CT,a,P9\n", "unusable path"),
             "an unknown ~user": (good + "~no_such_user/x.nii.gz,CT,a,P9\n", "unusable path"),
             "a NUL in a path": (good + "a\0b.nii.gz,CT,a,P9\n", "unusable path")}
    path = tmp_path / "manifest.csv"
    for name, (text, words) in cases.items():
        path.write_text(text)
        with pytest.raises(DuiitError, match=words):
            read_manifest(path)
        tally.add("regression cases")
    path.write_text(good.replace("\n", ",\n"))  # a trailing comma on every line is tolerated
    assert len(read_manifest(path)) == 4


def test_bundle_headers_the_fuzzing_found(trained_bundle, tmp_path, tally):
    """JSON that Python refuses with ValueError (a 5000-digit number) or RecursionError (deep nesting)."""
    table, rest = split_bundle(trained_bundle.read_bytes())
    for name, raw in (("huge number", '{"format": ' + "9" * 5000 + "}"), ("deep nesting", "[" * 100000 + "]" * 100000)):
        table["__metadata__"]["duiit"] = raw
        path = tmp_path / f"{name.replace(' ', '_')}.duiit"
        path.write_bytes(join_bundle(table, rest))
        with pytest.raises(DuiitError, match="not a DUIIT model bundle"):
            load_bundle(path)
        tally.add("regression cases")


def test_bundle_whose_header_length_starts_like_a_pickle_loads(trained_bundle, tmp_path, tally):
    """Found by the fuzzing: a header length with low byte 0x80 (every 32nd padded length) was taken for
    pickle protocol 2+ and the bundle refused as "contains a pickled object"."""
    table, rest = split_bundle(trained_bundle.read_bytes())
    raw = json.dumps(table).encode()
    raw += b" " * ((0x80 - len(raw)) % 256)
    path = tmp_path / "model.duiit"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + rest)
    assert path.read_bytes()[0] == 0x80
    assert load_bundle(path).has_translator
    tally.add("regression cases")
