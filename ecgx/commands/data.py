"""``ecgx data``: generate, download and inspect datasets."""

from __future__ import annotations

import argparse
import logging
import sys

from ecgx.errors import EcgxError
from ecgx.paths import project_root


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="ecgx data")
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser("synth", help="generate the synthetic PTB-XL-layout set")
    synth.add_argument("--root", default=str(project_root() / "data" / "synthetic-ptbxl"))
    synth.add_argument("--n-records", type=int, default=3000)
    synth.add_argument("--seed", type=int, default=0)

    from ecgx.datasets.download import PHYSIONET, SOURCES

    down = sub.add_parser("download", help="download a public dataset (resumable, verified)")
    down.add_argument("name", choices=sorted(SOURCES))
    down.add_argument("--data-dir", default=str(project_root() / "data"))
    down.add_argument("--base-url", default=PHYSIONET, help="a PhysioNet mirror")
    down.add_argument("--jobs", type=int, default=4)

    insp = sub.add_parser(
        "inspect",
        help="records and labels per split of a data config; or, given record files or "
        "folders, what each file holds (format, rate, leads, duration, mV range, metadata)",
    )
    insp.add_argument(
        "overrides", nargs="*", help="config overrides (dataset=ptbxl) or record files/folders"
    )
    insp.add_argument("--output", help="write the label matrix (or the file table) to this CSV")
    insp.add_argument("--fs", type=float, help="rate of files that carry none (.npy, .csv, .h5)")
    cache = sub.add_parser(
        "cache",
        help="build the cache of a data config (resumable after a kill); --shard i/N builds "
        "the i-th of N parts (one per machine or job), and a call without it joins them",
    )
    cache.add_argument("overrides", nargs="*", help="config overrides (dataset=mimic_iv_ecg ...)")
    cache.add_argument("--shard", help="i/N: build only the i-th of N contiguous parts")
    cache.add_argument("--workers", type=int, help="processes reading records (default: cores)")
    deli = sub.add_parser(
        "delineation",
        help="score a P/QRS/T delineation against LUDB's cardiologists (onset/offset error in "
        "ms, sensitivity, PPV per wave)",
    )
    deli.add_argument("root", help="a LUDB folder (<n>.hea/.dat and the per-lead annotations)")
    deli.add_argument("--method", choices=["ecgx", "neurokit2", "both"], default="both")
    deli.add_argument("--records", nargs="*", help="record names (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    try:
        if args.command == "synth":
            from ecgx.datasets.synthetic import generate_ptbxl_like

            path = generate_ptbxl_like(args.root, n_records=args.n_records, seed=args.seed)
            print(f"synthetic PTB-XL-layout set at {path}")
        elif args.command == "download":
            from ecgx.datasets.download import download

            report = download(args.name, args.data_dir, args.base_url, args.jobs)
            print(f"{args.name}: {report} in {args.data_dir}/{SOURCES[args.name].folder}")
        elif (
            args.command == "inspect"
            and args.overrides
            and all("=" not in arg for arg in args.overrides)
        ):
            from ecgx.formats.summary import describe

            table = describe(args.overrides, args.fs)
            if args.output:
                table.to_csv(args.output, index=False)
            print(table.to_string(index=False))
        elif args.command == "inspect":
            from ecgx.datasets.inspect import inspect

            print(inspect(args.overrides, args.output))
        elif args.command == "cache":
            from ecgx.datasets.inspect import build_cache

            print(build_cache(args.overrides, args.shard, args.workers))
        elif args.command == "delineation":
            from ecgx.evaluation.delineation import score_ludb

            methods = ["ecgx", "neurokit2"] if args.method == "both" else [args.method]
            for method in methods:
                print(
                    f"{method}:\n{score_ludb(args.root, method, args.records).to_string(index=False)}"
                )
    except EcgxError as err:
        sys.exit(f"ecgx data {args.command}: error: {err}")
