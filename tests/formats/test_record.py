"""canonical_record: the one place that derives limb leads and reorders to the 12 leads."""

from __future__ import annotations

import numpy as np
import pytest

from ecgx.formats.files import read_record
from ecgx.formats.record import LEADS, Record, RecordError, canonical_record
from tests.formats.conftest import assert_limb_leads, sample


def test_eight_lead_scp_becomes_twelve_canonical_leads() -> None:
    record = read_record(sample("scp_ecg", "ecgviewer_demo.scp"))
    stored = record.signal.copy()
    out = canonical_record(record)
    assert out.leads == LEADS and out.signal.shape == (12, 10000)
    assert out.extra["derived_leads"] == ["III", "aVR", "aVL", "aVF"]
    assert out.extra["file_leads"] == ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
    np.testing.assert_array_equal(out.signal[LEADS.index("V3")], stored[4])
    assert_limb_leads(out.signal, out.leads)


def test_extra_leads_dropped_missing_refused() -> None:
    rng = np.random.default_rng(0)
    names = ("V6", "aVF", "aVL", "aVR", "III", "II", "I", "V1", "V2", "V3", "V4", "V5", "V7")
    signal = rng.normal(size=(13, 50)).astype(np.float32)
    out = canonical_record(Record("r", signal.copy(), 100.0, names))
    assert out.extra["dropped_leads"] == ["V7"] and "derived_leads" not in out.extra
    np.testing.assert_array_equal(out.signal, signal[[names.index(lead) for lead in LEADS]])
    with pytest.raises(RecordError, match=r"r: missing leads \['V1'"):
        canonical_record(Record("r", signal[:2], 100.0, ("I", "II")))
