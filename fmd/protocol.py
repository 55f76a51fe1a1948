"""Event and FMRI models, ENAs, class-pattern matching and the ereport wire format.

This module is the bottom of fmd's dependency graph: it says what an event and
a resource name look like, in memory and on the wire, and nothing about where
events go.

FMRI string forms
-----------------
Four schemes are modelled, one class each (``HcFmri``, ``CpuFmri``,
``MemFmri``, ``FmdFmri``)::

    hc://[:NAME=VALUE]...[:serial=S][:part=P][:revision=R]/NAME=INST/...[?NAME=VALUE&...]
    cpu:///cpuid=N[/serial=S]
    mem:///unum=U[/serial=S][/physaddr=0xHEX][/offset=0xHEX]
    fmd:///module/NAME

* The ``:NAME=VALUE`` pairs after ``hc://`` are the authority (product-id,
  chassis-id, server-id, ...) followed by serial, part and revision; for that
  reason no authority member may be called ``serial``, ``part`` or
  ``revision``.
* ``hc-specific`` members (``offset``, ``physaddr``, ...) follow the path as a
  query string: ``hc:///motherboard=0/chip=0?offset=0x1000&physaddr=0x2000``.
* An hc FMRI with an empty path is written ``hc:///`` (``hc://:a=b/`` with an
  authority).

Escaping: every name and value is percent-encoded (``%XX``, hexadecimal, of
its UTF-8 bytes) where it contains ``%``, ``/``, ``:``, ``?``, ``&``, a space
or another ASCII control character; names also escape ``=``.  A value may keep
a raw ``=`` because a pair is split at its first ``=``.  So the x86 mem unum
``motherboard=0/chip=0`` is written ``mem:///unum=motherboard=0%2Fchip=0``.
Non-ASCII characters are written as they are.  Parsing rejects a ``%`` that is
not followed by two hexadecimal digits.

Every hc, cpu and mem FMRI round-trips through its string form
(``parse_fmri(f.to_string()) == f``).  The fmd string form omits
``authority`` and ``mod-version``, so for ``FmdFmri`` only the string
round-trips; in JSON an fmd FMRI is therefore written in its object form (see
:func:`fmri_to_json`).  Every FMRI round-trips through ``to_dict()``.

ENA layout, event classes, pattern semantics and the ereport wire format are
described where they are defined below.
"""

from __future__ import annotations

import functools
import math
import re
import threading
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from time import gmtime
from typing import (
    Annotated,
    Any,
    ClassVar,
    Final,
    Literal,
    NamedTuple,
    NoReturn,
    Self,
    TypeGuard,
    TypeVar,
)

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializationInfo,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

# Re-exported: the parsers below raise these, so their callers may import them from here.
from fmd.errors import EventRejected as EventRejected
from fmd.errors import FmriError as FmriError
from fmd.errors import ProtocolError as ProtocolError

_U64: Final = (1 << 64) - 1
_NS_PER_S: Final = 1_000_000_000
_MISSING: Final = object()


