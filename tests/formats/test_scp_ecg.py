"""SCP-ECG: the three real files (Huffman second differences, raw int16, Huffman first
differences), and the codecs checked against an encoder written here."""

from __future__ import annotations

import numpy as np
import pytest

from ecgx.formats import scp_ecg
from ecgx.formats.files import read_record
from tests.formats.conftest import assert_limb_leads, sample

CASES = {  # file: (fs, samples, leads, nV per count, difference order)
    "ecgtoolkit_Example.scp": (500.0, 5000, 12, 2500, 2),
    "ecgviewer_demo.scp": (1000.0, 10000, 8, 183, 0),
    "scptools_ECG_20170504_163507_123456789.SCP": (1e6 / 1667, 6000, 8, 3750, 1),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_scp_samples_decode(name: str) -> None:
    fs, samples, n_leads, avm, _ = CASES[name]
    record = read_record(sample("scp_ecg", name))
    assert record.format == "SCP-ECG" and record.fs == pytest.approx(fs)
    assert record.signal.shape == (n_leads, samples) and record.extra["amplitude_nv"] == avm
    assert record.leads[:8] == ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
    # Every value is a whole number of amplitude units, so nothing was scaled twice or lost.
    counts = record.signal.astype(np.float64) / (avm * 1e-6)
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)
    assert 0.3 < np.abs(record.signal).max() < 10
    if n_leads == 12:
        assert_limb_leads(record.signal, record.leads, atol=0.01)


def test_raw_scp_matches_the_bytes() -> None:
    path = sample("scp_ecg", "ecgviewer_demo.scp")
    record = read_record(path)
    data = path.read_bytes()
    sections = scp_ecg._sections(data, path)
    body = sections[6]
    offset = 22 + 2 * 8
    first = np.frombuffer(body[offset : offset + 20000], "<i2")
    np.testing.assert_allclose(record.signal[0], first * 183e-6, rtol=1e-6)


def _encode_default(values: list[int]) -> bytes:
    """The default Huffman table as an encoder, for round trips."""
    bits = ""
    for v in values:
        if v == 0:
            bits += "0"
        elif abs(v) <= 8:
            bits += "1" * abs(v) + "0" + ("1" if v < 0 else "0")
        elif -128 <= v < 128:
            bits += "1111111110" + format(v & 0xFF, "08b")
        else:
            bits += "1111111111" + format(v & 0xFFFF, "016b")
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""


def test_huffman_and_differences_round_trip() -> None:
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.integers(-40, 40, 500)).astype(np.int64)
    first = np.concatenate([[x[0]], np.diff(x)])
    second = np.concatenate([[x[0], x[1]], x[2:] - 2 * x[1:-1] + x[:-2]])
    for order, d in ((1, first), (2, second)):
        decoded = scp_ecg._decode_default(_encode_default(d.tolist()), len(d), "test")
        np.testing.assert_array_equal(decoded, d)
        np.testing.assert_array_equal(scp_ecg._undifference(decoded, order), x)
    extremes = [0, 8, -8, 9, -9, 127, -128, 128, -129, 32767, -32768]
    decoded = scp_ecg._decode_default(_encode_default(extremes), len(extremes), "test")
    assert decoded.tolist() == extremes
