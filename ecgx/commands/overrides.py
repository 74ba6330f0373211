"""Command-line overrides checked before Hydra composes: a mistyped group option is named with
the closest option (Hydra lists every option, which for ``model=`` is 26 names to read)."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from ecgx.errors import ConfigValueError
from ecgx.paths import config_dir

# A plain option name; sweeps (a,b), globs, interpolations and Hydra functions are left to Hydra.
_PLAIN = re.compile(r"[\w./-]+")


def group_options(group: str, root: Path | None = None) -> list[str]:
    """The options of a config group: its YAML files, nested ones as ``study/name``."""
    folder = (root or config_dir()) / group
    return sorted(
        str(p.relative_to(folder).with_suffix(""))
        for p in folder.rglob("*.yaml")
        if not p.name.startswith("_")
    )


def check_group_choices(args: list[str], root: Path | None = None) -> None:
    """Raise on ``group=option`` where the group exists and the option does not."""
    root = root or config_dir()
    for arg in args:
        key, sep, value = arg.partition("=")
        group = key.lstrip("+~")
        if not sep or not value or value == "null" or not _PLAIN.fullmatch(value):
            continue
        if "." in group or not (root / group).is_dir():
            continue  # a key (model.lr=…), not a group
        options = group_options(group, root)
        if value in options:
            continue
        close = difflib.get_close_matches(value, options, n=1, cutoff=0.6)
        hint = f"did you mean {group}={close[0]}? " if close else ""
        shown = f"options: {', '.join(options)}" if len(options) <= 30 else (
            f"{len(options)} options, listed by ls -R conf/{group}")  # fmt: skip
        raise ConfigValueError(f"{group}={value}: no such option in conf/{group}/. {hint}({shown})")