def _show(obj: object, limit: int = 120) -> str:
    """repr() of *obj*, shortened so that error messages stay one line."""
    text = repr(obj)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value: object) -> str:
    """The JSON name of *value*'s type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


# ---------------------------------------------------------------------------
# FMRI escaping


def _escape_table(chars: str) -> dict[int, str]:
    table = {ord(c): f"%{ord(c):02X}" for c in chars}
    table.update({i: f"%{i:02X}" for i in range(0x21)})
    table[0x7F] = "%7F"
    return table


_VALUE_ESCAPES: Final = _escape_table("%/:?&")
_NAME_ESCAPES: Final = _escape_table("%/:?&=")
_BAD_PERCENT: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _qv(value: str) -> str:
    return value.translate(_VALUE_ESCAPES)


def _qn(name: str) -> str:
    return name.translate(_NAME_ESCAPES)


def _unquote(part: str, src: str) -> str:
    if "%" not in part:
        return part
    if _BAD_PERCENT.search(part):
        raise FmriError(f"bad FMRI {_show(src)}: '%' not followed by two hex digits in {part!r}")
    try:
        return urllib.parse.unquote(part, errors="strict")
    except UnicodeDecodeError:
        raise FmriError(
            f"bad FMRI {_show(src)}: percent escapes in {part!r} are not valid UTF-8"
        ) from None


def _split_pair(segment: str, src: str) -> tuple[str, str]:
    """Split ``NAME=VALUE`` at its first ``=`` and unescape both halves."""
    name, sep, value = segment.partition("=")
    if not sep:
        raise FmriError(f"bad FMRI {_show(src)}: expected NAME=VALUE, found {segment!r}")
    name = _unquote(name, src)
    if not name:
        raise FmriError(f"bad FMRI {_show(src)}: empty member name in {segment!r}")
    return name, _unquote(value, src)


def _parse_uint(value: str, what: str, where: str, limit: int = _U64) -> int:
    """A decimal or ``0x`` hexadecimal unsigned integer; *where* starts the error message."""
    try:
        if value[:2] in ("0x", "0X") and value[2:].isascii() and value[2:].isalnum():
            number = int(value[2:], 16)
        elif value.isascii() and value.isdigit() and len(value) <= 20:
            number = int(value, 10)
        else:
            raise ValueError(value)
    except ValueError:
        raise FmriError(f"{where}: {what} {value!r} is not an integer") from None
    if number > limit:
        raise FmriError(f"{where}: {what} {value!r} is out of range (max {limit})")
    return number


_AUTHORITY_VALUE_BAD: Final = re.compile(r"[:=/\s]")


def sanitize_authority(value: str) -> str:
    """Make *value* safe as an authority value: ``:``, ``=``, ``/`` and whitespace become ``-``."""
    return _AUTHORITY_VALUE_BAD.sub("-", value)


# ---------------------------------------------------------------------------
# FMRI models

Pairs = tuple[tuple[str, str], ...]
_HC_IDENT: Final = ("serial", "part", "revision")


def _check_pairs(what: str, pairs: Pairs, *, unique: bool, reserved: Iterable[str] = ()) -> None:
    seen: set[str] = set()
    banned = set(reserved)
    for name, _value in pairs:
        if not name:
            raise ValueError(f"{what} has an empty member name")
        if name in banned:
            raise ValueError(f"{what} member may not be called {name!r}")
        if unique and name in seen:
            raise ValueError(f"{what} member {name!r} appears twice")
        seen.add(name)


def _pydantic_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


class _Members:
    """Reads the members of an FMRI in object (nvlist-like) form, with good errors."""

    def __init__(self, obj: Mapping[Any, Any]) -> None:
        self.obj = obj
        self.src = _show(dict(obj))
        self.used = {"scheme", "version"}
        version = obj.get("version")
        if version is not None and (type(version) is not int or version < 0):
            self.fail(f"'version' must be a non-negative integer, not {_show(version)}")

    def fail(self, what: str) -> NoReturn:
        raise FmriError(f"bad FMRI object {self.src}: {what}")

    def opt_str(self, key: str) -> str | None:
        self.used.add(key)
        value = self.obj.get(key)
        if value is not None and not isinstance(value, str):
            self.fail(f"'{key}' must be a string, not {_json_type(value)}")
        return value

    def req_str(self, key: str) -> str:
        value = self.opt_str(key)
        if value is None:
            self.fail(f"missing '{key}'")
        return value

    def opt_int(self, key: str) -> int | None:
        self.used.add(key)
        value = self.obj.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            return _parse_uint(value, key, f"bad FMRI object {self.src}")
        if type(value) is not int:
            self.fail(f"'{key}' must be an integer, not {_json_type(value)}")
        return value

    def req_int(self, key: str) -> int:
        value = self.opt_int(key)
        if value is None:
            self.fail(f"missing '{key}'")
        return value

    def pairs(self, key: str) -> Pairs:
        """A mapping NAME -> VALUE (values may be integers) or a list of [NAME, VALUE]."""
        self.used.add(key)
        value = self.obj.get(key)
        if value is None:
            return ()
        items: Iterable[Any]
        if isinstance(value, Mapping):
            items = value.items()
        elif isinstance(value, list | tuple):
            items = value
        else:
            self.fail(f"'{key}' must be an object, not {_json_type(value)}")
        out = []
        for item in items:
            if not isinstance(item, list | tuple) or len(item) != 2:
                self.fail(f"'{key}' entry {_show(item)} is not a [name, value] pair")
            out.append(self._pair(key, item[0], item[1]))
        return tuple(out)

    def _pair(self, key: str, name: object, value: object) -> tuple[str, str]:
        if not isinstance(name, str):
            self.fail(f"'{key}' member name {_show(name)} is not a string")
        if type(value) is int:
            value = hex(value) if key == "hc-specific" else str(value)
        if not isinstance(value, str):
            self.fail(f"'{key}' member {name!r} must be a string, not {_json_type(value)}")
        return name, value

    def hc_list(self) -> Pairs:
        self.used.update(("hc-list", "hc-list-sz"))
        value = self.obj.get("hc-list")
        if value is None:
            value = []
        if not isinstance(value, list | tuple):
            self.fail(f"'hc-list' must be an array, not {_json_type(value)}")
        out = []
        for item in value:
            if isinstance(item, Mapping):
                if set(item) != {"hc-name", "hc-id"}:
                    self.fail(f"'hc-list' entry {_show(item)} must have exactly hc-name and hc-id")
                out.append(self._pair("hc-list", item["hc-name"], item["hc-id"]))
            elif isinstance(item, list | tuple) and len(item) == 2:
                out.append(self._pair("hc-list", item[0], item[1]))
            else:
                self.fail(f"'hc-list' entry {_show(item)} is not an {{hc-name, hc-id}} object")
        size = self.obj.get("hc-list-sz")
        if size is not None and size != len(out):
            self.fail(f"'hc-list-sz' is {_show(size)} but 'hc-list' has {len(out)} entries")
        return tuple(out)

    def done(self) -> None:
        unknown = [k for k in self.obj if k not in self.used]
        if unknown:
            self.fail(f"unknown member {_show(unknown[0])}")


class Fmri(BaseModel):
    """A Fault Managed Resource Identifier: the name of a resource in one scheme.

    Instances are immutable and hashable; subclasses exist per scheme.
    ``str(fmri)`` is the string form.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    scheme: str
    VERSION: ClassVar[int] = 0

    def to_string(self) -> str:
        """The canonical string form, e.g. ``hc:///motherboard=0/chip=1``."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """The object form with the protocol's member names (``scheme``, ``version``, ...)."""
        raise NotImplementedError

    def __str__(self) -> str:
        return self.to_string()

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse a string form; a subclass also insists on its own scheme."""
        fmri = parse_fmri(text)
        if not isinstance(fmri, cls):
            raise FmriError(f"{_show(text)} is a {fmri.scheme} FMRI, not a {cls.__name__}")
        return fmri

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Self:
        """Build from the object form; a subclass also insists on its own scheme."""
        fmri = fmri_from_obj(obj)
        if not isinstance(fmri, cls):
            raise FmriError(f"FMRI object has scheme {fmri.scheme!r}, not a {cls.__name__}")
        return fmri

    @classmethod
    def _build(cls, src: str, **members: Any) -> Self:
        try:
            return cls(**members)
        except ValidationError as exc:
            raise FmriError(f"bad FMRI {src}: {_pydantic_message(exc)}") from None

    @classmethod
    def _from_rest(cls, text: str, rest: str) -> Self:
        raise NotImplementedError

    @classmethod
    def _from_members(cls, members: _Members) -> Self:
        raise NotImplementedError

    def _header(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "version": self.VERSION}


class HcFmri(Fmri):
    """A hardware-component FMRI: an authority and a path of (name, instance) pairs.

    ``authority`` and ``hc_specific`` are ordered (name, value) pairs with
    unique names; ``hc_list`` is the path from the root, e.g.
    ``(("motherboard", "0"), ("chip", "3"))``.
    """

    scheme: Literal["hc"] = "hc"
    authority: Pairs = ()
    hc_list: Pairs = ()
    serial: str | None = None
    part: str | None = None
    revision: str | None = None
    hc_specific: Pairs = ()

    @model_validator(mode="after")
    def _check_members(self) -> Self:
        _check_pairs("authority", self.authority, unique=True, reserved=_HC_IDENT)
        _check_pairs("hc-list", self.hc_list, unique=False)
        _check_pairs("hc-specific", self.hc_specific, unique=True)
        return self

    def to_string(self) -> str:
        out = ["hc://"]
        out.extend(f":{_qn(n)}={_qv(v)}" for n, v in self.authority)
        for name, value in (
            ("serial", self.serial),
            ("part", self.part),
            ("revision", self.revision),
        ):
            if value is not None:
                out.append(f":{name}={_qv(value)}")
        if self.hc_list:
            out.extend(f"/{_qn(n)}={_qv(v)}" for n, v in self.hc_list)
        else:
            out.append("/")
        if self.hc_specific:
            out.append("?")
            out.append("&".join(f"{_qn(n)}={_qv(v)}" for n, v in self.hc_specific))
        return "".join(out)

    def to_dict(self) -> dict[str, Any]:
        d = self._header()
        d["hc-root"] = ""
        d["hc-list"] = [{"hc-name": n, "hc-id": i} for n, i in self.hc_list]
        if self.authority:
            d["authority"] = dict(self.authority)
        for name in _HC_IDENT:
            value = getattr(self, name)
            if value is not None:
                d[name] = value
        if self.hc_specific:
            d["hc-specific"] = dict(self.hc_specific)
        return d

    @classmethod
    def _from_rest(cls, text: str, rest: str) -> Self:
        main, query, specific = rest.partition("?")
        slash = main.find("/")
        head, path = (main, "") if slash < 0 else (main[:slash], main[slash + 1 :])
        if head and not head.startswith(":"):
            raise FmriError(f"bad FMRI {_show(text)}: expected ':NAME=VALUE' or '/' after 'hc://'")
        authority: list[tuple[str, str]] = []
        ident: dict[str, str] = {}
        for segment in head.split(":")[1:]:
            name, value = _split_pair(segment, text)
            if name in _HC_IDENT:
                if name in ident:
                    raise FmriError(f"bad FMRI {_show(text)}: {name!r} appears twice")
                ident[name] = value
            else:
                authority.append((name, value))
        hc_list = [_split_pair(s, text) for s in path.split("/")] if path else []
        pairs = [_split_pair(s, text) for s in specific.split("&")] if query else []
        return cls._build(
            _show(text), authority=tuple(authority), hc_list=tuple(hc_list),
            hc_specific=tuple(pairs), **ident,
        )  # fmt: skip

    @classmethod
    def _from_members(cls, members: _Members) -> Self:
        hc_root = members.opt_str("hc-root")
        if hc_root:
            members.fail(f"'hc-root' must be empty, not {hc_root!r}")
        built = {
            "hc_list": members.hc_list(),
            "authority": members.pairs("authority"),
            "hc_specific": members.pairs("hc-specific"),
            **{name: members.opt_str(name) for name in _HC_IDENT},
        }
        members.done()
        return cls._build(f"object {members.src}", **built)


class CpuFmri(Fmri):
    """A CPU (strand) by its logical id, with an optional serial (cpu scheme version 1)."""

    scheme: Literal["cpu"] = "cpu"
    cpuid: int = Field(strict=True, ge=0, le=0xFFFFFFFF)
    serial: str | None = None
    VERSION: ClassVar[int] = 1

    def to_string(self) -> str:
        if self.serial is None:
            return f"cpu:///cpuid={self.cpuid}"
        return f"cpu:///cpuid={self.cpuid}/serial={_qv(self.serial)}"

    def to_dict(self) -> dict[str, Any]:
        d = self._header()
        d["cpuid"] = self.cpuid
        if self.serial is not None:
            d["serial"] = self.serial
        return d

    @classmethod
    def _from_rest(cls, text: str, rest: str) -> Self:
        members = _path_members(text, rest, ("cpuid", "serial"))
        if "cpuid" not in members:
            raise FmriError(f"bad FMRI {_show(text)}: missing cpuid")
        cpuid = _parse_uint(members["cpuid"], "cpuid", f"bad FMRI {_show(text)}", 0xFFFFFFFF)
        return cls._build(_show(text), cpuid=cpuid, serial=members.get("serial"))

    @classmethod
    def _from_members(cls, members: _Members) -> Self:
        built = {"cpuid": members.req_int("cpuid"), "serial": members.opt_str("serial")}
        members.done()
        return cls._build(f"object {members.src}", **built)


class MemFmri(Fmri):
    """A memory location: a unum (a DIMM name or an encoded hc path) and optional addresses."""

    scheme: Literal["mem"] = "mem"
    unum: str
    serial: str | None = None
    physaddr: int | None = Field(default=None, strict=True, ge=0, le=_U64)
    offset: int | None = Field(default=None, strict=True, ge=0, le=_U64)

    def to_string(self) -> str:
        out = [f"mem:///unum={_qv(self.unum)}"]
        if self.serial is not None:
            out.append(f"/serial={_qv(self.serial)}")
        if self.physaddr is not None:
            out.append(f"/physaddr={self.physaddr:#x}")
        if self.offset is not None:
            out.append(f"/offset={self.offset:#x}")
        return "".join(out)

    def to_dict(self) -> dict[str, Any]:
        d = self._header()
        d["unum"] = self.unum
        for name in ("serial", "physaddr", "offset"):
            value = getattr(self, name)
            if value is not None:
                d[name] = value
        return d

    @classmethod
    def _from_rest(cls, text: str, rest: str) -> Self:
        members = _path_members(text, rest, ("unum", "serial", "physaddr", "offset"))
        if "unum" not in members:
            raise FmriError(f"bad FMRI {_show(text)}: missing unum")
        built: dict[str, Any] = {"unum": members["unum"], "serial": members.get("serial")}
        for name in ("physaddr", "offset"):
            if name in members:
                built[name] = _parse_uint(members[name], name, f"bad FMRI {_show(text)}")
        return cls._build(_show(text), **built)

    @classmethod
    def _from_members(cls, members: _Members) -> Self:
        built = {
            "unum": members.req_str("unum"),
            "serial": members.opt_str("serial"),
            "physaddr": members.opt_int("physaddr"),
            "offset": members.opt_int("offset"),
        }
        members.done()
        return cls._build(f"object {members.src}", **built)


class FmdFmri(Fmri):
    """An fmd module (the diagnosis engine of a list event, or fmd itself).

    The string form ``fmd:///module/NAME`` carries only the module name.
    """

    scheme: Literal["fmd"] = "fmd"
    mod_name: str = Field(min_length=1)
    mod_version: str | None = None
    authority: Pairs = ()

    @model_validator(mode="after")
    def _check_members(self) -> Self:
        _check_pairs("authority", self.authority, unique=True)
        return self

    def to_string(self) -> str:
        return f"fmd:///module/{_qv(self.mod_name)}"

    def to_dict(self) -> dict[str, Any]:
        d = self._header()
        if self.authority:
            d["authority"] = dict(self.authority)
        d["mod-name"] = self.mod_name
        if self.mod_version is not None:
            d["mod-version"] = self.mod_version
        return d

    @classmethod
    def _from_rest(cls, text: str, rest: str) -> Self:
        if not rest.startswith("/module/"):
            raise FmriError(f"bad FMRI {_show(text)}: expected 'fmd:///module/NAME'")
        name = rest[len("/module/") :]
        if "/" in name or not name:
            raise FmriError(f"bad FMRI {_show(text)}: module name {name!r} is empty or has '/'")
        return cls._build(_show(text), mod_name=_unquote(name, text))

    @classmethod
    def _from_members(cls, members: _Members) -> Self:
        built = {
            "authority": members.pairs("authority"),
            "mod_name": members.req_str("mod-name"),
            "mod_version": members.opt_str("mod-version"),
        }
        members.done()
        return cls._build(f"object {members.src}", **built)


def _path_members(text: str, rest: str, allowed: tuple[str, ...]) -> dict[str, str]:
    """The ``/NAME=VALUE`` members of a cpu or mem FMRI (after ``scheme://``)."""
    if not rest.startswith("/"):
        raise FmriError(f"bad FMRI {_show(text)}: expected '///' after the scheme")
    members: dict[str, str] = {}
    for segment in rest[1:].split("/") if rest != "/" else []:
        name, value = _split_pair(segment, text)
        if name not in allowed:
            raise FmriError(f"bad FMRI {_show(text)}: unknown member {name!r}")
        if name in members:
            raise FmriError(f"bad FMRI {_show(text)}: member {name!r} appears twice")
        members[name] = value
    return members


_SCHEMES: Final[dict[str, type[Fmri]]] = {
    "cpu": CpuFmri,
    "fmd": FmdFmri,
    "hc": HcFmri,
    "mem": MemFmri,
}


def parse_fmri(text: str) -> Fmri:
    """Parse the string form of an FMRI of any known scheme; raise FmriError if malformed."""
    if not isinstance(text, str):
        raise FmriError(f"an FMRI string must be a str, not {type(text).__name__}")
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise FmriError(f"bad FMRI {_show(text)}: expected 'SCHEME://...'")
    kind = _SCHEMES.get(scheme)
    if kind is None:
        raise FmriError(
            f"unknown FMRI scheme {_show(scheme)} in {_show(text)}"
            f" (known: {', '.join(sorted(_SCHEMES))})"
        )
    return kind._from_rest(text, rest)


@functools.lru_cache(maxsize=4096)
def parse_fmri_cached(text: str) -> Fmri:
    """:func:`parse_fmri` with a cache: detectors repeat heavily on the ingest path."""
    return parse_fmri(text)


@functools.lru_cache(maxsize=4096)
def _parse_detector(text: str) -> tuple[Fmri, str]:
    fmri = parse_fmri(text)
    return fmri, fmri.to_string()


def fmri_from_obj(obj: str | Mapping[str, Any] | Fmri) -> Fmri:
    """An FMRI from its string form or its object form (as produced by ``to_dict()``)."""
    if isinstance(obj, Fmri):
        return obj
    if isinstance(obj, str):
        return parse_fmri(obj)
    if not isinstance(obj, Mapping):
        raise FmriError(f"an FMRI must be a string or an object, not {_json_type(obj)}")
    scheme = obj.get("scheme")
    if scheme is None:
        raise FmriError(f"bad FMRI object {_show(dict(obj))}: missing 'scheme'")
    kind = _SCHEMES.get(scheme) if isinstance(scheme, str) else None
    if kind is None:
        raise FmriError(
            f"unknown FMRI scheme {_show(scheme)} in {_show(dict(obj))}"
            f" (known: {', '.join(sorted(_SCHEMES))})"
        )
    return kind._from_members(_Members(obj))


def fmri_to_json(fmri: Fmri) -> str | dict[str, Any]:
    """The JSON form of an FMRI: its string, except fmd FMRIs, whose string is lossy.

    An fmd FMRI is written as its object form so that ``authority`` and
    ``mod-version`` survive.  :func:`fmri_from_obj` reads either form.
    """
    if isinstance(fmri, FmdFmri):
        return fmri.to_dict()
    return fmri.to_string()


def hc_fmri(
    authority: Mapping[str, str] | Sequence[tuple[str, str]] | None,
    *pairs: tuple[str, int | str],
    serial: str | None = None,
    part: str | None = None,
    revision: str | None = None,
    hc_specific: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
) -> HcFmri:
    """Build an hc FMRI; authority values are passed through :func:`sanitize_authority`.

    ``hc_fmri({"product-id": "X"}, ("motherboard", 0), ("chip", 3))``.
    """
    auth_items = authority.items() if isinstance(authority, Mapping) else authority or ()
    spec_items = hc_specific.items() if isinstance(hc_specific, Mapping) else hc_specific or ()
    try:
        return HcFmri(
            authority=tuple((n, sanitize_authority(v)) for n, v in auth_items),
            hc_list=tuple((n, str(i)) for n, i in pairs),
            serial=serial,
            part=part,
            revision=revision,
            hc_specific=tuple(spec_items),
        )
    except ValidationError as exc:
        raise FmriError(f"bad hc FMRI: {_pydantic_message(exc)}") from None


# ---------------------------------------------------------------------------
# ENA: the Error Numeric Association shared by all reports of one error.
#
#   format 1: bits 0-1 = 1, 2-9 generation, 10-19 cpuid, 20-63 low 44 bits of hrtime (ns)
#   format 2: bits 0-1 = 2, 2-9 generation, 10-63 time or id

ENA_FORMAT1: Final = 1
ENA_FORMAT2: Final = 2


class EnaParts(NamedTuple):
    """The fields of a decoded ENA; cpuid is None except in format 1."""

    format: int
    generation: int
    cpuid: int | None
    time: int | None


def ena_format1(generation: int, cpuid: int, hrtime_ns: int) -> int:
    """A format-1 ENA (generation mod 256, cpuid mod 1024, low 44 bits of the time)."""
    return (
        ((hrtime_ns & ((1 << 44) - 1)) << 20)
        | ((cpuid & 0x3FF) << 10)
        | ((generation & 0xFF) << 2)
        | ENA_FORMAT1
    )


def ena_format2(generation: int, value: int) -> int:
    """A format-2 ENA (generation mod 256, low 54 bits of *value*)."""
    return ((value & ((1 << 54) - 1)) << 10) | ((generation & 0xFF) << 2) | ENA_FORMAT2


def decode_ena(ena: int) -> EnaParts:
    """Split an ENA into its fields; formats other than 1 and 2 yield only the generation bits."""
    if type(ena) is not int or not 0 <= ena <= _U64:
        raise ProtocolError(f"ENA {_show(ena)} is not a 64-bit unsigned integer")
    fmt = ena & 0x3
    generation = (ena >> 2) & 0xFF
    if fmt == ENA_FORMAT1:
        return EnaParts(fmt, generation, (ena >> 10) & 0x3FF, ena >> 20)
    if fmt == ENA_FORMAT2:
        return EnaParts(fmt, generation, None, ena >> 10)
    return EnaParts(fmt, generation, None, None)


class EnaGenerator:
    """Makes format-1 ENAs for ereports that arrive without one.

    The generation counter advances on every call (and wraps at 256), so ENAs
    made in the same nanosecond still differ.  Safe to share between threads.
    """

    def __init__(self, generation: int = 0) -> None:
        self._lock = threading.Lock()
        self._generation = generation & 0xFF

    def next(self, hrtime_ns: int, cpuid: int = 0) -> int:
        """A new format-1 ENA for time *hrtime_ns*."""
        with self._lock:
            generation = self._generation
            self._generation = (generation + 1) & 0xFF
        return ena_format1(generation, cpuid, hrtime_ns)


_ENA_TEXT: Final = re.compile(r"0[xX]([0-9A-Fa-f]+)|([0-9]+)")


def parse_ena(value: int | str) -> int:
    """An ENA from an integer, a ``0x`` hex string or a decimal string; EventRejected otherwise."""
    if type(value) is int:
        if 0 <= value <= _U64:
            return value
        raise EventRejected(f"'ena' {value} is out of range (0 to 2**64-1)")
    if isinstance(value, str):
        # Fast path for the common "0x..." form: at most 16 hex digits always fits.
        if len(value) <= 18 and value[:2] in ("0x", "0X") and value.isascii():
            digits = value[2:]
            if digits.isalnum():
                try:
                    return int(digits, 16)
                except ValueError:
                    raise EventRejected("'ena' must be an integer or hex string") from None
        m = _ENA_TEXT.fullmatch(value)
        if m is not None:
            hex_digits, dec_digits = m.groups()
            digits = (hex_digits or dec_digits).lstrip("0") or "0"
            if len(digits) <= (16 if hex_digits else 20):
                number = int(digits, 16 if hex_digits else 10)
                if number <= _U64:
                    return number
            raise EventRejected(f"'ena' {_show(value, 40)} is out of range (0 to 2**64-1)")
    raise EventRejected("'ena' must be an integer or hex string")


# ---------------------------------------------------------------------------
# Event classes and subscription patterns.
#
# A class is dot-separated components of [A-Za-z0-9_-].  In a pattern a
# component may also be "*": an inner "*" matches exactly one component, a
# trailing "*" matches one or more (so "a.*" matches "a.b" and "a.b.c" but
# not "a"), and "*" alone matches every class.

_COMPONENT: Final = r"[A-Za-z0-9_\-]+"
_CLASS_RE: Final = re.compile(rf"{_COMPONENT}(?:\.{_COMPONENT})*")
_PATTERN_RE: Final = re.compile(rf"(?:{_COMPONENT}|\*)(?:\.(?:{_COMPONENT}|\*))*")
_COMPONENT_RE: Final = re.compile(_COMPONENT)


def _class_problem(text: str, kind: str) -> str | None:
    """Why *text* is not a valid class (kind "class") or pattern (kind "pattern"), or None."""
    whole = _PATTERN_RE if kind == "pattern" else _CLASS_RE
    if whole.fullmatch(text):
        return None
    if not text:
        return f"invalid {kind} '': it is empty"
    for component in text.split("."):
        if not component:
            return f"invalid {kind} {_show(text)}: empty component"
        if kind == "pattern" and "*" in component and component != "*":
            return f"invalid {kind} {_show(text)}: '*' must be a whole component"
        if not _COMPONENT_RE.fullmatch(component) and not (kind == "pattern" and component == "*"):
            return (
                f"invalid {kind} {_show(text)}: component {_show(component, 40)}"
                " has characters outside [A-Za-z0-9_-]"
            )
    return f"invalid {kind} {_show(text)}"  # pragma: no cover - the loop finds the reason


def validate_class(cls: str) -> str:
    """Return *cls* if it is a valid event class, else raise ProtocolError."""
    problem = _class_problem(cls, "class")
    if problem is not None:
        raise ProtocolError(problem)
    return cls


def validate_pattern(pattern: str) -> str:
    """Return *pattern* if it is a valid subscription pattern, else raise ProtocolError."""
    problem = _class_problem(pattern, "pattern")
    if problem is not None:
        raise ProtocolError(problem)
    return pattern


def class_match(pattern: str, cls: str) -> bool:
    """Whether event class *cls* matches subscription *pattern* (see the rules above)."""
    if pattern == cls or pattern == "*":
        return True
    wanted = pattern.split(".")
    got = cls.split(".")
    if wanted[-1] == "*":
        n = len(wanted) - 1
        if len(got) <= n:
            return False
    else:
        n = len(wanted)
        if len(got) != n:
            return False
    return all(wanted[i] == "*" or wanted[i] == got[i] for i in range(n))


# ---------------------------------------------------------------------------
# Time


_MAX_EPOCH_S: Final = 253_402_300_800  # 10000-01-01T00:00:00Z: datetime's limit
_EPOCH_ORDINAL: Final = datetime(1970, 1, 1, tzinfo=UTC).toordinal()
_ISO_RE: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:[.,]([0-9]+))?(Z|z|[+-][0-9]{2}(?::?[0-9]{2})?)?"
)
_TIME_TYPE_MESSAGE: Final = "'time' must be epoch seconds or an ISO 8601 string"


