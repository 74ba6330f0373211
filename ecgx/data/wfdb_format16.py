"""A fast path for the commonest WFDB layout: one ``.dat`` of interleaved 16-bit samples.

``wfdb.rdrecord`` reads any WFDB record but spends most of its ~3 ms per PTB-XL record in Python
bookkeeping; decoding format 16 is one ``np.fromfile`` and a scale. Records in any other layout
(other formats, byte offsets, several files, samples-per-frame) go to ``wfdb.rdrecord``, which
stays the reference: the tests compare both on the real PTB-XL samples.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import wfdb

from ecgx.data.record import RecordError

# "1000.0(0)/mV", "1000/mV", "200(-5)", "" -> gain, baseline
_GAIN = re.compile(r"^(?P<gain>[-+0-9.eE]+)?(?:\((?P<base>[-+0-9]+)\))?(?:/(?P<units>\S+))?$")


class _NotFormat16(Exception):
    pass


def _parse_header(text: str, where: str) -> tuple[str, float, int, list[tuple[float, float, str]]]:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise RecordError(f"{where}: empty header")
    fields = lines[0].split()
    if len(fields) < 4 or "/" in fields[0]:
        raise _NotFormat16  # multi-segment records or no sample count: wfdb handles them
    n_sig, fs, n_samples = int(fields[1]), float(fields[2].split("/")[0]), int(fields[3])
    if len(lines) < 1 + n_sig:
        raise RecordError(f"{where}: header lists {len(lines) - 1} of {n_sig} signals")
    files, signals = set(), []
    for line in lines[1 : 1 + n_sig]:
        parts = line.split()
        if len(parts) < 9 or parts[1] != "16":
            raise _NotFormat16
        match = _GAIN.match(parts[2])
        if match is None:
            raise _NotFormat16
        gain = float(match["gain"] or 200.0)  # WFDB's default gain
        base = float(match["base"]) if match["base"] else float(parts[4])  # else ADC zero
        files.add(parts[0])
        signals.append((gain or 200.0, base, parts[8]))
    if len(files) != 1:
        raise _NotFormat16
    return files.pop(), fs, n_samples, signals


def read_record(path: str | Path) -> tuple[np.ndarray, float, list[str]]:
    """(signal (leads, samples) float32 in physical units, fs, signal names) of a WFDB record."""
    path = Path(path)
    header = path.with_suffix(".hea")
    where = str(path)
    try:
        text = header.read_text()
    except FileNotFoundError as err:
        raise RecordError(f"{where}: header file missing ({header})") from err
    except (UnicodeDecodeError, OSError) as err:
        raise RecordError(f"{where}: header is not readable text ({err})") from err
    try:
        dat_name, fs, n_samples, signals = _parse_header(text, where)
    except (_NotFormat16, ValueError):
        return _read_with_wfdb(path)
    dat = path.parent / dat_name
    if not dat.is_file():
        raise RecordError(f"{where}: data file missing ({dat})")
    n_sig = len(signals)
    expected = n_samples * n_sig * 2
    size = dat.stat().st_size
    if size != expected:
        raise RecordError(
            f"{where}: {dat.name} holds {size} bytes, the header says {n_samples} samples × "
            f"{n_sig} signals × 2 bytes = {expected} (truncated or mismatched)"
        )
    digital = np.fromfile(dat, dtype="<i2").reshape(n_samples, n_sig).T.astype(np.float64)
    gain = np.array([s[0] for s in signals])[:, None]
    base = np.array([s[1] for s in signals])[:, None]
    # wfdb marks missing samples with -32768 in format 16; they become NaN as in wfdb.
    physical = np.where(digital == -32768, np.nan, (digital - base) / gain)
    return physical.astype(np.float32), fs, [s[2] for s in signals]


def _read_with_wfdb(path: Path) -> tuple[np.ndarray, float, list[str]]:
    try:
        rec = wfdb.rdrecord(str(path))
    except FileNotFoundError as err:
        raise RecordError(f"{path}: record file missing ({err.filename})") from err
    except Exception as err:  # wfdb raises bare ValueErrors etc. for damaged files
        raise RecordError(f"{path}: unreadable WFDB record ({err})") from err
    if rec.p_signal is None:
        raise RecordError(f"{path}: no physical signal")
    return rec.p_signal.T.astype(np.float32), float(rec.fs), list(rec.sig_name)
