"""Every dataset option runs with its own default split, on the real samples, with no split
named: `ecgx data inspect` for each, and one shared smoke `ecgx train` loop (slow)."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig

from ecgx.datasets.chapman import COLUMNS, read_xlsx_table
from ecgx.datasets.inspect import inspect
from tests.conftest import SAMPLES, needs_samples

CHAPMAN = SAMPLES / "chapman_shaoxing"
# dataset option -> (its default split option, transform option, real sample root)
DEFAULTS = {
    "ptbxl": ("ptbxl_folds", "default", SAMPLES / "ptbxl"),
    "cinc2020": ("stratified_kfold", "seresnet", SAMPLES / "cinc2020_cpsc"),
    "cinc2021": ("stratified_shuffle", "seresnet", SAMPLES / "cinc2021"),
    "cpsc2018": ("stratified_shuffle", "cpsc2018", SAMPLES / "cpsc2018"),
    "chapman": ("random_stratified", "default", None),  # root built from the sample below
    "sph": ("stratified_shuffle", "seresnet", SAMPLES / "sph"),
}


def _chapman_root(tmp: Path, per_class: int = 12) -> Path:
    """The Chapman sample holds one recording for a 10,646-row table. A split needs several,
    so: the official table's first rows of each merged rhythm group, each pointing at a link to
    the one real recording (labels and table real, signals all that one record)."""
    table = read_xlsx_table(CHAPMAN / "Diagnostics.xlsx")
    groups = {"AFIB": {"AFIB", "AF"}, "GSVT": {"SVT", "AT", "ST"}, "SB": {"SB"}, "SR": {"SR"}}
    rows = []
    for codes in groups.values():
        rows += table[table["Rhythm"].isin(codes)].head(per_class).to_dict("records")
    root = tmp / "chapman"
    folder = root / "ECGDataDenoised"
    folder.mkdir(parents=True)
    (real,) = (CHAPMAN / "ECGDataDenoised").glob("*.csv")
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'

    def row(r: int, values: list) -> str:
        cells = "".join(
            f'<c r="{chr(65 + j)}{r}" t="inlineStr"><is><t>{v}</t></is></c>'
            for j, v in enumerate(values)
        )
        return f'<row r="{r}">{cells}</row>'

    body = [row(1, list(COLUMNS))]
    for i, record in enumerate(rows):
        body.append(row(i + 2, [record[c] for c in COLUMNS]))
        (folder / f"{record['FileName']}.csv").symlink_to(real)
    sheet = f"<worksheet {ns}><sheetData>{''.join(body)}</sheetData></worksheet>"
    with zipfile.ZipFile(root / "Diagnostics.xlsx", "w") as book:
        book.writestr("xl/worksheets/sheet1.xml", sheet)
    return root


def _root(name: str, tmp: Path) -> Path:
    root = DEFAULTS[name][2]
    return _chapman_root(tmp) if root is None else root


@pytest.mark.parametrize("name", list(DEFAULTS))
def test_each_dataset_picks_its_own_split_and_the_command_line_wins(compose_train, name):
    split, transform, _ = DEFAULTS[name]
    compose_train(f"dataset={name}")
    choices = HydraConfig.get().runtime.choices
    assert (choices["split"], choices["transform"]) == (split, transform)
    compose_train(f"dataset={name}", "split=csv", "transform=bandpass")  # the user's choice wins
    assert (
        HydraConfig.get().runtime.choices["split"],
        HydraConfig.get().runtime.choices["transform"],
    ) == ("csv", "bandpass")


def test_an_experiment_choice_wins_over_the_dataset_default(compose_train) -> None:
    # seresnet18/cinc2021_stratified names dataset cinc2021 and split leave_source_out
    compose_train("experiment=seresnet18/cinc2021_stratified")
    assert HydraConfig.get().runtime.choices["split"] == "leave_source_out"
    compose_train("experiment=seresnet18/cinc2021_stratified", "split=stratified_shuffle")
    assert HydraConfig.get().runtime.choices["split"] == "stratified_shuffle"


@needs_samples()
@pytest.mark.parametrize("name", list(DEFAULTS))
def test_data_inspect_runs_every_dataset_on_its_real_samples(name, tmp_path) -> None:
    out = inspect([f"dataset={name}", f"dataset.root={_root(name, tmp_path)}",
                   f"paths.cache_dir={tmp_path / 'cache'}"])  # fmt: skip
    table = out.split("\n\n")[-1].splitlines()
    assert table[0].split() == ["train", "val", "test"]
    counts = [int(v) for v in table[1].split()[1:]]
    assert table[1].startswith("records") and all(n > 0 for n in counts), out


@needs_samples()
@pytest.mark.slow
def test_smoke_train_runs_every_dataset_on_its_real_samples(compose_train, tmp_path) -> None:
    from ecgx.commands.train import train

    seconds = {}
    for name in DEFAULTS:
        start = time.perf_counter()
        cfg = compose_train(f"dataset={name}", f"dataset.root={_root(name, tmp_path)}",
                            "debug=smoke", "logger=none", "callbacks=none",
                            "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
                            "trainer.limit_test_batches=1", "module.bootstrap_resamples=0",
                            "data.batch_size=4", "data.eval_batch_size=8")  # fmt: skip
        metrics = train(cfg)
        assert "test/loss" in metrics, name
        seconds[name] = time.perf_counter() - start
    print("smoke train seconds per dataset:", {k: round(v, 1) for k, v in seconds.items()})
