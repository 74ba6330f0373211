"""``ecgx bench suite=ingest``: records/s of building the signal cache from the original files.

Three ways over the same files, in the same run:

- **ecgx**: the cache build of ``ecgx train`` (the composed ``data`` node instantiated, then
  ``prepare_data()``: metadata, reader, offline transforms, memory-mapped cache, reopened);
- **seed**: what the seeds do, ``wfdb.rdsamp`` in a plain loop, one record at a time;
- **floor**: the raw decode, the header's gains read and the samples decoded and scaled
  (``np.fromfile`` for format 16, ``scipy.io.loadmat`` for CinC ``.mat``), nothing else.

Sets: PTB-XL at 100 and 500 Hz and CinC 2020 (CPSC) ``.mat`` records, from the real samples in
``samples_dir`` replicated under new names to ``records`` each (every file a separate copy, so
nothing is read twice from one inode), or from ecgx's synthetic PTB-XL-layout set where the
samples are absent; plus a synthetic set of ``scaling_records`` records (not under quick).
The page cache is warm throughout: the figures are decode and bookkeeping, not disk.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from ecgx.bench.core import Context, Figure, rates
from ecgx.data.cache import PARALLEL_MIN_RECORDS, build_workers, usable_cores
from ecgx.errors import ConfigValueError, MissingPathError

log = logging.getLogger(__name__)

SUITE = "ingest"
SETS = ("ptbxl100", "ptbxl500", "cinc")
PTBXL_DATABASE = "ptbxl_database.csv"
PTBXL_STATEMENTS = "scp_statements.csv"


@dataclass
class IngestSet:
    """One set of records on disk and how each way reads it."""

    name: str
    overrides: list[str]  # train-config overrides that select its reader (dataset=..., root)
    records: list[Path]  # record paths without suffix (wfdb.rdsamp's and the floor's input)
    kind: str  # "wfdb" (format 16 .dat) | "mat" (CinC MATLAB v4)
    origin: str  # "real" | "synthetic"
    note: str = ""
    params: dict[str, Any] = field(default_factory=dict)


# -- the three ways -----------------------------------------------------------------------------
def seed_way(records: list[Path]) -> list[np.ndarray]:
    """The seeds' loader: ``wfdb.rdsamp`` record after record."""
    import wfdb

    return [wfdb.rdsamp(str(p))[0] for p in records]


def floor_wfdb(records: list[Path]) -> list[np.ndarray]:
    """Format 16 decoded with nothing around it: gains and baselines from the header, the
    ``.dat`` through ``np.fromfile``, scaled to float32 mV."""
    out = []
    for p in records:
        lines = p.with_suffix(".hea").read_text().splitlines()
        n_sig = int(lines[0].split()[1])
        gain, base = _gains(lines[1 : 1 + n_sig])
        digital = np.fromfile(p.with_suffix(".dat"), dtype="<i2").reshape(-1, n_sig)
        out.append(((digital - base) / gain).astype(np.float32))
    return out


def floor_mat(records: list[Path]) -> list[np.ndarray]:
    """CinC ``.mat`` decoded with nothing around it: header gains, ``scipy.io.loadmat``."""
    import scipy.io

    out = []
    for p in records:
        lines = p.with_suffix(".hea").read_text().splitlines()
        n_sig = int(lines[0].split()[1])
        gain, base = _gains(lines[1 : 1 + n_sig])
        val = scipy.io.loadmat(str(p.with_suffix(".mat")), variable_names=["val"])["val"]
        out.append(((val - base[:, None]) / gain[:, None]).astype(np.float32))
    return out


def _gains(lines: list[str]) -> tuple[np.ndarray, np.ndarray]:
    # "1000.0(0)/mV" or "1000/mV": gain, then the baseline (ADC zero when not given).
    gain, base = [], []
    for line in lines:
        parts = line.split()
        g, _, rest = parts[2].split("/")[0].partition("(")
        gain.append(float(g))
        base.append(float(rest.rstrip(")")) if rest else float(parts[4]))
    return np.array(gain), np.array(base)


# -- sets ---------------------------------------------------------------------------------------
def samples_dir(cfg: DictConfig) -> Path:
    """``samples_dir`` of the config, else ``../shared/ecg-samples`` beside the checkout."""
    from ecgx.paths import project_root

    value = cfg.get("samples_dir")
    return Path(value).expanduser() if value else project_root().parent / "shared/ecg-samples"


