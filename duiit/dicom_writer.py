"""Writing a volume as a DICOM series (one file per axial slice) with the volume's exact geometry."""

import time
from pathlib import Path

import numpy as np
import pydicom.uid
import SimpleITK as sitk


def write_dicom_series(image: sitk.Image, folder, tags: dict) -> None:
    """Store `image` (CT in HU by default) as int16 slices with rescale slope 1, intercept 0.

    `tags` may set Modality, PatientID, PatientName, StudyInstanceUID, SeriesDescription.
    """
    folder = Path(folder)
    array = np.clip(np.rint(sitk.GetArrayViewFromImage(image)), -32768, 32767).astype(np.int16)
    volume = sitk.GetImageFromArray(array)
    volume.CopyInformation(image)
    direction = image.GetDirection()
    series_uid = pydicom.uid.generate_uid()
    study_uid = tags.get("StudyInstanceUID") or pydicom.uid.generate_uid()
    now_date, now_time = time.strftime("%Y%m%d"), time.strftime("%H%M%S")
    common = {
        "0008|0060": tags.get("Modality", "CT"),
        "0010|0020": tags.get("PatientID", "DUIIT"),
        "0010|0010": tags.get("PatientName", "DUIIT"),
        "0020|000d": study_uid,
        "0020|000e": series_uid,
        "0008|103e": tags.get("SeriesDescription", "DUIIT CT-like"),
        "0008|0021": now_date, "0008|0031": now_time,
        "0008|0008": "DERIVED\\SECONDARY",
        "0020|0037": "\\".join(f"{v:.10g}" for v in (*direction[0:7:3], *direction[1:8:3])),
        "0028|1052": "0", "0028|1053": "1", "0028|1054": "HU",
        "0020|0011": "900",
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(volume.GetDepth()):
        slice_image = volume[:, :, k]
        for key, value in common.items():
            slice_image.SetMetaData(key, value)
        position = volume.TransformIndexToPhysicalPoint((0, 0, k))
        slice_image.SetMetaData("0020|0032", "\\".join(f"{v:.10g}" for v in position))
        slice_image.SetMetaData("0020|0013", str(k + 1))
        slice_image.SetMetaData("0008|0018", pydicom.uid.generate_uid())
        writer.SetFileName(str(folder / f"slice_{k:04d}.dcm"))
        try:
            writer.Execute(slice_image)
        except RuntimeError as exc:
            raise OSError(str(exc).strip().splitlines()[-1]) from None