def utc_iso(time_ns: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ`` for nanoseconds since the epoch (truncated to µs)."""
    sec, ns = divmod(time_ns, _NS_PER_S)
    t = gmtime(sec)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{ns // 1000:06d}Z"
    )


def _iso_to_ns(text: str) -> int:
    m = _ISO_RE.fullmatch(text)
    if m is None:
        raise EventRejected(f"{_TIME_TYPE_MESSAGE}, not {_show(text, 60)}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction, zone = m.group(7), m.group(8)
    try:
        days = datetime(year, month, day, hour, minute, second).toordinal() - _EPOCH_ORDINAL
    except ValueError as exc:
        raise EventRejected(f"'time' {_show(text, 60)} is not a valid date: {exc}") from None
    seconds = days * 86400 + hour * 3600 + minute * 60 + second
    if zone and zone not in "Zz":
        digits = zone[1:].replace(":", "")
        off_h, off_m = int(digits[:2]), int(digits[2:] or "0")
        if off_h > 23 or off_m > 59:
            raise EventRejected(f"'time' {_show(text, 60)} has a bad UTC offset")
        offset = off_h * 3600 + off_m * 60
        seconds += -offset if zone[0] == "+" else offset
    ns = int((fraction or "")[:9].ljust(9, "0"))
    return _time_in_range(seconds * _NS_PER_S + ns, text)


def _time_in_range(time_ns: int, shown: object) -> int:
    if not 0 <= time_ns < _MAX_EPOCH_S * _NS_PER_S:
        raise EventRejected(
            f"'time' {_show(shown, 60)} is out of range (1970-01-01 to 9999-12-31 UTC)"
        )
    return time_ns


def parse_time(value: object) -> int:
    """Nanoseconds since the epoch from epoch seconds (int or float) or an ISO 8601 string.

    An ISO string without a zone is taken as UTC.  Raises EventRejected.
    """
    if type(value) is int:
        return _time_in_range(value * _NS_PER_S, value)
    if type(value) is float:
        if not math.isfinite(value):
            raise EventRejected(f"'time' {value} is not a finite number")
        if not 0 <= value < _MAX_EPOCH_S:
            return _time_in_range(-1, value)
        sec = int(value)
        return sec * _NS_PER_S + round((value - sec) * _NS_PER_S)
    if isinstance(value, str):
        return _iso_to_ns(value)
    raise EventRejected(_TIME_TYPE_MESSAGE)


# ---------------------------------------------------------------------------
# Suspects and list events

FAULT_FAULTY: Final = 0x1
FAULT_UNUSABLE: Final = 0x2
FAULT_NOT_PRESENT: Final = 0x4
FAULT_DEGRADED: Final = 0x8
FAULT_REPAIRED: Final = 0x10
FAULT_REPLACED: Final = 0x20
FAULT_ACQUITTED: Final = 0x40

SUSPECT_PREFIXES: Final = ("fault.", "defect.", "upset.")
ListClass = Literal[
    "list.suspect", "list.isolated", "list.repaired", "list.updated", "list.resolved"
]
LIST_CLASSES: Final[tuple[ListClass, ...]] = (
    "list.suspect",
    "list.isolated",
    "list.repaired",
    "list.updated",
    "list.resolved",
)
_LIST_CLASS_SET: Final = frozenset(LIST_CLASSES)


def is_list_class(cls: str) -> TypeGuard[ListClass]:
    """Whether *cls* is one of the five ``list.*`` classes."""
    return cls in _LIST_CLASS_SET


def _coerce_fmri(value: object) -> object:
    if isinstance(value, Fmri):
        return value
    if isinstance(value, str | Mapping):
        try:
            return fmri_from_obj(value)
        except FmriError as exc:
            raise ValueError(str(exc)) from None
    raise ValueError(f"expected an FMRI string or object, not {_json_type(value)}")


FmriField = Annotated[Fmri, BeforeValidator(_coerce_fmri), PlainSerializer(fmri_to_json)]
FmdFmriField = Annotated[FmdFmri, BeforeValidator(_coerce_fmri), PlainSerializer(fmri_to_json)]


def _coerce_diag_time(value: object) -> object:
    if type(value) is int:
        return value
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(type(v) is int for v in value)
        and value[0] >= 0
        and 0 <= value[1] < 1_000_000
    ):
        return value[0] * _NS_PER_S + value[1] * 1000
    raise ValueError(
        f"'diag-time' must be [seconds, microseconds] or integer nanoseconds, not {_show(value)}"
    )


def _diag_time_json(time_ns: int) -> list[int]:
    sec, ns = divmod(time_ns, _NS_PER_S)
    return [sec, ns // 1000]


def _serialize_diag_time(time_ns: int, info: SerializationInfo) -> int | list[int]:
    return _diag_time_json(time_ns) if info.mode_is_json() else time_ns


_M = TypeVar("_M", bound=BaseModel)


def _validate_model(model: type[_M], data: object, what: str) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ProtocolError(f"invalid {what}: {_pydantic_message(exc)}") from None


class Suspect(BaseModel):
    """One entry of a list event's fault-list: a fault, defect or upset with its resources.

    Members unknown to fmd (a diagnosis engine's own payload) are kept.
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="allow", strict=True)

    cls: str = Field(alias="class")
    certainty: int = Field(ge=0, le=100)
    asru: FmriField | None = None
    fru: FmriField | None = None
    resource: FmriField | None = None
    location: str | None = None
    message: bool = True
    retire: bool = True
    response: bool = True

    @field_validator("cls")
    @classmethod
    def _check_class(cls, value: str) -> str:
        if not value.startswith(SUSPECT_PREFIXES):
            raise ValueError(f"suspect class {value!r} must start with fault., defect. or upset.")
        problem = _class_problem(value, "class")
        if problem is not None:
            raise ValueError(problem)
        return value

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON-ready form with the protocol's member names."""
        d: dict[str, Any] = {"class": self.cls, "certainty": self.certainty}
        for name in ("asru", "fru", "resource"):
            fmri = getattr(self, name)
            if fmri is not None:
                d[name] = fmri_to_json(fmri)
        if self.location is not None:
            d["location"] = self.location
        d["message"] = self.message
        d["retire"] = self.retire
        d["response"] = self.response
        if self.model_extra:
            d.update(self.model_extra)
        return d

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> Suspect:
        """Validate the JSON form; raise ProtocolError naming every bad member."""
        return _validate_model(cls, data, "suspect")


class ListEvent(BaseModel):
    """A ``list.*`` event: a diagnosis (list.suspect) or a later change to its suspects.

    ``fault_status[i]`` holds the FAULT_* bits of ``fault_list[i]``.
    ``diag_time_ns`` is written as ``[seconds, microseconds]`` in JSON.
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid", strict=True)

    cls: ListClass = Field(alias="class")
    uuid: str = Field(min_length=1)
    code: str
    diag_time_ns: Annotated[
        int, BeforeValidator(_coerce_diag_time), PlainSerializer(_serialize_diag_time)
    ] = Field(alias="diag-time", ge=0)
    de: FmdFmriField
    fault_list: list[Suspect] = Field(alias="fault-list")
    fault_status: list[Annotated[int, Field(ge=0, le=0xFF)]] = Field(alias="fault-status")
    message: bool = True
    injected: bool = Field(default=False, alias="__injected")
    version: int = Field(default=0, ge=0, le=0xFF)

    @model_validator(mode="before")
    @classmethod
    def _check_list_size(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "fault-list-sz" in data:
            data = dict(data)
            size = data.pop("fault-list-sz")
            faults = data.get("fault-list", data.get("fault_list"))
            count = len(faults) if isinstance(faults, list) else None
            if type(size) is not int or size != count:
                raise ValueError(f"'fault-list-sz' is {_show(size)} but 'fault-list' has {count}")
        return data

    @model_validator(mode="after")
    def _check_status(self) -> Self:
        if len(self.fault_status) != len(self.fault_list):
            raise ValueError(
                f"'fault-status' has {len(self.fault_status)} entries"
                f" but 'fault-list' has {len(self.fault_list)}"
            )
        return self

    @property
    def fault_list_sz(self) -> int:
        """The number of suspects."""
        return len(self.fault_list)

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON-ready form with the protocol's member names, ``fault-list-sz`` included."""
        d: dict[str, Any] = {
            "version": self.version,
            "class": self.cls,
            "uuid": self.uuid,
            "code": self.code,
            "diag-time": _diag_time_json(self.diag_time_ns),
            "de": fmri_to_json(self.de),
            "fault-list-sz": len(self.fault_list),
            "fault-list": [s.to_json_dict() for s in self.fault_list],
            "fault-status": list(self.fault_status),
            "message": self.message,
        }
        if self.injected:
            d["__injected"] = True
        return d

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> ListEvent:
        """Validate the JSON form; raise ProtocolError naming every bad member."""
        return _validate_model(cls, data, "list event")


# ---------------------------------------------------------------------------
# Ereports and the wire format.
#
# One ereport is one JSON object per line:
#   class       required string, "ereport." + a valid class
#   ena         optional integer, "0x..." hex or decimal string (generated if absent)
#   time        optional epoch seconds (number) or ISO 8601 string (now if absent)
#   detector    optional FMRI string or object
#   __injected  optional boolean (set by fminject)
# Every other member is class-specific payload and is kept as it is.  null is
# not accepted for the members above.

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
    if _CLASS_RE.fullmatch(cls) is None:
        return _class_problem(cls, "class")
    if len(_VALID_EREPORT_CLASSES) < _VALID_EREPORT_CLASSES_MAX:
        _VALID_EREPORT_CLASSES.add(cls)  # set.add is atomic: no lock needed
    return None


def _detector(value: object) -> tuple[Fmri, str]:
    try:
        if isinstance(value, str):
            return _parse_detector(value)
        if isinstance(value, Mapping):
            fmri = fmri_from_obj(value)
            return fmri, fmri.to_string()
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
    return Ereport(cls, ena, time_ns, fmri, fmri_str, d, injected)


def ereport_from_json_dict(d: Mapping[str, Any], *, now_ns: int, ena_gen: EnaGenerator) -> Ereport:
    """An Ereport from an already-decoded JSON object; EventRejected says what was wrong.

    *d* is not modified.  Without ``ena`` one is made by *ena_gen*; without
    ``time`` the event time is *now_ns*.
    """
    if not isinstance(d, Mapping):
        raise EventRejected("event is not a JSON object")
    return _ereport_from_owned(dict(d), now_ns, ena_gen)


def parse_ereport_line(
    line: bytes, *, now_ns: int, ena_gen: EnaGenerator, max_len: int = 1 << 20
) -> Ereport:
    """Decode one line of the wire format (a trailing newline is allowed) into an Ereport."""
    if line.endswith(b"\n"):
        line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
    if len(line) > max_len:
        raise EventRejected(f"line exceeds {max_len} bytes")
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise EventRejected(f"line is not valid UTF-8 at byte {bad.start}") from None
        raise EventRejected(f"malformed JSON: {exc}") from None
    if type(obj) is not dict:
        raise EventRejected("event is not a JSON object")
    return _ereport_from_owned(obj, now_ns, ena_gen)


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
