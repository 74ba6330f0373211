"""``ecgx data``: dataset utilities."""

from __future__ import annotations

import argparse

from ecgx.paths import project_root


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="ecgx data")
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser("synth", help="generate the synthetic PTB-XL-layout set")
    synth.add_argument("--root", default=str(project_root() / "data" / "synthetic-ptbxl"))
    synth.add_argument("--n-records", type=int, default=3000)
    synth.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "synth":
        from ecgx.data.synthetic import generate_ptbxl_like

        path = generate_ptbxl_like(args.root, n_records=args.n_records, seed=args.seed)
        print(f"synthetic PTB-XL-layout set at {path}")
