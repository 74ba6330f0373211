"""Lead identification codes shared by SCP-ECG, DICOM and HL7 aECG.

SCP-ECG (EN 1064) numbers leads in section 3; DICOM writes the same numbers as SCP-ECG codes
``5.6.3-9-<n>`` or as MDC codes ``2:<n>`` (ISO/IEEE 11073-10101 kept SCP's numbering for the
ECG leads); HL7 aECG spells the MDC reference ids, ``MDC_ECG_LEAD_<name>``. Only the twelve
standard leads get canonical names; any other lead keeps a name that says what it was.
"""

from __future__ import annotations

import re

#: SCP-ECG / MDC lead numbers of the twelve standard leads
STANDARD_LEADS: dict[int, str] = {
    1: "I", 2: "II", 3: "V1", 4: "V2", 5: "V3", 6: "V4", 7: "V5", 8: "V6",
    61: "III", 62: "aVR", 63: "aVL", 64: "aVF",
}  # fmt: skip

_NUMBERED = re.compile(r"^(?:5\.6\.3-9-|2:)(\d+)$")
_MEANING = re.compile(r"^lead\s+(i{1,3}|avr|avl|avf|v[1-6])\b", re.IGNORECASE)
_BY_UPPER = {name.upper(): name for name in STANDARD_LEADS.values()}


def scp_lead(number: int) -> str:
    """The name of SCP-ECG lead ``number``: ``I`` … ``aVF``, else ``SCP lead <n>``."""
    return STANDARD_LEADS.get(number, f"SCP lead {number}")


def coded_lead(code: str, meaning: str = "") -> str | None:
    """A DICOM channel source code (SCP-ECG ``5.6.3-9-<n>`` or MDC ``2:<n>``) as a lead name;
    the code meaning (``Lead II``) where the code is not one of these; None if neither names a
    standard lead."""
    match = _NUMBERED.match(code.strip())
    if match and int(match.group(1)) in STANDARD_LEADS:
        return STANDARD_LEADS[int(match.group(1))]
    found = _MEANING.match(meaning.strip())
    return _BY_UPPER[found.group(1).upper()] if found else None


def mdc_lead(code: str) -> str | None:
    """``MDC_ECG_LEAD_AVR`` -> ``aVR``; None for anything but the twelve standard leads."""
    if not code.upper().startswith("MDC_ECG_LEAD_"):
        return None
    return _BY_UPPER.get(code[len("MDC_ECG_LEAD_") :].upper())
