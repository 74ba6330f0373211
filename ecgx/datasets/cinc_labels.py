"""CinC 2020/2021 diagnosis codes -> task classes, decided by the challenges' own scoring tables.

The tables under ``tables/cinc2020`` and ``tables/cinc2021`` are the official
``dx_mapping_scored.csv``, ``dx_mapping_unscored.csv`` and ``weights.csv`` (BSD-2, LICENSE next to
them), shipped byte for byte so the class sets are the challenges' facts rather than retyped lists.

Equivalent codes ("we score 713427006 and 59118001 as the same diagnosis") are merged by OR into
the code ``weights.csv`` lists first: 2021 groups them in its headers (``713427006|59118001``),
2020 marks them with an off-diagonal weight of 1. A class is named by that first code.
"""

from __future__ import annotations

import csv
import io
from functools import cache
from importlib.resources import files

import numpy as np

from ecgx.datasets.base import multi_hot  # noqa: F401 - CinC's label encoding
from ecgx.errors import ConfigValueError

EDITIONS = (2020, 2021)
TASKS = ("scored", "seresnet17", "all")

# The first CinC 2020 release labelled the CPSC 2018 records with CPSC's abbreviations; later
# releases carry these SNOMED codes for the same records (A0001-A0010 checked in both samples;
# PVC, STD and STE are the unscored 164884008, 429622005 and 164931005 there, not 427172004).
CPSC_ABBREVIATIONS: dict[str, str] = {
    "Normal": "426783006", "AF": "164889003", "I-AVB": "270492004", "LBBB": "164909002",
    "RBBB": "59118001", "PAC": "284470004", "PVC": "164884008", "STD": "429622005",
    "STE": "164931005",
}  # fmt: skip

# The SE-ResNet refactor's 17 label columns, in its column order (porting spec 1.6).
SERESNET17: tuple[str, ...] = (
    "426783006", "426177001", "164934002", "427393009", "713426002", "427084000", "59118001",
    "164889003", "59931005", "47665007", "445118002", "39732003", "164890007", "164909002",
    "270492004", "251146004", "284470004",
)  # fmt: skip
# The refactor counts prolonged PR as 1st-degree AV block.
SERESNET17_FOLDS: dict[str, str] = {"164947007": "270492004"}


def parse_dx(text: str) -> list[str]:
    """The codes of a ``#Dx`` value in header order, CPSC abbreviations turned into SNOMED.

    Real headers repeat codes and end with or double the comma; both are dropped here. A token
    that is neither a known abbreviation nor a code is kept as written: it maps to no class.
    """
    codes: list[str] = []
    for token in text.split(","):
        token = token.strip()
        code = CPSC_ABBREVIATIONS.get(token, token)
        if code and code not in codes:
            codes.append(code)
    return codes


def _check_edition(edition: int) -> int:
    if edition not in EDITIONS:
        raise ConfigValueError(f"dataset.edition must be one of {EDITIONS}, got {edition!r}")
    return int(edition)


@cache
def _rows(edition: int, name: str) -> tuple[tuple[str, ...], ...]:
    blob = files("ecgx.datasets").joinpath("tables", f"cinc{edition}", name).read_text("utf-8")
    return tuple(tuple(row) for row in csv.reader(io.StringIO(blob)) if row)


def _code_column(edition: int, name: str) -> list[str]:
    header, *rows = _rows(edition, name)
    # 2020 spells the column "SNOMED CT Code", 2021 "SNOMEDCTCode".
    col = next(i for i, h in enumerate(header) if h.replace(" ", "").lower() == "snomedctcode")
    return [row[col].strip() for row in rows]


@cache
def _weights(edition: int) -> tuple[tuple[tuple[str, ...], ...], np.ndarray]:
    """(code groups in weights.csv order, square weight matrix over those groups)."""
    header, *rows = _rows(edition, "weights.csv")
    labels = [tuple(code.strip() for code in h.split("|")) for h in header[1:]]
    matrix = np.array([[float(v) for v in row[1:]] for row in rows])
    if matrix.shape != (len(labels), len(labels)):
        raise ValueError(f"cinc{edition}/weights.csv is not square: {matrix.shape}")
    # 2020 lists both codes of an equivalent pair on their own; their weight of 1 joins them.
    merged: list[tuple[str, ...]] = []
    keep: list[int] = []
    for i, codes in enumerate(labels):
        equal = [j for j in keep if matrix[i, j] == 1.0]
        if equal:
            j = equal[0]
            merged[keep.index(j)] = merged[keep.index(j)] + codes
        else:
            merged.append(codes)
            keep.append(i)
    return tuple(merged), matrix[np.ix_(keep, keep)]


def equivalent_groups(edition: int) -> list[tuple[str, ...]]:
    """Codes the challenge scores as one diagnosis, first code first (2020: 3, 2021: 4)."""
    groups, _ = _weights(_check_edition(edition))
    return [g for g in groups if len(g) > 1]


def scored_codes(edition: int) -> list[str]:
    """Every scored code of the edition (2020: 27, 2021: 30), equivalents included."""
    return _code_column(_check_edition(edition), "dx_mapping_scored.csv")


def class_map(edition: int, classes: str) -> tuple[list[str], dict[str, str]]:
    """(class names in order, SNOMED code -> class name) for a task.

    ``scored``: the scored classes with equivalents merged, sorted as strings (2020: 24,
    2021: 26). ``seresnet17``: the refactor's 17 codes in its order, each also taking its
    equivalents and 164947007 folded into 270492004. ``all``: every code of both mapping tables,
    equivalents merged, sorted as strings. Codes outside the map belong to no class.
    """
    edition = _check_edition(edition)
    if classes not in TASKS:
        raise ConfigValueError(f"dataset.classes must be one of {TASKS}, got {classes!r}")
    groups, _ = _weights(edition)
    canonical = {code: group[0] for group in groups for code in group}
    if classes == "seresnet17":
        mapping = {code: code for code in SERESNET17}
        for group in groups:
            targets = [code for code in group if code in SERESNET17]
            for code in group if targets else ():
                mapping[code] = targets[0]
        mapping.update(SERESNET17_FOLDS)
        return list(SERESNET17), mapping
    codes = scored_codes(edition)
    if classes == "all":
        codes = codes + _code_column(edition, "dx_mapping_unscored.csv")
    mapping = {code: canonical.get(code, code) for code in codes}
    return sorted(set(mapping.values())), mapping


def challenge_weights(edition: int, names: list[str]) -> np.ndarray:
    """The official weight matrix reordered to ``names`` (each a scored code, any of a group).

    The challenge metric depends on the class order only through this matrix, so scoring with
    it keeps whatever order a task uses.
    """
    groups, matrix = _weights(_check_edition(edition))
    where = {code: i for i, group in enumerate(groups) for code in group}
    missing = [name for name in names if name not in where]
    if missing:
        raise ConfigValueError(f"classes {missing} are not scored in CinC {edition}")
    index = [where[name] for name in names]
    return matrix[np.ix_(index, index)]
