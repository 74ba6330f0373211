"""The format-16 fast path equals wfdb; other layouts go through wfdb; damage is named."""

from __future__ import annotations

import numpy as np
import pytest
import wfdb

from ecgx.data.record import RecordError
from ecgx.data.wfdb_format16 import read_record
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
