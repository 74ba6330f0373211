"""LUDB: the reader on the real sample, the cardiologists' wave boundaries as masks, and the
delineation scores against them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecgx.datasets.ludb import LUDB, WAVES, segment_masks, wave_boundaries
from ecgx.evaluation.delineation import score_delineation, score_ludb
from ecgx.explain.delineation import Delineation
from ecgx.formats.record import LEADS, RecordError
from tests.conftest import SAMPLES

ROOT = SAMPLES / "ludb"
pytestmark = pytest.mark.skipif(not ROOT.is_dir(), reason=f"no LUDB sample under {ROOT}")


def test_reader_gives_the_record_its_header_describes() -> None:
    import wfdb

    reader = LUDB(ROOT)
    reader.ensure()
    meta = reader.metadata()
    row = meta.iloc[0].to_dict()
    assert row["record_id"] == "1" and row["age"] == 51 and row["sex"] == 1.0  # "#<sex>: F"
    assert "Rhythm: Sinus bradycardia" in row["labels"] and "Left ventricular hypertrophy" in (
        row["labels"])  # fmt: skip
    record = reader.read(row)
    # Its own gain and non-zero baseline per lead, lower-case names mapped to canonical leads.
    want = wfdb.rdrecord(str(ROOT / "1")).p_signal.T
    np.testing.assert_allclose(record.signal, want, atol=1e-6)
    assert record.fs == 500 and record.leads == LEADS
    y, classes, keep = LUDB(ROOT, rhythm_only=True).labels(meta)
    assert classes == ["Rhythm: Sinus bradycardia"] and y.tolist() == [[1.0]] and keep.all()


def test_wave_boundaries_and_masks() -> None:
    waves = wave_boundaries(ROOT, "1", "II")
    assert set(waves["wave"]) == set(WAVES)
    assert ((waves["onset"] < waves["peak"]) & (waves["peak"] < waves["offset"])).all()
    masks = segment_masks(ROOT, "1", 5000)
    assert masks.shape == (12, 3, 5000)
    lead = LEADS.index("II")
    for k, wave in enumerate(WAVES):
        part = waves[waves["wave"] == wave]
        assert masks[lead, k].sum() == (part["offset"] - part["onset"] + 1).sum()
    assert not (masks[lead, 0] & masks[lead, 1]).any()  # a P wave never overlaps a QRS


def test_bad_annotations_are_named(tmp_path: Path) -> None:
    for path in ROOT.glob("1.*"):
        shutil.copy(path, tmp_path)
    (tmp_path / "1.v6").unlink()
    with pytest.raises(RecordError, match=r"1\.v6: annotation file missing"):
        wave_boundaries(tmp_path, "1", "V6")
    with pytest.raises(RecordError, match="no LUDB annotation for lead 'X'"):
        wave_boundaries(tmp_path, "1", "X")


def _delineation(qrs_on: list[int], qrs_off: list[int]) -> Delineation:
    none = np.full(len(qrs_on), -1)
    return Delineation(500.0, np.array(qrs_on) + 20, np.array(qrs_on), np.array(qrs_off), none,
                       none, none, none, none, none, 5000)  # fmt: skip


def test_scores_by_hand() -> None:
    truth = pd.DataFrame({"wave": ["QRS"] * 3, "onset": [1000, 1500, 2000],
                          "peak": [1020, 1520, 2020], "offset": [1040, 1540, 2040]})  # fmt: skip
    # Onsets 10 samples late (20 ms at 500 Hz), one QRS missed; a detection at 100, before the
    # annotated span, is not judged; one at 1800 is a false positive.
    found = _delineation([100, 1010, 1510, 1800], [150, 1040, 1540, 1850])
    scores = score_delineation(found, truth).set_index(["wave", "point"])
    onset = scores.loc[("QRS", "onset")]
    assert onset["sensitivity"] == pytest.approx(2 / 3) and onset["ppv"] == pytest.approx(2 / 3)
    assert onset["mean_error_ms"] == pytest.approx(20.0) and onset["sd_error_ms"] == 0
    assert scores.loc[("QRS", "offset"), "mean_error_ms"] == 0
    assert np.isnan(scores.loc[("P", "onset"), "sensitivity"])  # no P annotated here


def test_ludb_scores_of_both_delineations() -> None:
    ecgx = score_ludb(str(ROOT), "ecgx").set_index(["wave", "point"])
    # Every annotated QRS of every lead found within 150 ms, its onset within 30 ms on average.
    assert (ecgx.loc["QRS", "sensitivity"] == 1.0).all()
    assert abs(ecgx.loc[("QRS", "onset"), "mean_error_ms"]) < 30
    pytest.importorskip("neurokit2")
    nk = score_ludb(str(ROOT), "neurokit2").set_index(["wave", "point"])
    # Measured on this record: NeuroKit2 finds P and T boundaries that ecgx's fixed windows miss.
    for key in (("P", "onset"), ("T", "offset")):
        assert nk.loc[key, "sensitivity"] > ecgx.loc[key, "sensitivity"] + 0.3, key
