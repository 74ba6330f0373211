"""SCP-ECG (EN 1064 / ISO 11073-91064) files from carts and Holters, versions 1.x to 2.x.

A file is a CRC and length, then sections, each a 16-byte header (CRC-CCITT of the rest of the
section, id, length, versions) and a body. Section 0 points to the others; section 1 holds the
patient (age, sex, id), 2 the Huffman tables, 3 the leads (id, first and last sample), 4 the
reference-beat zones, 5 the reference (median) beat, 6 the rhythm: amplitude unit (nV per
count), sample interval (µs), the difference encoding (none, first, second) and the bytes of
each lead. Read here: every CRC, raw and Huffman-coded leads with the standard's default table
(custom tables are refused by name), first and second differences. Two features no public
sample in reach uses are refused by name rather than decoded unchecked: reference-beat
subtraction (the rhythm stored as a residual to which section 5's beat is added back around
every QRS) and bimodal compression (decimated samples between QRS complexes). No maintained
Python package reads SCP-ECG (the C/C# readers are not on PyPI), hence this module.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecgx.formats.lead_codes import scp_lead
from ecgx.formats.record import Record, RecordError, check_signal

FORMAT = "SCP-ECG"
MAX_BYTES = 64 * 1024 * 1024  # a 24 h 12-lead Holter in SCP-ECG is well under this
_DEFAULT_TABLE = 19999  # section 2's marker for the standard's default Huffman table


def is_scp(head: bytes) -> bool:
    """Whether the first bytes are an SCP-ECG file: section 0's header carries ``SCPECG``."""
    return len(head) >= 22 and head[16:22] == b"SCPECG"


