"""Ereports: the in-memory Ereport, the JSON-lines wire format and its schema.

One ereport is one JSON object per line::

    class       required string, "ereport." + a valid class
    ena         optional integer, "0x..." hex or decimal string (generated if absent)
    time        optional epoch seconds (number) or ISO 8601 string (now if absent)
    detector    optional FMRI string or object
    __injected  optional boolean (set by fminject)

Every other member is class-specific payload and is kept as it is.  null is
not accepted for the members above.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Self

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from fmd.errors import EventRejected, FmriError, ProtocolError
from fmd.protocol._common import _json_type, _show
from fmd.protocol.classes import _CLASS_RE, MAX_CLASS_LEN, _class_problem
from fmd.protocol.ena import EnaGenerator, parse_ena
from fmd.protocol.fmri import Fmri, _parse_detector, fmri_from_obj, fmri_to_json
from fmd.protocol.limits import MAX_FMRI_LEN, check_payload, check_shape
from fmd.protocol.timefmt import parse_time, utc_iso

_MISSING: Final = object()
_RESERVED: Final = frozenset({"class", "ena", "time", "detector", "__injected"})


@dataclass(slots=True)
class Ereport:
    """An error report as fmd holds it after ingest (a plain dataclass: this is the hot path)."""

    cls: str
    ena: int
    time_ns: int
    detector: Fmri | None
    detector_str: str | None
    payload: dict[str, Any] = field(default_factory=dict)
    injected: bool = False
    id: int | None = None
    # Roughly the bytes the event costs to hold (its wire or stored size): what
    # the module queues count against their memory bound.
    size: int = 0
    # The payload as stored (JSON text), encoded once at ingest so that an
    # event that cannot be encoded is rejected alone; dropped once stored.
    payload_text: str | None = None
    # A record coalesced at ingest from identical ereports (fmd.xprt): how many
    # it stands for, and when the last of them happened (None: just one).
    count: int = 1
    last_ns: int | None = None
    # What makes the payload identical to another's for coalescing, when that is
    # not all of ``payload_text`` (a raw record's TSC differs in every record).
    key_text: str | None = field(default=None, compare=False)

    def to_json_dict(self) -> dict[str, Any]:
        """The wire form (``time`` as ISO 8601 UTC to the microsecond)."""
        d: dict[str, Any] = {"class": self.cls, "ena": self.ena, "time": utc_iso(self.time_ns)}
        if self.detector is not None:
            d["detector"] = fmri_to_json(self.detector)
        for name, value in self.payload.items():
            if name in _RESERVED:
                raise ProtocolError(f"payload member {name!r} of {self.cls} is a reserved name")
            d[name] = value
        if self.injected:
            d["__injected"] = True
        return d


# Classes already found valid: the same few hundred classes arrive over and over.
_VALID_EREPORT_CLASSES: Final[set[str]] = set()
_VALID_EREPORT_CLASSES_MAX: Final = 4096


def _ereport_class_problem(cls: object) -> str | None:
    if cls.__class__ is str and cls in _VALID_EREPORT_CLASSES:
        return None
    if type(cls) is not str:
        return "'class' must be a string"
    if not cls.startswith("ereport."):
        return f"class {_show(cls, 80)} does not start with 'ereport.'"
    if len(cls) > MAX_CLASS_LEN or _CLASS_RE.fullmatch(cls) is None:
        return _class_problem(cls, "class")
    if len(_VALID_EREPORT_CLASSES) < _VALID_EREPORT_CLASSES_MAX:
        _VALID_EREPORT_CLASSES.add(cls)  # set.add is atomic: no lock needed
    return None


def _detector(value: object) -> tuple[Fmri, str]:
    try:
        if isinstance(value, str):
            return _parse_detector(value)
        if isinstance(value, Mapping):
            if value.__class__ is dict:
                check_shape(value, "detector")
            fmri = fmri_from_obj(value)
            text = fmri.to_string()
            if len(text) > MAX_FMRI_LEN:
                raise FmriError(
                    f"the detector's string form is longer than {MAX_FMRI_LEN} characters "
                    f"({len(text)})"
                )
            return fmri, text
    except FmriError as exc:
        raise EventRejected(f"bad detector: {exc}") from None
    raise EventRejected(f"bad detector: expected an FMRI string or object, not {_json_type(value)}")


def _ereport_from_owned(d: dict[str, Any], now_ns: int, ena_gen: EnaGenerator) -> Ereport:
    """Build an Ereport from a decoded object, taking the reserved members out of *d*."""
    if "class" not in d:
        raise EventRejected("missing member 'class'")
    cls = d.pop("class")
    problem = _ereport_class_problem(cls)
    if problem is not None:
        raise EventRejected(problem)
    raw_ena = d.pop("ena", _MISSING)
    ena = ena_gen.next(now_ns) if raw_ena is _MISSING else parse_ena(raw_ena)
    raw_time = d.pop("time", _MISSING)
    time_ns = now_ns if raw_time is _MISSING else parse_time(raw_time)
    raw_detector = d.pop("detector", _MISSING)
    fmri: Fmri | None = None
    fmri_str: str | None = None
    if raw_detector is not _MISSING:
        fmri, fmri_str = _detector(raw_detector)
    injected = d.pop("__injected", False)
    if type(injected) is not bool:
        raise EventRejected("'__injected' must be true or false")
    check_payload(d)
    return Ereport(cls, ena, time_ns, fmri, fmri_str, d, injected)


def ereport_from_decoded(d: dict[str, Any], now_ns: int, ena_gen: EnaGenerator) -> Ereport:
    """Like :func:`ereport_from_json_dict` for a dict the caller just decoded and
    gives away: its reserved members are taken out and the rest becomes the
    payload, without a copy (the ingest hot path)."""
    return _ereport_from_owned(d, now_ns, ena_gen)


def ereport_from_json_dict(d: Mapping[str, Any], *, now_ns: int, ena_gen: EnaGenerator) -> Ereport:
    """An Ereport from an already-decoded JSON object; EventRejected says what was wrong.

    *d* is not modified.  Without ``ena`` one is made by *ena_gen*; without
    ``time`` the event time is *now_ns*.
    """
    if not isinstance(d, Mapping):
        raise EventRejected("event is not a JSON object")
    return _ereport_from_owned(dict(d), now_ns, ena_gen)


def decode_line(line: bytes, max_len: int = 1 << 20) -> dict[str, Any]:
    """The JSON object on one wire line (no newline); EventRejected says what is wrong."""
    if len(line) > max_len:
        raise EventRejected(f"line exceeds {max_len} bytes")
    try:
        # orjson reads the bytes directly and refuses invalid UTF-8.
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise EventRejected(f"line is not valid UTF-8 at byte {bad.start}") from None
        raise EventRejected(f"malformed JSON: {exc}") from None
    if obj.__class__ is not dict:
        raise EventRejected("event is not a JSON object")
    return obj


def parse_ereport_line(
    line: bytes, *, now_ns: int, ena_gen: EnaGenerator, max_len: int = 1 << 20
) -> Ereport:
    """Decode one line of the wire format (a trailing newline is allowed) into an Ereport."""
    if line.endswith(b"\n"):
        line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
    return _ereport_from_owned(decode_line(line, max_len), now_ns, ena_gen)


def _value_error(check: Any, value: object) -> object:
    """Run *check* (which raises ProtocolError) so that pydantic reports the failure."""
    try:
        check(value)
    except ProtocolError as exc:
        raise ValueError(str(exc)) from None
    return value


class WireEreport(BaseModel):
    """The ereport wire schema, for documentation and JSON Schema.

    It accepts exactly what :func:`parse_ereport_line` accepts (the ingest
    path checks by hand for speed, sharing the same helper functions).
    """

    model_config = ConfigDict(extra="allow", strict=True)

    cls: str = Field(alias="class", description="event class, 'ereport.' + components")
    ena: int | str | SkipJsonSchema[None] = Field(
        default=None, description="64-bit ENA as an integer or a hex/decimal string"
    )
    time: int | float | str | SkipJsonSchema[None] = Field(
        default=None, description="event time: epoch seconds or ISO 8601 (UTC if no zone)"
    )
    detector: str | dict[str, Any] | SkipJsonSchema[None] = Field(
        default=None, description="FMRI of the detector, string or object form"
    )
    injected: bool | SkipJsonSchema[None] = Field(
        default=None, alias="__injected", description="true for events made by fminject"
    )

    @field_validator("cls", mode="before")
    @classmethod
    def _check_class(cls, value: object) -> object:
        problem = _ereport_class_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("ena", mode="before")
    @classmethod
    def _check_ena(cls, value: object) -> object:
        return _value_error(parse_ena, value)

    @field_validator("time", mode="before")
    @classmethod
    def _check_time(cls, value: object) -> object:
        return _value_error(parse_time, value)

    @field_validator("detector", mode="before")
    @classmethod
    def _check_detector(cls, value: object) -> object:
        return _value_error(_detector, value)

    @field_validator("injected", mode="before")
    @classmethod
    def _check_injected(cls, value: object) -> object:
        if type(value) is not bool:
            raise ValueError("'__injected' must be true or false")
        return value

    @model_validator(mode="after")
    def _check_payload(self) -> Self:
        try:
            check_payload(dict(self.model_extra or {}))
        except EventRejected as exc:
            raise ValueError(str(exc)) from None
        return self
