"""``ecgx data inspect <files or folders>``: what each record file holds."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ecgx.commands.data import main
from tests.formats.conftest import sample


def test_data_inspect_describes_record_files(tmp_path: Path, capsys) -> None:
    muse = sample("muse_xml", "EGM_muse-sinus.xml")
    edf = sample("edf", "contec_0000050.ECG.edf")
    (tmp_path / "broken.scp").write_bytes(b"\0" * 40)
    out = tmp_path / "files.csv"
    main(["inspect", str(muse), str(edf), str(tmp_path), "--output", str(out)])
    printed = capsys.readouterr().out
    assert "MUSE XML" in printed and "EDF" in printed
    table = pd.read_csv(out).set_index("file")
    assert table.loc[str(muse), "format"] == "MUSE XML"
    assert table.loc[str(muse), "seconds"] == 10.0 and table.loc[str(muse), "age"] == 43
    assert table.loc[str(muse), "derived_leads"] == "III aVR aVL aVF"
    assert table.loc[str(edf), "fs"] == 800.0 and table.loc[str(edf), "seconds"] == pytest.approx(
        47.319
    )
    assert "not a SCP-ECG" in table.loc[str(tmp_path / "broken.scp"), "error"]
