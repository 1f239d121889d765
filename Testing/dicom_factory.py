"""Writes small but valid DICOM image series with pydicom, for tests (CT, MR, PET with SUV tags)."""

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SOP_CLASSES = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4",
               "PT": "1.2.840.10008.5.1.4.1.1.128"}


def write_series(folder, values: np.ndarray, modality="CT", spacing=(0.8, 0.8, 2.5), patient_id="P1",
                 study_uid=None, series_uid=None, description="", slopes=None, extra=None, age="045Y"):
    """`values` (z, y, x) are stored as int16 pixels * slope (per slice if `slopes` is given)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    for k, plane in enumerate(values):
        slope = float(slopes[k]) if slopes is not None else 1.0
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SOP_CLASSES[modality]
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"{k:03d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.PatientName, ds.PatientAge = modality, patient_id, f"Test^{patient_id}", age
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SeriesDescription, ds.StudyDescription = description or f"{modality} series", "Test study"
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.ImagePositionPatient = [0.0, 0.0, k * spacing[2]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [spacing[1], spacing[0]]
        ds.SliceThickness = spacing[2]
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = slope, 0
        ds.PixelData = np.rint(plane / slope).astype(np.int16).tobytes()
        for key, value in (extra or {}).items():
            setattr(ds, key, value)
        ds.save_as(ds.filename, enforce_file_format=True)
    return folder


def pet_tags(weight_kg=70.0, dose_bq=370e6, half_life_s=6586.2, injection="093000", series_time="103000",
             decay="START", units="BQML"):
    radio = Dataset()
    radio.RadionuclideTotalDose = dose_bq
    radio.RadionuclideHalfLife = half_life_s
    radio.RadiopharmaceuticalStartTime = injection
    return {"PatientWeight": weight_kg, "Units": units, "DecayCorrection": decay, "SeriesTime": series_time,
            "CorrectedImage": ["ATTN", "DECY"], "RadiopharmaceuticalInformationSequence": pydicom.Sequence([radio])}
