"""GE MUSE XML exports (``<RestingECG>``): the Rhythm waveform as the record.

Layout (MUSE 9): ``Waveform`` elements of ``WaveformType`` Median and Rhythm, each with
``SampleBase`` × 10^``SampleExponent`` Hz and one ``LeadData`` per stored lead: ``LeadID``,
``WaveFormData`` (base64 of little-endian int16), ``LeadAmplitudeUnitsPerBit`` with
``LeadAmplitudeUnits`` (MICROVOLTS), ``LeadSampleCountTotal``, ``LeadByteCountTotal`` and
``LeadDataCRC32`` (zlib's CRC-32 of the decoded bytes). Carts store I, II and V1–V6; III, aVR,
aVL and aVF are derived from I and II. ``PatientDemographics`` gives age and sex, ``Diagnosis``
the machine's statements. No library reads MUSE (fairseq-signals has its own parser), hence
this module.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from pathlib import Path
from xml.etree.ElementTree import Element

import numpy as np

from ecgx.formats import xml_safe
from ecgx.formats.record import (
    Record,
    RecordError,
    canonical_leads,
    check_signal,
    derive_limb_leads,
)

FORMAT = "MUSE XML"
_UNITS_TO_MV = {"MICROVOLTS": 1e-3, "MILLIVOLTS": 1.0}
_AGE_UNITS = {"YEARS": 1.0, "MONTHS": 1 / 12, "WEEKS": 7 / 365.25, "DAYS": 1 / 365.25}


def is_muse(root_name: str | None) -> bool:
    return root_name == "RestingECG"


def read(path: Path) -> Record:
    """The Rhythm waveform of a MUSE XML file in mV, the file's leads plus the derived limb
    leads; the Median beat in ``extra["median"]`` (same leads) with ``extra["median_fs"]``."""
    root = xml_safe.parse(path)
    if root.tag != "RestingECG":
        raise RecordError(f"{path}: not a MUSE XML file (root element <{root.tag}>)")
    waveforms = {(w.findtext("WaveformType") or "").strip(): w for w in root.iter("Waveform")}
    if "Rhythm" not in waveforms:
        raise RecordError(
            f"{path}: no Rhythm waveform (has {sorted(waveforms) or 'no Waveform element'})"
        )
    stored, stored_leads, fs = _waveform(waveforms["Rhythm"], path, "Rhythm")
    signal, leads = derive_limb_leads(stored, stored_leads)
    record = Record(record_id=path.stem, signal=signal, fs=fs, leads=leads, format=FORMAT)
    record.extra["derived_leads"] = list(leads[len(stored_leads) :])
    if "Median" in waveforms:
        median, median_leads, median_fs = _waveform(waveforms["Median"], path, "Median")
        record.extra["median"], record.extra["median_leads"] = derive_limb_leads(
            median, median_leads
        )
        record.extra["median_fs"] = median_fs
    demo = root.find("PatientDemographics")
    if demo is not None:
        record.patient_id = (demo.findtext("PatientID") or "").strip() or None
        record.age = _age(demo)
        record.sex = {"MALE": 0, "FEMALE": 1}.get((demo.findtext("Gender") or "").strip().upper())
    record.statements = statements(root.find("Diagnosis"))
    return record


def _number(node: Element, tag: str, path: Path, where: str) -> float:
    text = node.findtext(tag)
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError) as err:
        raise RecordError(f"{path}: {where}: {tag} is {text!r}, not a number") from err


def _waveform(
    waveform: Element, path: Path, kind: str
) -> tuple[np.ndarray, tuple[str, ...], float]:
    exponent = _number(waveform, "SampleExponent", path, kind) if waveform.find(
        "SampleExponent") is not None else 0.0  # fmt: skip
    fs = _number(waveform, "SampleBase", path, kind) * 10**exponent
    if not fs > 0:
        raise RecordError(f"{path}: {kind} waveform: sampling rate {fs} Hz")
    rows, leads = [], []
    for lead_data in waveform.iter("LeadData"):
        lead = (lead_data.findtext("LeadID") or "").strip()
        where = f"{kind} lead {lead or '?'}"
        text = lead_data.findtext("WaveFormData") or ""
        try:
            raw = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError) as err:
            raise RecordError(f"{path}: {where}: WaveFormData is not valid base64 ({err})") from err
        expected_bytes = lead_data.findtext("LeadByteCountTotal")
        if expected_bytes is not None and len(raw) != int(float(expected_bytes)):
            raise RecordError(f"{path}: {where}: {len(raw)} bytes of samples, LeadByteCountTotal "
                              f"says {expected_bytes} (truncated)")  # fmt: skip
        crc = lead_data.findtext("LeadDataCRC32")
        if crc is not None and zlib.crc32(raw) != int(crc):
            raise RecordError(f"{path}: {where}: CRC-32 of the samples is {zlib.crc32(raw)}, "
                              f"LeadDataCRC32 says {crc} (damaged data)")  # fmt: skip
        size = int(lead_data.findtext("LeadSampleSize") or 2)
        if size != 2 or len(raw) % 2:
            raise RecordError(f"{path}: {where}: {len(raw)} bytes of {size}-byte samples; "
                              "MUSE stores 2-byte samples")  # fmt: skip
        digital = np.frombuffer(raw, dtype="<i2")
        count = lead_data.findtext("LeadSampleCountTotal")
        if count is not None and digital.size != int(float(count)):
            raise RecordError(f"{path}: {where}: {digital.size} samples, LeadSampleCountTotal "
                              f"says {count} (truncated)")  # fmt: skip
        units = (lead_data.findtext("LeadAmplitudeUnits") or "MICROVOLTS").strip().upper()
        if units not in _UNITS_TO_MV:
            raise RecordError(f"{path}: {where}: LeadAmplitudeUnits {units!r} "
                              f"(read: {sorted(_UNITS_TO_MV)})")  # fmt: skip
        per_bit = _number(lead_data, "LeadAmplitudeUnitsPerBit", path, where)
        rows.append(digital.astype(np.float64) * (per_bit * _UNITS_TO_MV[units]))
        leads.append(lead)
    if not rows:
        raise RecordError(f"{path}: {kind} waveform holds no LeadData")
    lengths = {r.size for r in rows}
    if len(lengths) != 1:
        raise RecordError(f"{path}: {kind} leads differ in length ({sorted(lengths)} samples)")
    names = canonical_leads(leads, f"{path}: {kind}")
    signal = np.stack(rows).astype(np.float32)
    check_signal(signal, str(path))
    return signal, names, float(fs)


def _age(demo: Element) -> float | None:
    try:
        age = float(demo.findtext("PatientAge") or "")
    except ValueError:
        return None
    unit = (demo.findtext("AgeUnits") or "YEARS").strip().upper()
    return age * _AGE_UNITS[unit] if unit in _AGE_UNITS else None


def statements(diagnosis: Element | None) -> list[str]:
    """The diagnosis as lines: MUSE splits a statement over several ``DiagnosisStatement``
    elements and marks the one that ends a line with ``StmtFlag`` ENDSLINE."""
    if diagnosis is None:
        return []
    lines, current = [], ""
    for stmt in diagnosis.iter("DiagnosisStatement"):
        text = (stmt.findtext("StmtText") or "").strip()
        current = (
            f"{current} {text}".strip()
            if current and not text.startswith(",")
            else (current + text)
        )
        flags = {(f.text or "").strip().upper() for f in stmt.iter("StmtFlag")}
        if "ENDSLINE" in flags:
            lines.append(current)
            current = ""
    if current:
        lines.append(current)
    return [line for line in lines if line]
