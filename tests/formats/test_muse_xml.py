"""GE MUSE XML: the real exports against a base64 + numpy decode written here."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from ecgx.formats.files import read_record
from tests.formats.conftest import assert_limb_leads, sample


@pytest.mark.parametrize("name", ["EGM_muse-sinus.xml", "IntroECG_MUSE_example.xml"])
def test_muse_rhythm_matches_an_independent_decode(name: str) -> None:
    path = sample("muse_xml", name)
    record = read_record(path)
    assert record.format == "MUSE XML" and record.fs == 500.0
    root = ET.parse(path).getroot()
    (rhythm,) = [w for w in root.iter("Waveform") if w.findtext("WaveformType") == "Rhythm"]
    for lead_data in rhythm.iter("LeadData"):
        raw = np.frombuffer(base64.b64decode(lead_data.findtext("WaveFormData")), "<i2")
        expected = raw * float(lead_data.findtext("LeadAmplitudeUnitsPerBit")) / 1000  # µV -> mV
        got = record.signal[record.leads.index(lead_data.findtext("LeadID"))]
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert record.signal.shape == (12, 5000)  # 10 s at 500 Hz
    assert record.extra["derived_leads"] == ["III", "aVR", "aVL", "aVF"]
    assert_limb_leads(record.signal, record.leads)
    assert 0.3 < np.abs(record.signal).max() < 5  # mV, not µV or counts
    assert record.extra["median"].shape == (12, 600) and record.extra["median_fs"] == 500.0
    assert record.sex == 0 and record.age == float(root.findtext("PatientDemographics/PatientAge"))


def test_muse_statements_join_continued_lines() -> None:
    record = read_record(sample("muse_xml", "EGM_muse-sinus.xml"))
    # "Anterior infarct" and ", age undetermined" are one line (no ENDSLINE on the first);
    # the OriginalDiagnosis copy is not read twice.
    assert record.statements[:3] == ["Normal Sinus rhythm", "Anterior infarct, age undetermined",
                                     "T wave abnormality, consider lateral ischemia"]  # fmt: skip
    assert record.statements.count("Abnormal ECG") == 1
