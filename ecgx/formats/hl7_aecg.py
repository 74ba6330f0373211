"""HL7 annotated ECG (aECG, the 2003 HL7 v3 format the FDA takes in drug trials).

Layout: ``AnnotatedECG`` (namespace ``urn:hl7-org:v3``) / ``component`` / ``series`` (code
RHYTHM) / ``component`` / ``sequenceSet`` / ``component`` / ``sequence``: one sequence codes
time (``TIME_ABSOLUTE`` or ``TIME_RELATIVE``, a GLIST whose ``increment`` gives 1/fs), the others
one lead each (``MDC_ECG_LEAD_I`` …) as an ``SLIST_PQ``: value = origin + scale × digits in the
unit of origin and scale (µV in practice). The median beats sit in ``series`` / ``derivation`` /
``derivedSeries`` with the same structure. Age from the subject's ``birthTime`` and the ECG's
``effectiveTime``, sex from ``administrativeGenderCode``. The FDA's own reader (aecg-python) is
not a package on the registry; the structure is small enough to read here.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from xml.etree.ElementTree import Element

import numpy as np

from ecgx.formats import xml_safe
from ecgx.formats.lead_codes import mdc_lead
from ecgx.formats.record import Record, RecordError, check_signal

FORMAT = "HL7 aECG"
_V3 = "{urn:hl7-org:v3}"
_TO_MV = {"uV": 1e-3, "mV": 1.0, "V": 1e3}
_TO_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def is_aecg(root_name: str | None) -> bool:
    return root_name == "AnnotatedECG"


def _children(node: Element, *names: str) -> list[Element]:
    """Descendants along a path of local names, namespace or not."""
    nodes = [node]
    for name in names:
        nodes = [c for n in nodes for c in n if xml_safe.local(c.tag) == name]
    return nodes


def _first(node: Element, *names: str) -> Element | None:
    found = _children(node, *names)
    return found[0] if found else None


def read(path: Path) -> Record:
    """The rhythm series of an aECG file in mV, its leads by MDC code; the median beats (the
    derived series) in ``extra["median"]`` with ``extra["median_leads"]`` and ``median_fs``."""
    root = xml_safe.parse(path)
    if xml_safe.local(root.tag) != "AnnotatedECG":
        raise RecordError(f"{path}: not an HL7 aECG file (root element <{root.tag}>)")
    series = _children(root, "component", "series")
    if not series:
        raise RecordError(f"{path}: no <series> in the AnnotatedECG")
    rhythm = [s for s in series if _code(s) == "RHYTHM"] or series
    signal, leads, fs = _series(rhythm[0], path, "rhythm series")
    check_signal(signal, str(path))
    record = Record(record_id=path.stem, signal=signal, fs=fs, leads=leads, format=FORMAT)
    derived = _children(rhythm[0], "derivation", "derivedSeries")
    if derived:
        median, median_leads, median_fs = _series(derived[0], path, "derived series")
        record.extra.update(median=median, median_leads=median_leads, median_fs=median_fs)
    person = next((e for e in root.iter() if xml_safe.local(e.tag) == "subjectDemographicPerson"),
                  None)  # fmt: skip
    if person is not None:
        gender = _first(person, "administrativeGenderCode")
        record.sex = (
            {"M": 0, "F": 1}.get((gender.get("code") or "").upper()) if gender is not None else None
        )
        record.age = _age(person, root)
    subject = next((e for e in root.iter() if xml_safe.local(e.tag) == "trialSubject"), None)
    ident = _first(subject, "id") if subject is not None else None
    if ident is not None:
        record.patient_id = ident.get("extension") or None
    return record


def _code(node: Element) -> str:
    code = _first(node, "code")
    return (code.get("code") or "") if code is not None else ""


def _quantity(node: Element | None, units: dict[str, float], path: Path, where: str) -> float:
    if node is None:
        raise RecordError(f"{path}: {where} missing")
    unit = node.get("unit") or ""
    if unit not in units:
        raise RecordError(f"{path}: {where} in unit {unit!r}; ecgx reads {sorted(units)}")
    try:
        return float(node.get("value", "")) * units[unit]
    except ValueError as err:
        raise RecordError(f"{path}: {where} value {node.get('value')!r} is not a number") from err


def _series(series: Element, path: Path, kind: str) -> tuple[np.ndarray, tuple[str, ...], float]:
    sets = _children(series, "component", "sequenceSet")
    if not sets:
        raise RecordError(f"{path}: {kind} has no sequenceSet")
    fs, rows, leads = None, [], []
    for sequence in _children(sets[0], "component", "sequence"):
        code = _code(sequence)
        value = _first(sequence, "value")
        if code.startswith("TIME_"):
            step = _quantity(_first(value, "increment") if value is not None else None, _TO_S,
                             path, f"{kind} {code} increment")  # fmt: skip
            if not step > 0:
                raise RecordError(f"{path}: {kind} {code} increment {step} s")
            fs = 1.0 / step
            continue
        lead = mdc_lead(code)
        if lead is None or value is None:
            continue  # non-standard leads (V7, X, …) and annotations are not part of the 12
        where = f"{kind} lead {code}"
        origin = _quantity(_first(value, "origin"), _TO_MV, path, f"{where} origin")
        scale = _quantity(_first(value, "scale"), _TO_MV, path, f"{where} scale")
        digits_node = _first(value, "digits")
        text = digits_node.text if digits_node is not None else None
        try:
            digits = np.array((text or "").split(), dtype=np.float64)
        except ValueError as err:
            raise RecordError(f"{path}: {where}: digits are not all numbers ({err})") from err
        if digits.size == 0:
            raise RecordError(f"{path}: {where}: no digits")
        rows.append(origin + scale * digits)
        leads.append(lead)
    if fs is None:
        raise RecordError(f"{path}: {kind} has no TIME_ sequence with an increment (no rate)")
    if not rows:
        raise RecordError(f"{path}: {kind} holds no MDC_ECG_LEAD_ sequence")
    lengths = {r.size for r in rows}
    if len(lengths) != 1:
        raise RecordError(f"{path}: {kind} leads differ in length ({sorted(lengths)} samples)")
    if len(set(leads)) != len(leads):
        raise RecordError(f"{path}: {kind}: a lead appears twice ({leads})")
    return np.stack(rows).astype(np.float32), tuple(leads), float(fs)


def _date(text: str | None) -> date | None:
    if not text or len(text) < 8 or not text[:8].isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None


def _age(person: Element, root: Element) -> float | None:
    birth_node = _first(person, "birthTime")
    born = _date(birth_node.get("value") if birth_node is not None else None)
    when = _first(root, "effectiveTime")
    point = next((c for c in when if xml_safe.local(c.tag) in ("center", "low")), None) if (
        when is not None) else None  # fmt: skip
    taken = _date(point.get("value") if point is not None else None)
    if born is None or taken is None:
        return None
    return float(taken.year - born.year - ((taken.month, taken.day) < (born.month, born.day)))
