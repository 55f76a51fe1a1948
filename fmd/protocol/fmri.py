"""FMRI models: the four schemes, their string and object forms, parsing and building.

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
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Final, Literal, NoReturn, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fmd.errors import FmriError
from fmd.protocol._common import _U64, _json_type, _pydantic_message, _show
from fmd.protocol._fmri_text import _parse_uint, _qn, _qv, _split_pair, _unquote
from fmd.protocol.limits import MAX_FMRI_LEN, MAX_FMRI_PAIRS

_AUTHORITY_VALUE_BAD: Final = re.compile(r"[:=/\s]")


def sanitize_authority(value: str) -> str:
    """Make *value* safe as an authority value: ``:``, ``=``, ``/`` and whitespace become ``-``."""
    return _AUTHORITY_VALUE_BAD.sub("-", value)


Pairs = tuple[tuple[str, str], ...]
_HC_IDENT: Final = ("serial", "part", "revision")


def _check_pairs(what: str, pairs: Pairs, *, unique: bool, reserved: Iterable[str] = ()) -> None:
    if len(pairs) > MAX_FMRI_PAIRS:
        raise ValueError(f"{what} has {len(pairs)} members; at most {MAX_FMRI_PAIRS} are allowed")
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
    if len(text) > MAX_FMRI_LEN:
        raise FmriError(
            f"bad FMRI {_show(text)}: longer than {MAX_FMRI_LEN} characters ({len(text)})"
        )
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


# The parse caches hold at most _CACHE_ENTRIES strings of at most _CACHE_KEY_LEN
# characters (longer ones are parsed every time), so their memory is bounded in
# bytes whatever a sender invents: a few MB.
_CACHE_ENTRIES: Final = 4096
_CACHE_KEY_LEN: Final = 512


def parse_fmri_cached(text: str) -> Fmri:
    """:func:`parse_fmri` with a cache: detectors repeat heavily on the ingest path."""
    if len(text) > _CACHE_KEY_LEN:
        return parse_fmri(text)
    return _parse_fmri_lru(text)


@functools.lru_cache(maxsize=_CACHE_ENTRIES)
def _parse_fmri_lru(text: str) -> Fmri:
    return parse_fmri(text)


def _parse_detector(text: str) -> tuple[Fmri, str]:
    """A detector string parsed, with its canonical form (cached for short strings)."""
    if len(text) > _CACHE_KEY_LEN:
        fmri = parse_fmri(text)
        return fmri, fmri.to_string()
    return _parse_detector_lru(text)


@functools.lru_cache(maxsize=_CACHE_ENTRIES)
def _parse_detector_lru(text: str) -> tuple[Fmri, str]:
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
