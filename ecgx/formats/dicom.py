"""DICOM waveform objects (12-lead ECG and Hemodynamic Waveform Storage) through pydicom.

pydicom parses the file; the multiplex group is chosen by its label (RHYTHM, not the median
beat, whatever its position) and decoded here from the raw ``WaveformData`` with the
scaling value = (raw + ChannelBaseline) × ChannelSensitivity × ChannelSensitivityCorrectionFactor
in the unit of ChannelSensitivityUnitsSequence (µV, mV or V). Decoded here rather than with
pydicom's ``waveform_array`` because that adds the baseline after scaling (the two agree where
the baseline is 0, as in every sample file; the tests compare them there) and keeps every
channel, where a Hemodynamic object may mix ECG leads with pressures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ecgx.formats.lead_codes import coded_lead
from ecgx.formats.record import Record, RecordError, check_signal

FORMAT = "DICOM"
#: SOP classes that hold ECG leads: 12-lead, General and Ambulatory ECG, Hemodynamic
SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.9.1.1": "12-lead ECG Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.1.2": "General ECG Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.1.3": "Ambulatory ECG Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.2.1": "Hemodynamic Waveform Storage",
}
#: the transfer syntaxes whose waveform bytes are plain little-endian samples
TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2": "Implicit VR Little Endian",
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    "1.2.840.10008.1.2.1.99": "Deflated Explicit VR Little Endian",
}
_DTYPES = {(8, "SB"): "i1", (8, "UB"): "u1", (16, "SS"): "<i2", (16, "US"): "<u2",
           (32, "SL"): "<i4", (32, "UL"): "<u4"}  # fmt: skip
_TO_MV = {"uV": 1e-3, "mV": 1.0, "V": 1e3}


def is_dicom(head: bytes) -> bool:
    """Whether the first 132 bytes are a DICOM file's preamble and ``DICM`` prefix."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def _pydicom() -> Any:
    try:
        import pydicom
    except ImportError as err:  # a core dependency; only a broken install lacks it
        raise RecordError("reading DICOM needs pydicom: pip install pydicom") from err
    return pydicom


def read(path: Path) -> Record:
    """The rhythm multiplex group of a DICOM waveform file in mV, its ECG leads by name."""
    pydicom = _pydicom()
    try:
        ds = pydicom.dcmread(str(path))
    except FileNotFoundError as err:
        raise RecordError(f"{path}: file missing") from err
    except Exception as err:  # InvalidDicomError, struct errors, EOF on truncated files
        raise RecordError(
            f"{path}: not a readable DICOM file ({type(err).__name__}: {err})"
        ) from err
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    if syntax and syntax not in TRANSFER_SYNTAXES:
        name = getattr(pydicom.uid.UID(syntax), "name", syntax)
        raise RecordError(f"{path}: transfer syntax {name} ({syntax}) is not read; ecgx reads "
                          f"{sorted(TRANSFER_SYNTAXES.values())}")  # fmt: skip
    sop = str(ds.get("SOPClassUID", ""))
    if "WaveformSequence" not in ds:
        what = SOP_CLASSES.get(sop) or getattr(pydicom.uid.UID(sop), "name", sop) or "no SOP class"
        raise RecordError(f"{path}: DICOM file without a Waveform Sequence ({what}); "
                          "not an ECG waveform object")  # fmt: skip
    if sop and sop not in SOP_CLASSES:
        raise RecordError(f"{path}: SOP class {pydicom.uid.UID(sop).name} ({sop}) is not an ECG "
                          f"waveform class ({sorted(SOP_CLASSES.values())})")  # fmt: skip
    index, group = _rhythm_group(ds.WaveformSequence, path)
    signal, leads, units = _decode(group, path, index)
    fs = float(group.SamplingFrequency)
    if not fs > 0:
        raise RecordError(f"{path}: multiplex group {index}: sampling frequency {fs}")
    check_signal(signal, str(path))
    record = Record(record_id=path.stem, signal=signal, fs=fs, leads=leads, format=FORMAT)
    record.patient_id = str(ds.get("PatientID", "")) or None
    record.sex = {"M": 0, "F": 1}.get(str(ds.get("PatientSex", "")).upper())
    record.age = _age(str(ds.get("PatientAge", "")))
    record.extra.update(sop_class=SOP_CLASSES.get(sop, sop), multiplex_group=index,
                        units=units)  # fmt: skip
    return record