def replicate_ptbxl(source: Path, dest: Path, n: int, sampling_rates: tuple[int, ...]) -> Path:
    """A PTB-XL folder of ``n`` records cycling over ``source``'s, each under a new ecg_id
    with its own copy of the files (headers renamed) and a matching database row."""
    table = pd.read_csv(source / PTBXL_DATABASE)
    if table.empty:
        raise MissingPathError(f"{source / PTBXL_DATABASE}: no records to replicate")
    rows = table.iloc[np.arange(n) % len(table)].reset_index(drop=True)
    rows["ecg_id"] = np.arange(1, n + 1)
    columns = {100: ("filename_lr", "lr"), 500: ("filename_hr", "hr")}
    for column, suffix in columns.values():
        rows[column] = [_ptbxl_name(i, suffix) for i in rows["ecg_id"]]
    for rate in sampling_rates:
        column = columns[rate][0]
        for old, new in zip(table[column].iloc[np.arange(n) % len(table)], rows[column]):
            _copy_record(source / old, dest / new, ".dat")
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / PTBXL_STATEMENTS, dest / PTBXL_STATEMENTS)
    rows.to_csv(dest / PTBXL_DATABASE, index=False)
    return dest


def _ptbxl_name(ecg_id: int, suffix: str) -> str:
    rate = 100 if suffix == "lr" else 500
    return f"records{rate}/{ecg_id // 1000 * 1000:05d}/{ecg_id:05d}_{suffix}"


def replicate_cinc(source: Path, dest: Path, n: int) -> Path:
    """``n`` CinC records cycling over the ``*.hea`` + ``.mat`` of ``source``, renamed
    ``<source prefix><number>`` so the reader still sees their source."""
    headers = sorted(p for p in source.glob("*.hea") if not p.name.startswith("."))
    if not headers:
        raise MissingPathError(f"{source}: no CinC records (*.hea) to replicate")
    dest.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        old = headers[i % len(headers)].with_suffix("")
        prefix = re.match(r"[A-Za-z]*", old.name).group(0)
        _copy_record(old, dest / f"{prefix}{i + 1:06d}", ".mat")
    return dest


def _copy_record(old: Path, new: Path, data_suffix: str) -> None:
    new.parent.mkdir(parents=True, exist_ok=True)
    text = old.with_suffix(".hea").read_text()
    # The record line and every signal line start with the record's (or its file's) name.
    text = re.sub(rf"^{re.escape(old.name)}(?=[\s.])", new.name, text, flags=re.M)
    new.with_suffix(".hea").write_text(text)
    shutil.copyfile(old.with_suffix(data_suffix), new.with_suffix(data_suffix))


def cinc_from_ptbxl(source: Path, dest: Path, n: int) -> Path:
    """CinC-format records (``.hea`` + MATLAB v4 ``val``) from a PTB-XL folder's 500 Hz
    records: the CinC set when the real samples are absent."""
    import scipy.io

    from ecgx.formats.wfdb_format16 import read_record

    table = pd.read_csv(source / PTBXL_DATABASE)
    dest.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        row = table.iloc[i % len(table)]
        signal, fs, names = read_record(source / row["filename_hr"])
        adu = np.rint(signal.astype(np.float64) * 1000).astype(np.int16)
        name = f"A{i + 1:06d}"
        scipy.io.savemat(str(dest / f"{name}.mat"), {"val": adu}, format="4")
        lines = [f"{name} {len(names)} {int(fs)} {adu.shape[1]}"]
        lines += [f"{name}.mat 16+24 1000/mV 16 0 {a[0]} 0 0 {lead}" for a, lead in zip(adu, names)]
        lines += [f"#Age: {row['age']}", "#Sex: Male", "#Dx: 426783006"]
        (dest / f"{name}.hea").write_text("\n".join(lines) + "\n")
    return dest


