"""EDF: the Contec recording against the header's scaling computed here from the raw bytes."""

from __future__ import annotations

import numpy as np

from ecgx.formats.files import read_record
from tests.formats.conftest import sample


def test_edf_matches_the_header_scaling() -> None:
    path = sample("edf", "contec_0000050.ECG.edf")
    record = read_record(path)
    data = path.read_bytes()
    n_signals = int(data[252:256])
    n_records, duration = int(data[236:244]), float(data[244:252])

    def field(start: int, width: int) -> list[bytes]:
        """One header column: ``start`` is the sum of the widths before it, per signal."""
        base = 256 + start * n_signals
        return [data[base + i * width : base + (i + 1) * width] for i in range(n_signals)]

    offsets = {"label": 0, "pmin": 104, "pmax": 112, "dmin": 120, "dmax": 128, "spr": 216}
    pmin = np.array([float(v) for v in field(offsets["pmin"], 8)])
    pmax = np.array([float(v) for v in field(offsets["pmax"], 8)])
    dmin = np.array([float(v) for v in field(offsets["dmin"], 8)])
    dmax = np.array([float(v) for v in field(offsets["dmax"], 8)])
    spr = [int(v) for v in field(offsets["spr"], 8)]
    assert len(set(spr)) == 1
    raw = np.frombuffer(data[256 * (n_signals + 1) :], "<i2").reshape(n_records, n_signals, spr[0])
    digital = raw.transpose(1, 0, 2).reshape(n_signals, -1).astype(np.float64)
    expected = (digital - dmin[:, None]) / (dmax - dmin)[:, None] * (pmax - pmin)[:, None]
    expected += pmin[:, None]  # the header's units are mV
    assert record.format == "EDF" and record.fs == spr[0] / duration == 800.0
    assert record.signal.shape == (12, n_records * spr[0])
    assert round(record.signal.shape[1] / record.fs, 2) == 47.32
    np.testing.assert_allclose(record.signal, expected, atol=1e-5)
    labels = [v.decode().strip() for v in field(offsets["label"], 16)]
    assert list(record.leads) == labels
    assert 1 < np.abs(record.signal).max() < 20
