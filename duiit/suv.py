"""PET standardised uptake value (SUV, body weight) from DICOM header tags.

SUVbw = activity concentration [Bq/ml] * body weight [g] / injected dose decayed to the
reference time [Bq]. Pixels must be in BQML; with DecayCorrection START they are decay-corrected to
the series start, so the dose is decayed from injection to SeriesTime; with ADMIN they are already
corrected to the injection time, so the dose is used as is.
"""

import math


def _seconds(hhmmss: str) -> float:
    text = hhmmss.strip()
    if len(text) < 6 or not text[:6].isdigit():
        raise ValueError(f"bad DICOM time {hhmmss!r}")
    return int(text[0:2]) * 3600 + int(text[2:4]) * 60 + float(text[4:])


def suv_factor(tags: dict):
    """(factor, None) so that SUV = pixel * factor, or (None, reason) when the tags do not allow SUV."""
    if tags.get("Units", "").upper() != "BQML":
        return None, f"Units is {tags.get('Units', 'missing')!r}, not BQML"
    decay = tags.get("DecayCorrection", "").upper()
    if decay not in ("START", "ADMIN"):
        return None, f"DecayCorrection is {decay or 'missing'!r} (START or ADMIN supported)"
    radio = tags.get("Radiopharmaceutical") or {}
    try:
        weight_g = float(tags["PatientWeight"]) * 1000.0
        dose = float(radio["RadionuclideTotalDose"])
        half_life = float(radio["RadionuclideHalfLife"])
        if decay == "START":
            start = radio.get("RadiopharmaceuticalStartTime") or radio.get("RadiopharmaceuticalStartDateTime", "")[8:]
            elapsed = _seconds(tags["SeriesTime"]) - _seconds(start)
            if elapsed < 0:  # injection the day before the scan's midnight
                elapsed += 24 * 3600
            dose *= math.pow(2.0, -elapsed / half_life)
    except (KeyError, ValueError) as exc:
        return None, f"missing or bad SUV tag ({exc})"
    if weight_g <= 0 or dose <= 0 or half_life <= 0:
        return None, "PatientWeight, dose and half-life must be positive"
    return weight_g / dose, None
