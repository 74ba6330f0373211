"""DICOM waveforms: the real files against pydicom's own waveform_array."""

from __future__ import annotations

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from ecgx.formats.files import read_record  # noqa: E402
from tests.formats.conftest import assert_limb_leads, sample  # noqa: E402

CASES = {  # file: (storage class, rhythm group index, fs, samples, mV per unit)
    "pydicom_waveform_ecg.dcm": ("12-lead ECG Waveform Storage", 0, 1000.0, 10000, 1.25e-3),
    "dcm-waveform_test_ecg.dcm": ("Hemodynamic Waveform Storage", 0, 240.0, 2400, 0.00122),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_dicom_matches_pydicom_waveform_array(name: str) -> None:
    path = sample("dicom", name)
    sop, group, fs, samples, per_unit = CASES[name]
    record = read_record(path)
    assert record.format == "DICOM" and record.extra["sop_class"] == sop
    assert record.fs == fs and record.signal.shape == (12, samples)
    assert samples / fs == 10.0
    ds = pydicom.dcmread(path)
    scaled = ds.waveform_array(group).T  # pydicom applies sensitivity × correction (+ baseline 0)
    unit = ds.WaveformSequence[group].ChannelDefinitionSequence[0].ChannelSensitivityUnitsSequence
    to_mv = {"uV": 1e-3, "mV": 1.0}[unit[0].CodeValue]
    np.testing.assert_allclose(record.signal, scaled * to_mv, rtol=1e-6, atol=1e-7)
    raw = ds.WaveformSequence[group].WaveformData
    counts = np.frombuffer(raw, "<i2").reshape(samples, 12).T
    np.testing.assert_allclose(record.signal, counts * per_unit, rtol=1e-6, atol=1e-7)
    assert record.leads == ("I", "II", "III", "aVR", "aVL", "aVF",
                            "V1", "V2", "V3", "V4", "V5", "V6")  # fmt: skip
    assert_limb_leads(record.signal, record.leads, atol=0.02)  # stored, so up to rounding
    assert 0.5 < np.abs(record.signal).max() < 5


def test_dicom_rhythm_group_is_chosen_by_label(tmp_path) -> None:
    path = sample("dicom", "pydicom_waveform_ecg.dcm")
    ds = pydicom.dcmread(path)
    ds.WaveformSequence = [ds.WaveformSequence[1], ds.WaveformSequence[0]]  # median first
    moved = tmp_path / "median_first.dcm"
    ds.save_as(moved)
    record = read_record(moved)
    assert record.extra["multiplex_group"] == 1 and record.signal.shape == (12, 10000)
    np.testing.assert_array_equal(record.signal, read_record(path).signal)
