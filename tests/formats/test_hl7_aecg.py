"""HL7 aECG: the FDA example against digits × scale, and against the Mortara SCP file of the
same fictitious patient (SBJ-123), which holds the same recording."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np

from ecgx.formats.files import read_record
from tests.formats.conftest import assert_limb_leads, sample

V3 = "{urn:hl7-org:v3}"


def test_aecg_matches_digits_times_scale() -> None:
    path = sample("hl7_aecg", "Example_aECG.xml")
    record = read_record(path)
    assert record.format == "HL7 aECG" and record.fs == 500.0
    assert record.signal.shape == (12, 5000)
    series = ET.parse(path).getroot().find(f"{V3}component/{V3}series")
    checked = 0
    for seq in series.iter(f"{V3}sequence"):
        code = seq.find(f"{V3}code").get("code")
        if not code.startswith("MDC_ECG_LEAD_"):
            continue
        value = seq.find(f"{V3}value")
        assert value.find(f"{V3}scale").get("unit") == "uV"
        digits = np.array(value.find(f"{V3}digits").text.split(), float)
        expected = (float(value.find(f"{V3}origin").get("value"))
                    + float(value.find(f"{V3}scale").get("value")) * digits) / 1000  # fmt: skip
        lead = {"AVR": "aVR", "AVL": "aVL", "AVF": "aVF"}.get(code[13:], code[13:])
        np.testing.assert_allclose(record.signal[record.leads.index(lead)], expected, atol=1e-6)
        checked += 1
        if checked == 12:
            break  # the rhythm series' 12 leads; the median beats follow in derivedSeries
    assert checked == 12
    assert_limb_leads(record.signal, record.leads, atol=0.01)
    assert record.extra["median"].shape[0] == 12 and record.extra["median_fs"] == 500.0
    assert (record.sex, record.age, record.patient_id) == (0, 49.0, "SBJ-123")


def test_aecg_and_mortara_scp_hold_the_same_recording() -> None:
    aecg = read_record(sample("hl7_aecg", "Example_aECG.xml"))
    scp = read_record(sample("scp_ecg", "ecgtoolkit_Example.scp"))
    assert aecg.patient_id == scp.patient_id == "SBJ-123"
    order = [scp.leads.index(lead) for lead in aecg.leads]
    assert aecg.fs == scp.fs
    np.testing.assert_allclose(scp.signal[order], aecg.signal, atol=1e-6)
    np.testing.assert_allclose(scp.extra["median"][order], aecg.extra["median"], atol=1e-6)
