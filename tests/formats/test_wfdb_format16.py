"""The format-16 fast path equals wfdb; other layouts go through wfdb; damage is named."""

from __future__ import annotations

import numpy as np
import pytest
import wfdb

from ecgx.formats.record import RecordError
from ecgx.formats.wfdb_format16 import read_record
from tests.conftest import PTBXL_SAMPLES, needs_samples


@needs_samples(PTBXL_SAMPLES)
@pytest.mark.parametrize("name", ["records100/00000/00001_lr", "records500/00000/00299_hr"])
def test_equals_wfdb_on_real_ptbxl(name: str) -> None:
    signal, fs, names = read_record(PTBXL_SAMPLES / name)
    expected, fields = wfdb.rdsamp(str(PTBXL_SAMPLES / name))
    np.testing.assert_array_equal(signal, expected.T.astype(np.float32))
    assert fs == fields["fs"] and names == fields["sig_name"]


def test_other_formats_fall_back_to_wfdb(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x = np.round(rng.normal(0, 1, (500, 3)), 3)
    wfdb.wrsamp("r212", fs=250, units=["mV"] * 3, sig_name=["I", "II", "V1"], p_signal=x,
                fmt=["212"] * 3, adc_gain=[200.0] * 3, baseline=[0] * 3,
                write_dir=str(tmp_path))  # fmt: skip
    signal, fs, names = read_record(tmp_path / "r212")
    expected, _ = wfdb.rdsamp(str(tmp_path / "r212"))
    np.testing.assert_array_equal(signal, expected.T.astype(np.float32))
    assert (fs, names) == (250.0, ["I", "II", "V1"])


def test_damaged_records_are_named(tmp_path) -> None:
    x = np.zeros((100, 2))
    wfdb.wrsamp("r16", fs=100, units=["mV"] * 2, sig_name=["I", "II"], p_signal=x, fmt=["16"] * 2,
                adc_gain=[1000.0] * 2, baseline=[0] * 2, write_dir=str(tmp_path))  # fmt: skip
    dat = tmp_path / "r16.dat"
    dat.write_bytes(dat.read_bytes()[:-10])
    with pytest.raises(RecordError, match="r16.dat holds 390 bytes"):
        read_record(tmp_path / "r16")
    dat.unlink()
    with pytest.raises(RecordError, match="data file missing"):
        read_record(tmp_path / "r16")
    (tmp_path / "r16.hea").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(RecordError, match="not readable text"):
        read_record(tmp_path / "r16")
    with pytest.raises(RecordError, match="header file missing"):
        read_record(tmp_path / "nothing")


@pytest.mark.parametrize(("gain", "base"), [("1000.0(0)", 0), ("200", 0), ("4880(-5)", 0),
                                            ("2.5(1024)", 0), ("1000", 17), ("7.0(32767)", 0)])  # fmt: skip
def test_float32_decode_equals_wfdb_for_every_sample_value(tmp_path, gain, base) -> None:
    # Every 16-bit value but the missing-sample code, in 3 leads: the float32 scaling must give
    # wfdb's float64 result rounded to float32, bit for bit.
    values = np.arange(-32767, 32768, dtype="<i2")
    digital = np.stack([values, values[::-1], np.roll(values, 7)], axis=1)
    (tmp_path / "r.dat").write_bytes(digital.tobytes())
    lines = [f"r 3 500 {len(values)}"]
    lines += [f"r.dat 16 {gain}/mV 16 {base} 0 0 0 {lead}" for lead in ("I", "II", "V1")]
    (tmp_path / "r.hea").write_text("\n".join(lines) + "\n")
    signal, _, _ = read_record(tmp_path / "r")
    expected, _ = wfdb.rdsamp(str(tmp_path / "r"))
    np.testing.assert_array_equal(signal, expected.T.astype(np.float32))


@needs_samples(PTBXL_SAMPLES)
def test_equals_wfdb_on_every_tenth_real_record() -> None:
    for path in sorted(PTBXL_SAMPLES.glob("records*/*/*.hea"))[::10]:
        signal, _, _ = read_record(path.with_suffix(""))
        expected, _ = wfdb.rdsamp(str(path.with_suffix("")))
        np.testing.assert_array_equal(signal, expected.T.astype(np.float32), err_msg=str(path))
