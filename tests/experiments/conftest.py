"""Smoke runs of the experiment files: each composed exactly as ``ecgx train experiment=…``
composes it, then run for a few batches (``debug=smoke``) on data of the right format.

Data by the experiment's ``dataset`` choice: PTB-XL experiments read the synthetic PTB-XL set,
CinC / CPSC experiments the real samples in ../shared/ecg-samples (skipped where absent),
Chapman experiments a small Chapman-layout set written here (the one real Chapman sample is a
single record, too few to split), CPSC 2018 experiments the 100 real CPSC recordings of the CinC
2020 sample rewritten in the original CPSC 2018 format (its own sample has 10, too few to split). All runs of a session share one MLflow store and one cache.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from ecgx.datasets.chapman import COLUMNS
from tests.conftest import ROOT, SAMPLES

EXPERIMENTS = ROOT / "experiments"

# dataset choice -> a folder of the real samples in that format (None: a generated set)
SAMPLE_ROOTS: dict[str, Path | None] = {
    "ptbxl": None,
    "synthetic_ptbxl": None,
    "chapman": None,
    "cinc2021": SAMPLES / "cinc2021",
    "cinc2020": SAMPLES / "cinc2020_cpsc",
    "cpsc2018": None,
    "sph": SAMPLES / "sph",
}


def experiment_names(study: str) -> list[str]:
    """Every experiment file of ``experiments/<study>/`` as ``<study>/<name>``."""
    return sorted(f"{study}/{p.stem}" for p in (EXPERIMENTS / study).glob("*.yaml"))


@pytest.fixture(scope="session")
def synthetic_chapman(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Chapman-Shaoxing layout (Diagnostics.xlsx + ECGDataDenoised/*.csv in µV, 500 Hz, 10 s)
    with 60 records, 15 of each of the seed's four rhythm groups."""
    root = tmp_path_factory.mktemp("chapman")
    folder = root / "ECGDataDenoised"
    folder.mkdir()
    rng = np.random.default_rng(0)
    t = np.arange(5000) / 500
    rhythms = [("AFIB", 1.4), ("SVT", 2.6), ("SB", 0.8), ("SR", 1.2)]  # rate in beats/s
    rows = []
    for i in range(60):
        rhythm, rate = rhythms[i % 4]
        beats = np.sin(2 * np.pi * rate * t) ** 31  # narrow peaks, one per beat
        leads = np.outer(beats, rng.uniform(300, 1500, 12)) + rng.normal(0, 20, (5000, 12))
        name = f"MUSE_2026_{i:04d}"
        leads[np.abs(leads) < 0.01] = 0.01  # the seed's quality filter drops records with a 0
        np.savetxt(folder / f"{name}.csv", leads, delimiter=",", fmt="%.2f")
        rows.append([name, rhythm, "NONE", str(40 + i), "MALE" if i % 2 else "FEMALE"])
    _write_diagnostics(root / "Diagnostics.xlsx", rows)
    return root


def _write_diagnostics(path: Path, rows: list[list[str]]) -> None:
    """Diagnostics.xlsx with the published columns (numeric ones filled with 1), inline text."""
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'

    def row(r: int, values: list[str]) -> str:
        cells = "".join(
            f'<c r="{chr(65 + j)}{r}" t="inlineStr"><is><t>{v}</t></is></c>'
            for j, v in enumerate(values)
        )
        return f'<row r="{r}">{cells}</row>'

    body = [row(1, list(COLUMNS))]
    body += [row(i + 2, values + ["1"] * (len(COLUMNS) - 5)) for i, values in enumerate(rows)]
    sheet = f"<worksheet {ns}><sheetData>{''.join(body)}</sheetData></worksheet>"
    with zipfile.ZipFile(path, "w") as book:
        book.writestr("xl/worksheets/sheet1.xml", sheet)


