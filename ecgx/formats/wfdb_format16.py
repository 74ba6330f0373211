"""A fast path for the commonest WFDB layout: one ``.dat`` of interleaved 16-bit samples.

``wfdb.rdrecord`` reads any WFDB record but spends most of its ~3 ms per PTB-XL record in Python
bookkeeping; decoding format 16 is one ``np.fromfile`` and a scale. Records in any other layout
(other formats, byte offsets, several files, samples-per-frame) go to ``wfdb.rdrecord``, which
stays the reference: the tests compare both on the real PTB-XL samples. Samples are scaled in
float32 where that provably equals wfdb's float64 scaling rounded to float32 (integral baselines,
float32-exact gains; tested on every 16-bit value), else in float64 as wfdb does.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import wfdb

from ecgx.formats.record import RecordError

# "1000.0(0)/mV", "1000/mV", "200(-5)", "" -> gain, baseline
_GAIN = re.compile(r"^(?P<gain>[-+0-9.eE]+)?(?:\((?P<base>[-+0-9]+)\))?(?:/(?P<units>\S+))?$")


class _NotFormat16(Exception):
    pass


# A set holds one gain field per lead, mostly the same few strings ("1000.0(0)/mV"): each is
# parsed once per process.
_GAIN_FIELDS: dict[tuple[str, str], tuple[float, float, bool]] = {}


def _gain_field(text: str, adc_zero: str) -> tuple[float, float, bool]:
    """(gain, baseline, whether the float32 decode is exact for them) of a signal line."""
    key = (text, adc_zero)
    found = _GAIN_FIELDS.get(key)
    if found is None:
        match = _GAIN.match(text)
        if match is None:
            raise _NotFormat16
        # An absent gain is WFDB's default 200. A written 0 WFDB also reads as 200, but in a
        # 12-lead header it is damage (every real one writes its gain): 0.0 here, refused by
        # _parse_header with the lead named, instead of a signal scaled by a guessed gain.
        gain = float(match["gain"]) if match["gain"] else 200.0
        base = float(match["base"]) if match["base"] else float(adc_zero)  # else ADC zero
        found = (gain, base, _float32_exact(gain, base))
        if len(_GAIN_FIELDS) < 4096:
            _GAIN_FIELDS[key] = found
    return found


def _float32_exact(gain: float, base: float) -> bool:
    """Whether (digital - base) / gain in float32 equals the float64 result rounded to float32.

    digital - base is then an integer below 2**24, exact in float32, and the gain is a normal
    float32 number, so the float32 division is one correctly rounded operation; rounding the
    exact quotient to float64 first and then to float32 gives the same value because
    53 >= 2 * 24 + 2 (double rounding is innocuous for division).
    """
    g = np.float32(gain)
    return bool(
        float(g) == gain
        and np.isfinite(g)
        and 2.0**-100 < abs(gain) < 2.0**100
        and base == int(base)
        and abs(base) <= 2**23
    )


def _parse_header(
    text: str, where: str
) -> tuple[str, float, int, list[tuple[float, float, bool, str]]]:
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
        files.add(parts[0])
        signals.append((*_gain_field(parts[2], parts[4]), parts[8]))
        if signals[-1][0] == 0:
            raise RecordError(f"{where}: lead {parts[8]} has ADC gain 0 ({parts[2]!r})")
    if len(files) != 1:
        raise _NotFormat16
    return files.pop(), fs, n_samples, signals


def read_record(path: str | Path) -> tuple[np.ndarray, float, list[str]]:
    """(signal (leads, samples) float32 in physical units, fs, signal names) of a WFDB record."""
    # Plain strings rather than Path objects: this runs once per record of a cache build.
    where = str(path if isinstance(path, Path) else Path(path))
    stem = os.path.splitext(where)[0]  # as Path.with_suffix
    header = stem + ".hea"
    try:
        with open(header, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError as err:
        raise RecordError(f"{where}: header file missing ({header})") from err
    except (UnicodeDecodeError, OSError) as err:
        raise RecordError(f"{where}: header is not readable text ({err})") from err
    try:
        dat_name, fs, n_samples, signals = _parse_header(text, where)
    except RecordError:
        raise  # a fault found in the header (a RecordError is a ValueError too)
    except (_NotFormat16, ValueError):
        return _read_with_wfdb(Path(where))
    if os.path.splitext(dat_name)[0] != os.path.basename(stem):
        # WFDB allows any name, but a record whose header names another record's data file
        # would silently read that record's signal under this one's labels.
        raise RecordError(
            f"{where}: the header names data file {dat_name!r}, not "
            f"{os.path.basename(stem)}.dat (another record's signal?)"
        )
    dat = os.path.join(os.path.dirname(stem), dat_name)
    n_sig = len(signals)
    expected = n_samples * n_sig * 2
    try:
        # One open + fstat instead of is_file + stat + a second open: per-record syscalls
        # are a visible share of a 100 Hz record's cost.
        with open(dat, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size != expected:
                raise RecordError(
                    f"{where}: {os.path.basename(dat)} holds {size} bytes, the header says "
                    f"{n_samples} samples × {n_sig} signals × 2 bytes = {expected} "
                    "(truncated or mismatched)"
                )
            raw = np.fromfile(fh, dtype="<i2")
    except (FileNotFoundError, IsADirectoryError) as err:
        raise RecordError(f"{where}: data file missing ({dat})") from err
    names = [s[3] for s in signals]
    digital = raw.reshape(n_samples, n_sig).T
    # wfdb marks missing samples with -32768 in format 16; they become NaN as in wfdb.
    if raw.size and raw.min() > -32768 and all(s[2] for s in signals):
        # Same values as the float64 path below (see _float32_exact) at a fraction of its cost;
        # the transposing cast writes (leads, samples) rows directly.
        x = digital.astype(np.float32, order="C")
        gains = {s[0] for s in signals}
        if any(s[1] for s in signals):
            x -= np.array([[s[1]] for s in signals], dtype=np.float32)
        if len(gains) == 1:
            x /= np.float32(gains.pop())
        else:
            x /= np.array([[s[0]] for s in signals], dtype=np.float32)
        return x, fs, names
    gain = np.array([s[0] for s in signals])[:, None]
    base = np.array([s[1] for s in signals])[:, None]
    physical = digital.astype(np.float64)
    physical = np.where(physical == -32768, np.nan, (physical - base) / gain)
    return physical.astype(np.float32), fs, names


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
