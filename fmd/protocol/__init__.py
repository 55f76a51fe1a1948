"""Event and FMRI models, ENAs, class-pattern matching and the ereport wire format.

This package is the bottom of fmd's dependency graph: it says what an event and
a resource name look like, in memory and on the wire, and nothing about where
events go.  Import from here; the submodules are an implementation detail::

    fmri       FMRI models, string and object forms (over _fmri_text, the escaping)
    ena        ENA encoding, decoding, generation and parsing
    classes    event classes, subscription patterns and class_match
    timefmt    event times: utc_iso and parse_time
    events     Suspect, ListEvent, the FAULT_* bits and the list.* classes
    ereport    Ereport, the JSON-lines wire format and WireEreport

Dependencies point one way: ``_common`` (shared message helpers) is imported by
all; ``events`` builds on fmri, classes and timefmt; ``ereport`` builds on fmri,
ena, classes and timefmt.  No submodule imports this package.
"""

from __future__ import annotations

# Re-exported: the parsers raise these, so their callers may import them from here.
from fmd.errors import EventRejected, FmriError, ProtocolError
from fmd.protocol.classes import class_match, validate_class, validate_pattern
from fmd.protocol.ena import (
    ENA_FORMAT1,
    ENA_FORMAT2,
    EnaGenerator,
    EnaParts,
    decode_ena,
    ena_format1,
    ena_format2,
    parse_ena,
)
from fmd.protocol.ereport import (
    Ereport,
    WireEreport,
    decode_line,
    ereport_from_decoded,
    ereport_from_json_dict,
    parse_ereport_line,
)
from fmd.protocol.events import (
    LIST_CLASSES,
    SUSPECT_PREFIXES,
    FmdFmriField,
    FmriField,
    ListClass,
    ListEvent,
    Suspect,
    is_list_class,
)
from fmd.protocol.fmri import (
    CpuFmri,
    FmdFmri,
    Fmri,
    HcFmri,
    MemFmri,
    Pairs,
    fmri_from_obj,
    fmri_to_json,
    hc_fmri,
    parse_fmri,
    parse_fmri_cached,
    sanitize_authority,
)
from fmd.protocol.timefmt import parse_time, utc_iso

# The fault-status bits of suspects (fmd.states), re-exported for modules.
from fmd.states import (
    FAULT_ACQUITTED,
    FAULT_DEGRADED,
    FAULT_FAULTY,
    FAULT_NOT_PRESENT,
    FAULT_REPAIRED,
    FAULT_REPLACED,
    FAULT_UNUSABLE,
)

__all__ = [
    "ENA_FORMAT1",
    "ENA_FORMAT2",
    "FAULT_ACQUITTED",
    "FAULT_DEGRADED",
    "FAULT_FAULTY",
    "FAULT_NOT_PRESENT",
    "FAULT_REPAIRED",
    "FAULT_REPLACED",
    "FAULT_UNUSABLE",
    "LIST_CLASSES",
    "SUSPECT_PREFIXES",
    "CpuFmri",
    "EnaGenerator",
    "EnaParts",
    "Ereport",
    "EventRejected",
    "FmdFmri",
    "FmdFmriField",
    "Fmri",
    "FmriError",
    "FmriField",
    "HcFmri",
    "ListClass",
    "ListEvent",
    "MemFmri",
    "Pairs",
    "ProtocolError",
    "Suspect",
    "WireEreport",
    "class_match",
    "decode_ena",
    "decode_line",
    "ena_format1",
    "ena_format2",
    "ereport_from_decoded",
    "ereport_from_json_dict",
    "fmri_from_obj",
    "fmri_to_json",
    "hc_fmri",
    "is_list_class",
    "parse_ena",
    "parse_ereport_line",
    "parse_fmri",
    "parse_fmri_cached",
    "parse_time",
    "sanitize_authority",
    "utc_iso",
    "validate_class",
    "validate_pattern",
]