def _label(group: Any) -> str:
    return str(group.get("MultiplexGroupLabel", "") or "").strip().upper()


def _has_ecg_leads(group: Any) -> bool:
    return any(_channel_lead(ch) for ch in group.get("ChannelDefinitionSequence", []))


def _rhythm_group(groups: Any, path: Path) -> tuple[int, Any]:
    """The group labelled RHYTHM; where no group is, the one unlabelled non-median group that
    holds ECG leads (GE's Hemodynamic files carry a single unlabelled group)."""
    labelled = [(i, g) for i, g in enumerate(groups) if "RHYTHM" in _label(g)]
    if not labelled:
        labelled = [(i, g) for i, g in enumerate(groups)
                    if "MEDIAN" not in _label(g) and _has_ecg_leads(g)]  # fmt: skip
    if len(labelled) != 1:
        labels = [_label(g) or "(no label)" for g in groups]
        raise RecordError(f"{path}: cannot tell the rhythm multiplex group among {labels} "
                          "(expected one labelled RHYTHM, or one unlabelled group of ECG leads)")  # fmt: skip
    return labelled[0]


def _channel_lead(channel: Any) -> str | None:
    sources = channel.get("ChannelSourceSequence") or []
    if not sources:
        return None
    source = sources[0]
    return coded_lead(str(source.get("CodeValue", "")), str(source.get("CodeMeaning", "")))


def _decode(group: Any, path: Path, index: int) -> tuple[np.ndarray, tuple[str, ...], str]:
    where = f"{path}: multiplex group {index}"
    try:
        n_channels = int(group.NumberOfWaveformChannels)
        n_samples = int(group.NumberOfWaveformSamples)
        bits = int(group.WaveformBitsAllocated)
        kind = str(group.WaveformSampleInterpretation)
        data = bytes(group.WaveformData)
    except AttributeError as err:
        raise RecordError(f"{where}: {err}") from err
    if (bits, kind) not in _DTYPES:
        raise RecordError(f"{where}: {bits}-bit {kind} samples are not read (mu-law/A-law "
                          f"and others); ecgx reads {sorted(_DTYPES)}")  # fmt: skip
    dtype = np.dtype(_DTYPES[(bits, kind)])
    expected = n_channels * n_samples * dtype.itemsize
    if len(data) < expected:
        raise RecordError(f"{where}: {len(data)} bytes of WaveformData, {n_channels} channels × "
                          f"{n_samples} samples need {expected} (truncated)")  # fmt: skip
    raw = np.frombuffer(data[:expected], dtype=dtype).reshape(n_samples, n_channels).T
    channels = list(group.get("ChannelDefinitionSequence") or [])
    if len(channels) != n_channels:
        raise RecordError(f"{where}: {len(channels)} channel definitions for {n_channels} channels")
    rows, leads, units = [], [], set()
    for raw_row, channel in zip(raw, channels):
        lead = _channel_lead(channel)
        if lead is None:
            continue  # a pressure, respiration or non-standard lead of a Hemodynamic object
        unit_seq = channel.get("ChannelSensitivityUnitsSequence") or []
        unit = str(unit_seq[0].get("CodeValue", "")) if unit_seq else ""
        if unit not in _TO_MV:
            raise RecordError(f"{where}: lead {lead} in unit {unit or '(none)'!r}; ecgx reads "
                              f"{sorted(_TO_MV)}")  # fmt: skip
        sensitivity = float(channel.get("ChannelSensitivity", 1.0) or 1.0)
        correction = float(channel.get("ChannelSensitivityCorrectionFactor", 1.0) or 1.0)
        baseline = float(channel.get("ChannelBaseline", 0.0) or 0.0)
        rows.append((raw_row.astype(np.float64) + baseline) * sensitivity * correction
                    * _TO_MV[unit])  # fmt: skip
        leads.append(lead)
        units.add(unit)
    if not rows:
        raise RecordError(f"{where}: no ECG lead among its {n_channels} channels")
    if len(set(leads)) != len(leads):
        raise RecordError(f"{where}: a lead appears twice ({leads})")
    return np.stack(rows).astype(np.float32), tuple(leads), ",".join(sorted(units))


def _age(text: str) -> float | None:
    """DICOM's age string ``042Y`` / ``006M`` / ``003W`` / ``010D`` in years."""
    scale = {"Y": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}
    if len(text) == 4 and text[:3].isdigit() and text[3].upper() in scale:
        return int(text[:3]) * scale[text[3].upper()]
    return None
