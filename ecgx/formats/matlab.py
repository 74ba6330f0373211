"""MATLAB ``.mat`` files, as the CinC challenges and CPSC 2018 ship their signals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import scipy.io

from ecgx.formats.record import RecordError


def load_mat(path: Path, variable: str, missing: str = "file missing") -> dict[str, Any]:
    """``scipy.io.loadmat`` of one ``variable`` (the dict it returns; the variable may be absent).

    Raises RecordError naming the file: ``"<path>: <missing>"`` when there is no file, "unreadable
    MATLAB file" with scipy's error when it cannot be parsed.
    """
    try:
        return scipy.io.loadmat(str(path), variable_names=[variable])
    except FileNotFoundError as err:
        raise RecordError(f"{path}: {missing}") from err
    except Exception as err:  # scipy raises ValueError, TypeError, MatReadError... for damage
        raise RecordError(f"{path}: unreadable MATLAB file ({type(err).__name__}: {err})") from err