@pytest.fixture(scope="session")
def cpsc2018_from_cinc2020(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A0001-A0100 as the CPSC 2018 release stores them: MATLAB v5 struct ``ECG`` (sex, age,
    data in mV) and the official REFERENCE.csv (the CinC copies are the same recordings)."""
    import scipy.io

    source = SAMPLES / "cinc2020_cpsc"
    if not source.is_dir() or not (SAMPLES / "cpsc2018").is_dir():
        pytest.skip(f"{source} absent")
    root = tmp_path_factory.mktemp("cpsc2018")
    for header in sorted(source.glob("A*.hea")):
        lines = header.read_text().splitlines()
        fields = {k.strip("# "): v.strip() for k, _, v in (ln.partition(":") for ln in lines
                                                          if ln.startswith("#"))}  # fmt: skip
        val = scipy.io.loadmat(header.with_suffix(".mat"))["val"].astype(np.float64) / 1000.0
        ecg = {"sex": fields.get("Sex", "Male"), "age": float(fields.get("Age", "nan")),
               "data": val}  # fmt: skip
        scipy.io.savemat(root / f"{header.stem}.mat", {"ECG": ecg})
    (root / "REFERENCE.csv").write_bytes((SAMPLES / "cpsc2018" / "REFERENCE.csv").read_bytes())
    return root


@pytest.fixture(scope="session")
def smoke_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the MLflow store, the cache and the logs of every smoke run."""
    return tmp_path_factory.mktemp("smoke")


@pytest.fixture
def compose_experiment(
    request: pytest.FixtureRequest, smoke_store: Path, synthetic_root: Path
) -> Callable[..., DictConfig]:
    """``compose_experiment(name, *overrides)``: conf/train.yaml + ``experiment=name`` +
    ``debug=smoke``, data pointed at the set of the experiment's dataset format."""

    def _compose(name: str, *overrides: str, smoke: bool = True) -> DictConfig:
        base = [
            f"experiment={name}",
            f"paths.cache_dir={smoke_store / 'cache'}",
            f"paths.log_dir={smoke_store / 'logs'}",
            f"paths.output_dir={smoke_store / 'out' / name}",
            f"tracking_uri=sqlite:///{smoke_store / 'mlflow.db'}",
            *(["debug=smoke"] if smoke else []),
            # Smoke runs never resume: one checkpoint per run, not two (ResNet101-1D's is 600 MB)
            *(["callbacks.last_checkpoint=null"] if smoke else []),
        ]
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=[*base, *overrides], return_hydra_config=True)
        dataset = cfg.hydra.runtime.choices.get("dataset")
        if dataset not in SAMPLE_ROOTS:
            raise AssertionError(f"{name}: no smoke data for dataset={dataset}; add it here")
        root = SAMPLE_ROOTS[dataset]
        if root is None:
            generated = {"chapman": "synthetic_chapman", "cpsc2018": "cpsc2018_from_cinc2020"}
            root = (request.getfixturevalue(generated[dataset]) if dataset in generated
                    else synthetic_root)  # fmt: skip
        elif not root.is_dir():
            pytest.skip(f"{root} absent")
        if not any(o.startswith("dataset.root=") for o in overrides):
            with open_dict(cfg):
                cfg.dataset.root = str(root)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            cfg.pop("hydra")
        return cfg

    return _compose


@pytest.fixture
def run_experiment(compose_experiment: Callable[..., DictConfig]) -> Callable[..., dict]:
    """``run_experiment(name, *overrides)``: compose as above, train, test and (where the file
    configures an explainer) explain; returns the run's final metrics."""
    from ecgx.commands.train import train

    def _run(name: str, *overrides: str) -> dict:
        cfg = compose_experiment(name, *overrides)
        metrics = train(cfg)
        assert metrics, f"{name}: no metrics"
        return metrics

    return _run


def sweep_jobs(name: str, *overrides: str) -> list[list[str]]:
    """The jobs of ``ecgx train -m experiment=<name> *overrides``, each as its overrides: the
    file's ``hydra.sweeper.params`` crossed with the command line's sweeps, as Hydra's basic
    sweeper expands them (command-line values win over the file's for the same key)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    # As Hydra's multirun: the file's sweep is read from a config composed without the sweeps.
    fixed = [o.input_line for o in parser.parse_overrides(list(overrides))
             if not o.is_sweep_override()]  # fmt: skip
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={name}", *fixed], return_hydra_config=True)
    params = cfg.hydra.sweeper.get("params") or {}
    given = {o.split("=", 1)[0] for o in overrides}
    lines = [f"{k}={v}" for k, v in params.items() if k not in given]
    parsed = parser.parse_overrides([*lines, f"experiment={name}", *overrides])
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


@pytest.fixture
def latest_run_id(smoke_store: Path) -> Callable[[str], str]:
    """``latest_run_id(experiment_name)``: the id of the newest run of that MLflow experiment
    in the smoke store (e.g. a stage-1 run that a stage-2 experiment starts from)."""
    from mlflow.tracking import MlflowClient

    def _latest(experiment_name: str) -> str:
        client = MlflowClient(f"sqlite:///{smoke_store / 'mlflow.db'}")
        experiment = client.get_experiment_by_name(experiment_name)
        assert experiment is not None, f"no MLflow experiment {experiment_name!r}"
        runs = client.search_runs([experiment.experiment_id], order_by=["start_time DESC"],
                                  max_results=1)  # fmt: skip
        assert runs, f"no run in MLflow experiment {experiment_name!r}"
        return runs[0].info.run_id

    return _latest
