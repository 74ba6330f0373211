"""A hostile-input corpus per format, made here from the real samples: each file ends in a
RecordError naming it and what is wrong, within seconds (no traceback past the reader)."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np
import pytest

from ecgx.formats import scp_ecg
from ecgx.formats.files import find_records, read_record
from ecgx.formats.record import RecordError
from tests.formats.conftest import sample

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE RestingECG [
 <!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">
 <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
 <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
 <!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
 <!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;">
 <!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">
]>
<RestingECG><PatientDemographics><PatientID>&f;</PatientID></PatientDemographics></RestingECG>
"""
EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE AnnotatedECG [<!ENTITY x SYSTEM "http://127.0.0.1:9/secret">]>
<AnnotatedECG xmlns="urn:hl7-org:v3"><id root="&x;"/></AnnotatedECG>
"""


def _refused(path: Path, match: str) -> None:
    start = time.perf_counter()
    with pytest.raises(RecordError, match=match) as info:
        read_record(path)
    assert str(path) in str(info.value)
    assert time.perf_counter() - start < 5


def test_xml_attacks_are_refused(tmp_path: Path) -> None:
    (tmp_path / "bomb.xml").write_bytes(BOMB)
    _refused(tmp_path / "bomb.xml", "refused XML .*EntitiesForbidden")
    (tmp_path / "external.xml").write_bytes(EXTERNAL)
    _refused(tmp_path / "external.xml", "refused XML .*(EntitiesForbidden|External)")
    (tmp_path / "other.xml").write_bytes(b"<?xml version='1.0'?><svg/>")
    _refused(tmp_path / "other.xml", "neither GE MUSE .* root is <svg>")


def test_muse_truncation_and_crc(tmp_path: Path) -> None:
    text = sample("muse_xml", "EGM_muse-sinus.xml").read_bytes()
    rhythm = text.index(b"<WaveformType>Rhythm")
    start = text.index(b"<WaveFormData>", rhythm) + len(b"<WaveFormData>")
    end = text.index(b"</WaveFormData>", start)
    cut = tmp_path / "cut_lead.xml"  # the lead's base64 stops half-way
    cut.write_bytes(text[:start] + text[start : (start + end) // 2].rstrip() + text[end:])
    _refused(cut, "Rhythm lead I: (WaveFormData is not valid base64|.*truncated)")
    crc = text.index(b"<LeadDataCRC32>", rhythm) + len(b"<LeadDataCRC32>")
    wrong = tmp_path / "wrong_crc.xml"
    wrong.write_bytes(text[:crc] + b"1" + text[crc + 1 :])
    _refused(wrong, "Rhythm lead I: CRC-32 of the samples is .* LeadDataCRC32 says")
    half = tmp_path / "half.xml"  # the file itself cut off
    half.write_bytes(text[: len(text) // 2])
    _refused(half, "malformed or truncated XML")


def test_dicom_without_waveform_and_unknown_syntax(tmp_path: Path) -> None:
    pydicom = pytest.importorskip("pydicom")
    ds = pydicom.dcmread(sample("dicom", "pydicom_waveform_ecg.dcm"))
    del ds.WaveformSequence
    ds.save_as(tmp_path / "no_waveform.dcm")
    _refused(tmp_path / "no_waveform.dcm", "without a Waveform Sequence")
    ds = pydicom.dcmread(sample("dicom", "pydicom_waveform_ecg.dcm"))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGBaseline8Bit
    ds.save_as(tmp_path / "jpeg.dcm", enforce_file_format=True)
    _refused(tmp_path / "jpeg.dcm", r"transfer syntax JPEG Baseline .* is not read")
    (tmp_path / "fake.dcm").write_bytes(b"\0" * 300)
    _refused(tmp_path / "fake.dcm", "not a DICOM")


def test_scp_bad_crc_truncation_and_unsupported(tmp_path: Path) -> None:
    data = bytearray(sample("scp_ecg", "ecgtoolkit_Example.scp").read_bytes())
    sections = scp_ecg._sections(bytes(data), Path("x"))
    six = bytes(data).index(sections[6])
    damaged = bytearray(data)
    damaged[six + 100] ^= 0xFF
    damaged[:2] = struct.pack("<H", scp_ecg.crc_ccitt(bytes(damaged[2:])))  # file CRC redone
    (tmp_path / "bad_section.scp").write_bytes(bytes(damaged))
    _refused(tmp_path / "bad_section.scp", "section 6 CRC mismatch")
    (tmp_path / "cut.scp").write_bytes(bytes(data[:-100]))
    _refused(tmp_path / "cut.scp", "record length 34144 bytes, the file holds 34044 .truncated")
    # Section 3 with the reference-beat-subtraction flag and section 4 with QRS zones: refused.
    three, four = bytes(data).index(sections[3]), bytes(data).index(sections[4])
    flagged = bytearray(data)
    flagged[three + 17] |= 1
    flagged[four + 20 : four + 22] = struct.pack("<H", 3)
    for start, body in ((three, sections[3]), (four, sections[4])):
        flagged[start : start + 2] = struct.pack(
            "<H", scp_ecg.crc_ccitt(bytes(flagged[start + 2 : start + len(body)])))  # fmt: skip
    flagged[:2] = struct.pack("<H", scp_ecg.crc_ccitt(bytes(flagged[2:])))
    (tmp_path / "subtracted.scp").write_bytes(bytes(flagged))
    _refused(tmp_path / "subtracted.scp", "reference-beat subtraction .* not supported")


def test_edf_truncated_data_record(tmp_path: Path) -> None:
    data = sample("edf", "contec_0000050.ECG.edf").read_bytes()
    (tmp_path / "cut.edf").write_bytes(data[:-7])
    _refused(tmp_path / "cut.edf", "not a readable EDF.*Filesize")
    (tmp_path / "notedf.edf").write_bytes(b"hello" * 100)
    _refused(tmp_path / "notedf.edf", "not a EDF")


def test_content_not_suffix_decides(tmp_path: Path) -> None:
    dcm = sample("dicom", "pydicom_waveform_ecg.dcm")
    uid_named = tmp_path / "1.2.840.113619.2.55"  # DICOM exports are often named by UID
    uid_named.write_bytes(dcm.read_bytes())
    (tmp_path / "notes.txt").write_text("no record")
    assert find_records(tmp_path) == [uid_named]
    record = read_record(uid_named)
    assert record.format == "DICOM" and record.signal.shape == (12, 10000)
    np.testing.assert_array_equal(record.signal, read_record(dcm).signal)