# -- the suite ----------------------------------------------------------------------------------
def run(cfg: DictConfig, ctx: Context) -> list[Figure]:
    """Every set of ``cfg.sets``, then the scaling set: seed, floor and ecgx records/s."""
    sizes = _sizes(cfg, ctx)
    unknown = [s for s in cfg.sets if s not in SETS]
    if unknown:
        raise ConfigValueError(f"ingest.sets: unknown {unknown}, choose from {list(SETS)}")
    work = ctx.workdir / SUITE
    figures: list[Figure] = []
    import ecgx.data.datamodule  # noqa: F401 - Lightning and torch imported before the freeze

    with frozen_gc():
        for name in cfg.sets:
            ingest_set = prepare_set(str(name), samples_dir(cfg), work, sizes)
            log.info("ingest: %s, %d records (%s)", name, len(ingest_set.records),
                     ingest_set.origin)  # fmt: skip
            figures += measure_set(ingest_set, ctx, sizes, compare_workers=cfg.compare_workers)
            shutil.rmtree(work / "cache", ignore_errors=True)
        if sizes["scaling_records"] and not ctx.quick:
            figures += measure_scaling(
                work, ctx, sizes, "ptbxl100" in cfg.sets, cfg.compare_workers
            )
    return figures


@contextmanager
def frozen_gc() -> Iterator[None]:
    """The objects alive now (torch, Lightning: millions) left out of every collection, so
    the ``gc.collect()`` before each timed repeat takes milliseconds instead of a second."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _sizes(cfg: DictConfig, ctx: Context) -> dict[str, int]:
    keys = ("records", "seed_records", "synthetic_base", "scaling_records", "scaling_base")
    sizes = {k: int(cfg[k]) for k in keys}
    if ctx.quick:
        sizes.update({k: int(v) for k, v in cfg.quick.items()})
    for key in ("records", "seed_records", "synthetic_base"):
        if sizes[key] < 1:
            raise ConfigValueError(f"ingest.{key}={sizes[key]}: must be at least 1")
    return sizes


def prepare_set(
    name: str,
    samples: Path,
    work: Path,
    sizes: dict[str, int],
    sampling_rates: tuple[int, ...] = (100, 500),
) -> IngestSet:
    """The set's records in ``work``: the real samples replicated, else synthetic ones
    (PTB-XL sets: the files of ``sampling_rates``)."""
    n = sizes["records"]
    if name.startswith("ptbxl"):
        rate = int(name[len("ptbxl") :])
        real = samples / "ptbxl"
        if (real / PTBXL_DATABASE).is_file():
            origin, source = "real", real
        else:
            origin, source = "synthetic", _synthetic_ptbxl(work, sizes["synthetic_base"])
        root = work / f"ptbxl-{origin}"
        # Reused by the next set of the same run when it has the records and rates it needs.
        wanted = [
            root / f"{_ptbxl_name(n, 'lr' if r == 100 else 'hr')}.dat" for r in sampling_rates
        ]
        if not all(p.is_file() for p in wanted) or len(pd.read_csv(root / PTBXL_DATABASE)) != n:
            shutil.rmtree(root, ignore_errors=True)
            replicate_ptbxl(source, root, n, sampling_rates)
        table = pd.read_csv(root / PTBXL_DATABASE)
        column = "filename_lr" if rate == 100 else "filename_hr"
        return IngestSet(
            name,
            ["dataset=ptbxl", f"dataset.root={root}", f"dataset.sampling_rate={rate}"],
            [root / f for f in table[column]],
            "wfdb",
            origin,
            note=f"{origin} PTB-XL {rate} Hz records from {source}, replicated to {n}",
            params={"records": n, "data": origin, "source": str(source)},
        )
    real = samples / "cinc2020_cpsc"
    if any(real.glob("*.hea")):
        origin, source = "real", real
    else:
        origin = "synthetic"
        source = work / "cinc-synthetic-base"
        if not any(source.glob("*.hea")):
            base = _synthetic_ptbxl(work, sizes["synthetic_base"])
            cinc_from_ptbxl(base, source, sizes["synthetic_base"])
    root = work / f"cinc-{origin}"
    shutil.rmtree(root, ignore_errors=True)
    replicate_cinc(source, root, n)
    return IngestSet(
        name,
        # transform=default: the reading cost alone, not cinc2020's default band-pass + resample
        ["dataset=cinc2020", f"dataset.root={root}", "transform=default"],
        sorted(p.with_suffix("") for p in root.glob("*.hea")),
        "mat",
        origin,
        note=f"{origin} CinC .hea + .mat records (500 Hz, 10-60 s) from {source}, "
        f"replicated to {n}",
        params={"records": n, "data": origin, "source": str(source)},
    )


def _synthetic_ptbxl(work: Path, n: int) -> Path:
    from ecgx.datasets.synthetic import generate_ptbxl_like

    return generate_ptbxl_like(work / "synthetic-base", n_records=n, seed=0,
                               sampling_rates=(100, 500))  # fmt: skip


def measure_set(
    s: IngestSet, ctx: Context, sizes: dict[str, int], compare_workers: bool = False
) -> list[Figure]:
    """seed, floor and ecgx records/s on one set, ecgx as ratios to both."""
    n = len(s.records)
    seed_paths = s.records[: sizes["seed_records"]]
    floor = floor_wfdb if s.kind == "wfdb" else floor_mat
    cache = ctx.workdir / SUITE / "cache"
    build = EcgxBuild(s.overrides, cache, n)
    ways = {
        "seed": lambda: _seconds(seed_way, seed_paths),
        "floor": lambda: _seconds(floor, s.records),
        "ecgx": build.once,
    }
    other = _other_workers(n, build.workers) if compare_workers else None
    if other:
        ways[other[0]] = EcgxBuild(s.overrides, cache, n, workers=other[1]).once
    seed_way(seed_paths[:1])  # imports and first calls out of the timing (a whole pass is long)
    seconds = interleaved(ways, ctx.repeats, warmup=set(ways) - {"seed"})
    how = "np.fromfile" if s.kind == "wfdb" else "scipy.io.loadmat"
    params = {**s.params, "build_workers": build.workers}
    ecgx = rates(n, seconds["ecgx"])
    figures = [
        Figure(SUITE, f"{s.name} seed", "records/s", rates(len(seed_paths), seconds["seed"]),
               note=f"wfdb.rdsamp in a loop over {len(seed_paths)} of the records; {s.note}",
               params={**s.params, "records": len(seed_paths)}),
        Figure(SUITE, f"{s.name} floor", "records/s", rates(n, seconds["floor"]),
               note=f"header gains + {how}, scaled to float32, nothing else", params=s.params),
        Figure(SUITE, f"{s.name} ecgx", "records/s", ecgx, ratio_to=f"{s.name} seed",
               target=">= 5", note=f"ecgx's cache build (metadata, reader, memory-mapped cache, "
               f"reopened) in {build.workers} process(es)", params=params),
        Figure(SUITE, f"{s.name} ecgx vs floor", "records/s", ecgx,
               ratio_to=f"{s.name} floor", target=">= 0.5", params=params),
    ]  # fmt: skip
    if other:
        figures.append(_other_figure(s.name, other, rates(n, seconds[other[0]]), s.params))
    return figures


def _other_workers(n_records: int, workers: int) -> tuple[str, int] | None:
    """The build with the other worker count to compare with: one process where ecgx uses a
    pool at this size, a pool of every core where it reads in-process (None: no other)."""
    other = build_workers(n_records, 1 if workers > 1 else usable_cores())
    if other == workers:
        return None
    return f"ecgx {other} process" + ("es" if other > 1 else ""), other


def _other_figure(
    name: str, other: tuple[str, int], values: list[float], params: dict[str, Any]
) -> Figure:
    return Figure(SUITE, f"{name} {other[0]}", "records/s", values, ratio_to=f"{name} ecgx",
                  note=f"the same build with ECGX_BUILD_WORKERS={other[1]} (ecgx's default "
                  f"uses a pool from {PARALLEL_MIN_RECORDS:,} records)",
                  params={**params, "build_workers": other[1]})  # fmt: skip


def _seconds(fn: Callable[[list[Path]], Any], records: list[Path]) -> float:
    t0 = time.perf_counter()
    fn(records)
    return time.perf_counter() - t0


def interleaved(
    ways: dict[str, Callable[[], float]], repeats: int, warmup: set[str] = frozenset()
) -> dict[str, list[float]]:
    """Seconds of each way (a call returns its own timing) over ``repeats`` rounds, one call
    of every way per round: a machine whose load drifts shifts all of them alike, so their
    ratios hold better than those of one block of repeats after another. The ways in
    ``warmup`` run once first, untimed."""
    for name in warmup & set(ways):
        ways[name]()
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(repeats):
        for name, fn in ways.items():
            gc.collect()
            seconds[name].append(fn())
    return seconds


def measure_scaling(
    work: Path, ctx: Context, sizes: dict[str, int], baseline: bool, compare_workers: bool = False
) -> list[Figure]:
    """ecgx and the floor on a synthetic PTB-XL 100 Hz set of ``scaling_records`` records."""
    from ecgx.datasets.synthetic import generate_ptbxl_like

    n = sizes["scaling_records"]
    base = generate_ptbxl_like(work / "scaling-base", n_records=sizes["scaling_base"], seed=1,
                               sampling_rates=(100,))  # fmt: skip
    root = replicate_ptbxl(base, work / "scaling", n, (100,))
    records = [root / f for f in pd.read_csv(root / PTBXL_DATABASE)["filename_lr"]]
    name = f"synthetic100 x{n}"
    overrides = ["dataset=ptbxl", f"dataset.root={root}", "dataset.sampling_rate=100"]
    build = EcgxBuild(overrides, work / "cache", n)
    ways = {"floor": lambda: _seconds(floor_wfdb, records), "ecgx": build.once}
    other = _other_workers(n, build.workers) if compare_workers else None
    if other:
        ways[other[0]] = EcgxBuild(overrides, work / "cache", n, workers=other[1]).once
    seconds = interleaved(ways, ctx.repeats, warmup=set(ways))
    params = {"records": n, "data": "synthetic", "distinct": sizes["scaling_base"],
              "build_workers": build.workers}  # fmt: skip
    ecgx = rates(n, seconds["ecgx"])
    figures = [
        Figure(SUITE, f"{name} floor", "records/s", rates(n, seconds["floor"]), params=params),
        Figure(SUITE, f"{name} ecgx", "records/s", ecgx, ratio_to=f"{name} floor",
               target=">= 0.5", params=params,
               note=f"{sizes['scaling_base']} synthetic records copied to {n} files"),
    ]  # fmt: skip
    if other:
        figures.append(_other_figure(name, other, rates(n, seconds[other[0]]), params))
    if baseline:
        figures.append(
            Figure(SUITE, f"{name} ecgx vs ptbxl100", "records/s", ecgx,
                   ratio_to="ptbxl100 ecgx", params=params,
                   note="per-record speed at this size over that of the smaller set (1: linear)")
        )  # fmt: skip
    shutil.rmtree(work / "scaling", ignore_errors=True)
    return figures


class EcgxBuild:
    """The cache build of ``ecgx train``: ``conf/train.yaml`` composed with the set's reader,
    its ``data`` node instantiated, ``prepare_data()`` timed (each time into a fresh cache)."""

    def __init__(
        self, overrides: list[str], cache_root: Path, n_records: int, workers: int | None = None
    ) -> None:
        from hydra import compose, initialize_config_dir

        from ecgx.paths import config_dir, project_root

        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            self.cfg = compose("train", overrides=[*overrides, "transform=default",
                                                   f"paths.root_dir={project_root()}"])  # fmt: skip
        self.cache_root = cache_root
        self.n_records = n_records
        self.env = {} if workers is None else {"ECGX_BUILD_WORKERS": str(workers)}
        with _environ(self.env):
            self.workers = build_workers(n_records)

    def once(self) -> float:
        """Seconds of one build from scratch (checked to hold the set's records)."""
        from hydra.utils import instantiate

        folder = self.cache_root / f"build-{time.monotonic_ns()}"
        datamodule = instantiate(self.cfg.data, cache_dir=str(folder))
        with _environ(self.env):
            t0 = time.perf_counter()
            datamodule.prepare_data()
            seconds = time.perf_counter() - t0
        cache = datamodule.cache
        if cache is None or len(cache) != self.n_records:
            raise RuntimeError(f"ingest: the build in {folder} holds "
                               f"{0 if cache is None else len(cache)} of {self.n_records} records")  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)
        return seconds


class _environ:
    """Environment variables set for the duration of a ``with`` block."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values, self.saved = values, {}

    def __enter__(self) -> None:
        self.saved = {k: os.environ.get(k) for k in self.values}
        os.environ.update(self.values)

    def __exit__(self, *exc: object) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