def crc_ccitt(data: bytes) -> int:
    """CRC-CCITT (polynomial 0x1021, initial 0xFFFF) as SCP-ECG computes it; table-driven."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[(crc >> 8) ^ byte]
    return crc


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = _crc_table()


# The default Huffman table (standard, Annex C): 0 -> "0"; ±k (k = 1..8) -> k ones, a zero, a
# sign bit (0 = +); nine ones and a zero, then an 8-bit value; ten ones, then a 16-bit value.
def _default_table() -> dict[tuple[int, int], tuple[int, int]]:
    """{(code length, code): (value, bits of a following literal, 0 if none)}."""
    table = {(1, 0b0): (0, 0)}
    for k in range(1, 9):
        ones = (1 << k) - 1
        table[(k + 2, ones << 2)] = (k, 0)
        table[(k + 2, (ones << 2) | 1)] = (-k, 0)
    table[(10, 0b1111111110)] = (0, 8)
    table[(10, 0b1111111111)] = (0, 16)
    return table


_TABLE = _default_table()


@dataclass
class _Lead:
    first: int
    last: int
    ident: int


def read(path: Path) -> Record:
    """The rhythm (section 6) of an SCP-ECG file in mV, leads named by their SCP ids; the
    reference beat (section 5), where present, in ``extra["median"]``."""
    data = _read_bytes(path)
    sections = _sections(data, path)
    for required in (3, 6):
        if required not in sections:
            raise RecordError(f"{path}: SCP-ECG section {required} missing (no "
                              f"{'lead definitions' if required == 3 else 'rhythm data'})")  # fmt: skip
    huffman = _huffman(sections.get(2), path)
    leads, subtraction = _leads(sections[3], path)
    qrs = _qrs_count(sections.get(4))
    if subtraction and qrs:
        raise RecordError(f"{path}: SCP-ECG reference-beat subtraction ({qrs} QRS zones in "
                          "section 4) is not supported: the rhythm is stored as a residual")  # fmt: skip
    rhythm, fs, avm = _samples(sections[6], path, 6, leads, huffman, None)
    names = tuple(scp_lead(lead.ident) for lead in leads)
    if len(set(names)) != len(names):
        raise RecordError(f"{path}: a lead id appears twice in section 3 ({names})")
    check_signal(rhythm, str(path))
    record = Record(record_id=path.stem, signal=rhythm, fs=fs, leads=names, format=FORMAT)
    record.extra.update(amplitude_nv=avm, sample_interval_us=round(1e6 / fs))
    if 5 in sections and 4 in sections:
        beat_ms = struct.unpack_from("<H", sections[4], 16)[0]
        median, median_fs, _ = _samples(sections[5], path, 5, leads, huffman, beat_ms)
        record.extra.update(median=median, median_leads=names, median_fs=median_fs)
    if 1 in sections:
        _patient(sections[1], record)
    return record


def _read_bytes(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise RecordError(f"{path}: {size} bytes, over the {MAX_BYTES}-byte limit for SCP-ECG")
        return path.read_bytes()
    except FileNotFoundError as err:
        raise RecordError(f"{path}: file missing") from err


def _sections(data: bytes, path: Path) -> dict[int, bytes]:
    if len(data) < 6 + 16 or not is_scp(data[:22]):
        raise RecordError(f"{path}: not an SCP-ECG file (no SCPECG section 0 header)")
    crc, length = struct.unpack_from("<HI", data, 0)
    if length != len(data):
        raise RecordError(f"{path}: SCP-ECG record length {length} bytes, the file holds "
                          f"{len(data)} (truncated or padded)")  # fmt: skip
    if crc_ccitt(data[2:length]) != crc:
        raise RecordError(f"{path}: SCP-ECG file CRC mismatch (damaged file)")
    zero_length = struct.unpack_from("<I", data, 6 + 4)[0]
    sections: dict[int, bytes] = {}
    for entry in range(6 + 16, 6 + min(zero_length, len(data) - 6) - 9, 10):
        ident, size, index = struct.unpack_from("<HII", data, entry)
        if size == 0:
            continue
        start = index - 1  # section 0 counts bytes from 1
        body = data[start : start + size]
        if start < 0 or len(body) != size or size < 16:
            raise RecordError(f"{path}: SCP-ECG section {ident} lies outside the file "
                              f"(offset {index}, {size} bytes)")  # fmt: skip
        sec_crc, sec_id, sec_len = struct.unpack_from("<HHI", body, 0)
        if sec_id != ident or sec_len != size:
            raise RecordError(f"{path}: SCP-ECG section {ident}'s header says id {sec_id}, "
                              f"{sec_len} bytes (section 0 says {size})")  # fmt: skip
        if crc_ccitt(body[2:]) != sec_crc:
            raise RecordError(f"{path}: SCP-ECG section {ident} CRC mismatch (damaged section)")
        sections[ident] = body
    return sections


def _huffman(section: bytes | None, path: Path) -> bool:
    """Whether the leads are Huffman-coded (with the default table, the only one read)."""
    if section is None or len(section) < 18:
        return False
    tables = struct.unpack_from("<H", section, 16)[0]
    if tables != _DEFAULT_TABLE:
        raise RecordError(f"{path}: SCP-ECG custom Huffman tables ({tables} in section 2) are not "
                          "supported; only the standard's default table is read")  # fmt: skip
    return True


def _leads(section: bytes, path: Path) -> tuple[list[_Lead], bool]:
    count, flags = section[16], section[17]
    if count == 0 or 18 + 9 * count > len(section):
        raise RecordError(
            f"{path}: SCP-ECG section 3 defines {count} leads in {len(section)} bytes"
        )
    leads = [_Lead(*struct.unpack_from("<IIB", section, 18 + 9 * i)) for i in range(count)]
    for lead in leads:
        if lead.last < lead.first:
            raise RecordError(f"{path}: SCP-ECG lead {scp_lead(lead.ident)}: samples "
                              f"{lead.first}..{lead.last}")  # fmt: skip
    if len({(lead.first, lead.last) for lead in leads}) != 1:
        raise RecordError(f"{path}: SCP-ECG leads recorded over different sample ranges "
                          "(not simultaneous) are not supported")  # fmt: skip
    return leads, bool(flags & 1)


def _qrs_count(section: bytes | None) -> int:
    return (
        struct.unpack_from("<H", section, 20)[0]
        if section is not None and len(section) >= 22
        else 0
    )


def _samples(section: bytes, path: Path, number: int, leads: list[_Lead], huffman: bool,
             beat_ms: int | None) -> tuple[np.ndarray, float, int]:  # fmt: skip
    """(signal in mV, fs, nV per count) of section 5 (reference beat) or 6 (rhythm)."""
    where = f"{path}: SCP-ECG section {number}"
    if len(section) < 22 + 2 * len(leads):
        raise RecordError(f"{where}: {len(section)} bytes, too short for {len(leads)} leads")
    avm, interval, difference, bimodal = struct.unpack_from("<HHBB", section, 16)
    if avm == 0 or interval == 0:
        raise RecordError(f"{where}: amplitude unit {avm} nV, sample interval {interval} µs")
    if difference not in (0, 1, 2):
        raise RecordError(f"{where}: difference encoding {difference} (read: 0, 1, 2)")
    if number == 6 and bimodal:
        raise RecordError(f"{where}: bimodal compression (decimated samples between QRS "
                          "complexes) is not supported")  # fmt: skip
    sizes = struct.unpack_from(f"<{len(leads)}H", section, 22)
    offset = 22 + 2 * len(leads)
    if offset + sum(sizes) > len(section):
        raise RecordError(f"{where}: lead data of {sum(sizes)} bytes overruns the section "
                          f"({len(section) - offset} bytes)")  # fmt: skip
    rows = []
    for lead, size in zip(leads, sizes):
        chunk = section[offset : offset + size]
        offset += size
        name = scp_lead(lead.ident)
        if number == 5:
            n = round((beat_ms or 0) * 1000 / interval) if huffman else size // 2
        else:
            # Sample numbers count from 1 and include the last; a writer that counts from 0
            # (the 1.3 viewer demo: 0..10000 over 10,000 stored samples) writes the count.
            n = lead.last - lead.first + (1 if lead.first >= 1 else 0)
        if huffman:
            values = _decode_default(chunk, n, f"{where} lead {name}")
        else:
            if size < 2 * n:
                raise RecordError(f"{where} lead {name}: {size} bytes for {n} 16-bit samples "
                                  "(truncated)")  # fmt: skip
            values = np.frombuffer(chunk[: 2 * n], dtype="<i2").astype(np.int64)
        rows.append(_undifference(values, difference))
    signal = (np.stack(rows).astype(np.float64) * (avm * 1e-6)).astype(np.float32)
    return signal, 1e6 / interval, avm


def _decode_default(chunk: bytes, n: int, where: str) -> np.ndarray:
    """``n`` values of a bit stream (most significant bit first) in the default Huffman table."""
    bits = np.unpackbits(np.frombuffer(chunk, dtype=np.uint8)).tolist()
    table, out, pos, total = _TABLE, [], 0, len(bits)
    while len(out) < n:
        code = length = 0
        while True:
            if pos >= total:
                raise RecordError(f"{where}: Huffman data ends after {len(out)} of {n} samples "
                                  "(truncated)")  # fmt: skip
            code = (code << 1) | bits[pos]
            pos += 1
            length += 1
            hit = table.get((length, code))
            if hit is not None:
                break
            if length > 10:
                raise RecordError(f"{where}: invalid Huffman code at bit {pos}")
        value, literal = hit
        if literal:
            if pos + literal > total:
                raise RecordError(f"{where}: Huffman data ends inside a literal (truncated)")
            value = 0
            for bit in bits[pos : pos + literal]:
                value = (value << 1) | bit
            if value >= 1 << (literal - 1):
                value -= 1 << literal  # two's complement
            pos += literal
        out.append(value)
    return np.array(out, dtype=np.int64)


def _undifference(d: np.ndarray, order: int) -> np.ndarray:
    """Samples from first (x[n] = x[n-1] + d[n]) or second (x[n] = 2x[n-1] - x[n-2] + d[n])
    differences; the first one (two) values are samples themselves."""
    if order == 0 or d.size == 0:
        return d
    if order == 1:
        return np.cumsum(d)
    if d.size == 1:
        return d
    steps = np.cumsum(np.concatenate([[d[1] - d[0]], d[2:]]))  # x[n] - x[n-1], n >= 1
    return np.concatenate([[d[0]], d[0] + np.cumsum(steps)])


def _patient(section: bytes, record: Record) -> None:
    """Section 1's tags: 2 patient id, 4 age (value, unit), 8 sex (1 male, 2 female)."""
    pos = 16
    while pos + 3 <= len(section):
        tag, size = section[pos], struct.unpack_from("<H", section, pos + 1)[0]
        value = section[pos + 3 : pos + 3 + size]
        pos += 3 + size
        if tag == 255:
            break
        if tag == 2:
            record.patient_id = value.split(b"\0")[0].decode("latin-1").strip() or None
        elif tag == 4 and len(value) >= 3:
            age, unit = struct.unpack_from("<HB", value)
            scale = {1: 1.0, 2: 1 / 12, 3: 7 / 365.25, 4: 1 / 365.25, 5: 1 / 8766}.get(unit)
            record.age = age * scale if scale and age else None
        elif tag == 8 and value:
            record.sex = {1: 0, 2: 1}.get(value[0])
