"""XML parsing for files from outside: no entity expansion, no network, a size limit.

MUSE and HL7 aECG files come from hospital systems and trial sponsors; a hostile or broken file
must end in a clear error, not in a billion-laughs expansion, a fetched URL or a parse that runs
for minutes. defusedxml refuses every entity declaration and external reference before expat
expands anything; the size limit bounds the rest (a 12-lead 10 s export is about 0.5 MB).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from ecgx.formats.record import RecordError

#: the largest XML record file read (bytes); a 12-lead 24 h Holter aECG is about this size
MAX_XML_BYTES = 256 * 1024 * 1024

_ROOT = re.compile(rb"<\s*(?:[A-Za-z_][\w.-]*:)?([A-Za-z_][\w.-]*)[\s>/]")


def read_bytes(path: Path, limit: int = MAX_XML_BYTES) -> bytes:
    """The file's bytes; RecordError naming it when it is absent or larger than ``limit``."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise RecordError(f"{path}: {size} bytes, over the {limit}-byte limit for XML records")
        return path.read_bytes()
    except FileNotFoundError as err:
        raise RecordError(f"{path}: file missing") from err
    except (IsADirectoryError, PermissionError) as err:
        raise RecordError(f"{path}: not readable ({err})") from err


def parse(path: Path, limit: int = MAX_XML_BYTES) -> ET.Element:
    """The root element of an XML file, parsed without entities, DTD fetching or network."""
    data = read_bytes(path, limit)
    try:
        # forbid_dtd stays off: MUSE exports declare <!DOCTYPE RestingECG SYSTEM "restecg.dtd">,
        # which expat never fetches; entity declarations inside a DTD are still refused.
        return fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as err:
        raise RecordError(
            f"{path}: refused XML ({type(err).__name__}: {err}); entity declarations and "
            "external references are not read"
        ) from err
    except ET.ParseError as err:
        raise RecordError(f"{path}: malformed or truncated XML ({err})") from err


def root_name(head: bytes) -> str | None:
    """The local name of the first element in the first bytes of an XML file (past the prolog,
    comments and DOCTYPE), e.g. ``RestingECG`` or ``AnnotatedECG``; None if none is there."""
    text = re.sub(rb"<!--.*?-->|<\?.*?\?>|<!DOCTYPE[^>]*>", b"", head, flags=re.S)
    match = _ROOT.search(text)
    return match.group(1).decode("ascii", "replace") if match else None


def local(tag: str) -> str:
    """``{urn:hl7-org:v3}series`` -> ``series``."""
    return tag.rsplit("}", 1)[-1]
