"""Fault dictionaries and message files: map suspect classes to message codes and texts.

A diagnosis names its suspects by class; users see a message code such as
``GMCA-8000-1K`` and the text behind it.  This module owns both halves:

* ``.dict`` files map a sorted set of suspect classes to a number within a
  named dictionary; :func:`encode_code` turns (dictionary, number) into the
  printable code with the illumos algorithm (size class, CRC-32 checksum,
  32-letter alphabet), so fmd's codes are the ones illumos publishes, and
  :func:`decode_code` reverses it and verifies the checksum.
* ``.po`` files hold, per code, the six message fields (type, severity,
  description, response, impact, action) in the gettext subset illumos uses.
* :class:`DictionarySet` loads both from a list of directories and answers
  "which code for these suspects" and "which text for this code".

Nothing here logs or dispatches; the daemon and the agents call it.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fmd.errors import DictionaryError

ALPHABET = "0123456789ACDEFGHJKLMNPQRSTUVWXY"
"""The 32 code characters: digits and letters, without B, I, O and Z."""

_ALPHABET_INDEX = {ch: i for i, ch in enumerate(ALPHABET)}

# (data bits, checksum bits) for size classes 0..3.  Each class has 4 leading
# bits ("01" + the class number), and 4 + data + checksum is a multiple of 5.
_SIZE_CLASSES: tuple[tuple[int, int], ...] = ((21, 5), (38, 8), (55, 11), (72, 14))

# The first value each size class encodes: a class covers the values left
# over by all the smaller classes.
_CLASS_BASE: tuple[int, ...] = tuple(
    sum(1 << data for data, _ in _SIZE_CLASSES[:i]) for i in range(len(_SIZE_CLASSES))
)

MAX_VALUE = _CLASS_BASE[-1] + (1 << _SIZE_CLASSES[-1][0]) - 1
"""The largest number a dictionary entry may have."""

FMD_DICT = "FMD"
NODIAGCODE_CLASS = "defect.sunos.fmd.nodiagcode"
NODIAGCODE = "FMD-8000-11"
"""The code of a suspect list that no dictionary knows (FMD value 1)."""

DEFAULT_MSG_URL = "http://illumos.org/msg/"
"""The knowledge-article URL base substituted into descriptions by default."""

MESSAGE_FIELDS: tuple[str, ...] = (
    "type",
    "severity",
    "description",
    "response",
    "impact",
    "action",
)

_DICT_NAME_RE = re.compile(r"[A-Za-z0-9_]+")
_CODE_SHAPE_RE = re.compile(r"[A-Za-z0-9_]+(?:-[0-9A-Z]+)+")


def _make_crc_table() -> tuple[int, ...]:
    """The MSB-first CRC-32 table for polynomial 0x04C11DB7."""
    table = []
    for i in range(256):
        crc = i << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return tuple(table)


_CRC_TABLE = _make_crc_table()


def _crc_step(crc: int, value: int) -> int:
    return ((crc << 8) ^ _CRC_TABLE[((crc >> 24) ^ value) & 0xFF]) & 0xFFFFFFFF


def _checksum(dict_name: str, groups: Sequence[int], bits: int) -> int:
    """CRC the upper-cased dictionary name, then every 5-bit group; keep the low bits."""
    crc = 0
    for byte in dict_name.upper().encode("ascii"):
        crc = _crc_step(crc, byte)
    for group in groups:
        crc = _crc_step(crc, group)
    return crc & ((1 << bits) - 1)


def _to_groups(number: int, total_bits: int) -> list[int]:
    """Split ``number`` (``total_bits`` wide, a multiple of 5) into 5-bit groups, MSB first."""
    return [(number >> shift) & 0x1F for shift in range(total_bits - 5, -1, -5)]


def _check_dict_name(dict_name: str) -> None:
    if not _DICT_NAME_RE.fullmatch(dict_name) or not dict_name.isascii():
        raise DictionaryError(
            f"dictionary name {dict_name!r} is invalid: use ASCII letters, digits and '_'"
        )


@functools.lru_cache(maxsize=4096)
def encode_code(dict_name: str, value: int) -> str:
    """Return the message code for entry ``value`` of dictionary ``dict_name``."""
    _check_dict_name(dict_name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_VALUE:
        raise DictionaryError(f"dictionary {dict_name}: value {value!r} is outside 0..{MAX_VALUE}")
    size = max(i for i, base in enumerate(_CLASS_BASE) if value >= base)
    data_bits, sum_bits = _SIZE_CLASSES[size]
    total = 4 + data_bits + sum_bits
    # "01", the size class, the data, then a zeroed checksum field.
    number = (((0b01 << 2) | size) << data_bits | (value - _CLASS_BASE[size])) << sum_bits
    number |= _checksum(dict_name, _to_groups(number, total), sum_bits)
    chars = "".join(ALPHABET[g] for g in _to_groups(number, total))
    body, tail = chars[:-2], chars[-2:]
    parts = [body[i : i + 4] for i in range(0, len(body), 4)]
    return "-".join([dict_name, *parts, tail])


def decode_code(code: str) -> tuple[str, int]:
    """Return (dictionary name, value) for a code; DictionaryError if malformed or corrupt."""
    dict_name, sep, rest = code.partition("-")
    if not sep or not _DICT_NAME_RE.fullmatch(dict_name):
        raise DictionaryError(f"{code!r} is not a message code: expected DICT-XXXX-XX")
    parts = rest.split("-")
    chars = "".join(parts)
    if not chars or any(ch not in _ALPHABET_INDEX for ch in chars):
        raise DictionaryError(
            f"{code!r} is not a message code: only the characters {ALPHABET} may follow "
            "the dictionary name"
        )
    groups = [_ALPHABET_INDEX[ch] for ch in chars]
    if groups[0] >> 3 != 0b01:
        raise DictionaryError(f"{code!r} is not a message code: its first character is wrong")
    size = (groups[0] >> 1) & 0b11
    data_bits, sum_bits = _SIZE_CLASSES[size]
    total = 4 + data_bits + sum_bits
    nchars = total // 5
    expected = [4] * ((nchars - 2) // 4) + [2]
    if [len(p) for p in parts] != expected:
        layout = "-".join("X" * n for n in expected)
        raise DictionaryError(
            f"{code!r} is not a message code: size class {size} codes look like DICT-{layout}"
        )
    number = 0
    for group in groups:
        number = (number << 5) | group
    stored = number & ((1 << sum_bits) - 1)
    zeroed = number & ~((1 << sum_bits) - 1)
    if _checksum(dict_name, _to_groups(zeroed, total), sum_bits) != stored:
        raise DictionaryError(f"{code!r} has a bad checksum: it was mistyped or corrupted")
    data = (number >> sum_bits) & ((1 << data_bits) - 1)
    return dict_name, _CLASS_BASE[size] + data


def _class_key(classes: Iterable[str]) -> tuple[str, ...]:
    """The lookup key of a suspect list: its sorted set of classes."""
    return tuple(sorted(set(classes)))


# ---------------------------------------------------------------------------
# .dict files


@dataclass(slots=True)
class Dictionary:
    """One parsed ``.dict`` file: header values and class-set -> number entries."""

    name: str
    version: int = 1
    maxkey: int = 1
    dictid: int | None = None
    entries: dict[tuple[str, ...], int] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, classes: Iterable[str]) -> str | None:
        """The code for exactly this set of suspect classes, or None if there is none."""
        value = self.entries.get(_class_key(classes))
        return None if value is None else encode_code(self.name, value)

    def classes(self) -> list[str]:
        """Every class named by any entry, sorted."""
        return sorted({cls for key in self.entries for cls in key})

    def codes(self) -> dict[str, tuple[str, ...]]:
        """Every entry's code mapped to its class set, in number order."""
        return {
            encode_code(self.name, value): key
            for key, value in sorted(self.entries.items(), key=lambda kv: kv[1])
        }

    def key_for(self, value: int) -> tuple[str, ...] | None:
        """The class set of the entry numbered ``value``, or None."""
        for key, number in self.entries.items():
            if number == value:
                return key
        return None

    @classmethod
    def load(cls, path: Path | str) -> Dictionary:
        """Parse a ``.dict`` file; DictionaryError naming file and line if malformed."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DictionaryError(f"{path}: cannot read dictionary: {exc}") from None
        return cls.parse(text, source=str(path), path=path)

    @classmethod
    def parse(cls, text: str, source: str = "<string>", path: Path | None = None) -> Dictionary:
        """Parse ``.dict`` text; ``source`` names it in error messages."""
        header: dict[str, str] | None = None
        header_line = 0
        entries: dict[tuple[str, ...], int] = {}
        key_lines: dict[tuple[str, ...], int] = {}
        value_lines: dict[int, tuple[int, tuple[str, ...]]] = {}
        version, maxkey, dictid = 1, 1, None
        fail = _Fail(source)

        for lineno, raw in enumerate(text.split("\n"), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("FMDICT:"):
                if header is not None:
                    raise fail(lineno, f"second FMDICT header (the first is on line {header_line})")
                header, header_line = {}, lineno
                for word in line[len("FMDICT:") :].split():
                    prop, eq, val = word.partition("=")
                    if not eq or not prop or not val:
                        raise fail(lineno, f"header item {word!r} is not name=value")
                    if prop in header:
                        raise fail(lineno, f"header item {prop!r} is given twice")
                    header[prop] = val
                if "name" not in header:
                    raise fail(lineno, "the FMDICT header has no name=")
                try:
                    _check_dict_name(header["name"])
                except DictionaryError as exc:
                    raise fail(lineno, str(exc)) from None
                version_value = _header_int(header, "version", fail, lineno)
                version = 1 if version_value is None else version_value
                maxkey_value = _header_int(header, "maxkey", fail, lineno)
                maxkey = 1 if maxkey_value is None else maxkey_value
                if maxkey < 1:
                    raise fail(lineno, f"maxkey must be at least 1, got {maxkey}")
                dictid = _header_int(header, "dictid", fail, lineno)
                continue
            if header is None:
                raise fail(lineno, "entry before the 'FMDICT: name=...' header line")
            classes_text, eq, number_text = line.rpartition("=")
            if not eq:
                raise fail(lineno, f"expected '<class>[ <class>...]=<number>', got {line!r}")
            classes = classes_text.split()
            if not classes:
                raise fail(lineno, "entry has no classes before '='")
            if len(set(classes)) != len(classes):
                raise fail(lineno, "entry lists the same class twice")
            if len(classes) > maxkey:
                raise fail(lineno, f"entry has {len(classes)} classes, more than maxkey={maxkey}")
            number_text = number_text.strip()
            if not number_text.isascii() or not number_text.isdigit():
                raise fail(lineno, f"bad number {number_text!r}: expected a decimal integer")
            value = int(number_text)
            if value > MAX_VALUE:
                raise fail(lineno, f"number {value} is larger than the maximum {MAX_VALUE}")
            key = _class_key(classes)
            if key in key_lines:
                raise fail(
                    lineno, f"duplicate key {' '.join(key)!r} (first on line {key_lines[key]})"
                )
            if value in value_lines:
                first_line, first_key = value_lines[value]
                raise fail(
                    lineno,
                    f"duplicate number {value} (already used on line {first_line} "
                    f"by {' '.join(first_key)!r})",
                )
            entries[key] = value
            key_lines[key] = lineno
            value_lines[value] = (lineno, key)

        if header is None:
            raise DictionaryError(f"{source}: missing 'FMDICT: name=...' header line")
        return cls(
            name=header["name"],
            version=version,
            maxkey=maxkey,
            dictid=dictid,
            entries=entries,
            properties=header,
            path=path,
        )


def _header_int(header: Mapping[str, str], prop: str, fail: _Fail, lineno: int) -> int | None:
    """An integer header item (decimal or 0x hex), or None if it is absent."""
    text = header.get(prop)
    if text is None:
        return None
    try:
        return int(text, 0)
    except ValueError:
        raise fail(lineno, f"header item {prop}={text!r} is not an integer") from None


# ---------------------------------------------------------------------------
# .po message files


@dataclass(frozen=True, slots=True)
class Message:
    """The six message fields of one code."""

    code: str
    type: str
    severity: str
    description: str
    response: str
    impact: str
    action: str

    def description_with_url(self, url: str = DEFAULT_MSG_URL) -> str:
        """The description with ``%s`` replaced by the URL (plus the code if it ends in '/')."""
        target = url + self.code if url.endswith("/") else url
        return self.description.replace("%s", target, 1)


_ESCAPES = {"n": "\n", '"': '"', "\\": "\\"}


def _unquote(text: str, fail: _Fail, lineno: int) -> str:
    """Decode one double-quoted .po string (the whole of ``text``)."""
    if len(text) < 2 or not text.startswith('"'):
        raise fail(lineno, f"expected a double-quoted string, got {text!r}")
    out: list[str] = []
    i = 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 >= len(text) or text[i + 1] not in _ESCAPES:
                raise fail(lineno, f"unsupported escape {text[i : i + 2]!r}")
            out.append(_ESCAPES[text[i + 1]])
            i += 2
            continue
        if ch == '"':
            if text[i + 1 :].strip():
                raise fail(lineno, f"unexpected text after the closing quote: {text[i + 1 :]!r}")
            return "".join(out)
        out.append(ch)
        i += 1
    raise fail(lineno, "unterminated string (no closing quote)")


class _Fail:
    """Builds DictionaryErrors that name the file and line."""

    __slots__ = ("source",)

    def __init__(self, source: str) -> None:
        self.source = source

    def __call__(self, lineno: int, what: str) -> DictionaryError:
        return DictionaryError(f"{self.source}:{lineno}: {what}")


@dataclass(slots=True)
class MessageCatalog:
    """One parsed ``.po`` file: every msgid's text, and the per-code message fields."""

    strings: dict[str, str] = field(default_factory=dict)
    path: Path | None = None

    def text(self, msgid: str) -> str | None:
        """The msgstr of any msgid (for example ``syslog-msgs-message-template``)."""
        return self.strings.get(msgid)

    def codes(self) -> list[str]:
        """Every code that has at least one message field, sorted."""
        found = set()
        for msgid in self.strings:
            code, dot, fld = msgid.rpartition(".")
            if dot and fld in MESSAGE_FIELDS and _CODE_SHAPE_RE.fullmatch(code):
                found.add(code)
        return sorted(found)

    def missing_fields(self, code: str) -> list[str]:
        """The message fields that ``code`` lacks, in canonical order."""
        return [f for f in MESSAGE_FIELDS if f"{code}.{f}" not in self.strings]

    def get(self, code: str) -> Message | None:
        """The message of ``code`` (absent fields are empty), or None if it has none."""
        values = {f: self.strings.get(f"{code}.{f}") for f in MESSAGE_FIELDS}
        if all(v is None for v in values.values()):
            return None
        return Message(
            code=code,
            type=values["type"] or "",
            severity=values["severity"] or "",
            description=values["description"] or "",
            response=values["response"] or "",
            impact=values["impact"] or "",
            action=values["action"] or "",
        )

    @classmethod
    def load(cls, path: Path | str) -> MessageCatalog:
        """Parse a ``.po`` file; DictionaryError naming file and line if malformed."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DictionaryError(f"{path}: cannot read message file: {exc}") from None
        return cls.parse(text, source=str(path), path=path)

    @classmethod
    def parse(cls, text: str, source: str = "<string>", path: Path | None = None) -> MessageCatalog:
        """Parse the ``.po`` subset illumos uses: comments, msgid/msgstr, continuations."""
        fail = _Fail(source)
        strings: dict[str, str] = {}
        id_lines: dict[str, int] = {}
        # The entry being read: its msgid parts, msgstr parts (None until msgstr
        # is seen), and the line of its msgid.
        msgid: list[str] | None = None
        msgstr: list[str] | None = None
        msgid_line = 0

        def finish() -> None:
            assert msgid is not None and msgstr is not None
            key = "".join(msgid)
            if key == "":
                return  # the gettext header entry carries no message
            if key in id_lines:
                raise fail(msgid_line, f"duplicate msgid {key!r} (first on line {id_lines[key]})")
            code, dot, fld = key.rpartition(".")
            if dot and _CODE_SHAPE_RE.fullmatch(code) and fld not in MESSAGE_FIELDS:
                raise fail(
                    msgid_line,
                    f"msgid {key!r} has unknown field {fld!r}; "
                    f"expected one of {', '.join(MESSAGE_FIELDS)}",
                )
            strings[key] = "".join(msgstr)
            id_lines[key] = msgid_line

        for lineno, raw in enumerate(text.split("\n"), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            keyword, _, rest = line.partition(" ")
            if keyword == "msgid":
                if msgid is not None:
                    if msgstr is None:
                        raise fail(lineno, f"msgid on line {msgid_line} has no msgstr")
                    finish()
                msgid, msgstr, msgid_line = [_unquote(rest.strip(), fail, lineno)], None, lineno
            elif keyword == "msgstr":
                if msgid is None or msgstr is not None:
                    raise fail(lineno, "msgstr without a preceding msgid")
                msgstr = [_unquote(rest.strip(), fail, lineno)]
            elif line.startswith('"'):
                if msgid is None:
                    raise fail(lineno, "continued string outside a msgid/msgstr")
                (msgid if msgstr is None else msgstr).append(_unquote(line, fail, lineno))
            else:
                raise fail(lineno, f"expected msgid, msgstr, a string or a comment, got {line!r}")
        if msgid is not None:
            if msgstr is None:
                raise fail(msgid_line, "msgid has no msgstr before the end of the file")
            finish()
        return cls(strings=strings, path=path)


# ---------------------------------------------------------------------------
# The set of dictionaries fmd knows


def default_dict_dirs() -> list[Path]:
    """The built-in dictionary directories: the source tree's, then the installed one."""
    dirs: list[Path] = []
    source_tree = Path(__file__).resolve().parents[1] / "dict"
    if source_tree.is_dir():
        dirs.append(source_tree)
    dirs.append(Path(sys.prefix) / "share" / "fmd" / "dict")
    return dirs


class DictionarySet:
    """Every dictionary and message file fmd loaded, keyed by dictionary name."""

    __slots__ = ("_catalogs", "_dicts", "_problems")

    def __init__(self) -> None:
        self._dicts: dict[str, Dictionary] = {}
        self._catalogs: dict[str, MessageCatalog] = {}
        self._problems: list[str] = []

    @classmethod
    def load(cls, dirs: Iterable[Path | str]) -> DictionarySet:
        """Load ``<NAME>.dict`` and ``<NAME>.po`` from each directory; the first wins per name."""
        dset = cls()
        for directory in map(Path, dirs):
            if not directory.is_dir():
                continue
            for dict_path in sorted(directory.glob("*.dict")):
                if dict_path.stem in dset._dicts:
                    continue  # shadowed by an earlier directory
                dictionary = Dictionary.load(dict_path)
                if dictionary.name != dict_path.stem:
                    dset._problems.append(
                        f"{dict_path}: declares dictionary {dictionary.name!r}; "
                        f"the file must be named {dictionary.name}.dict"
                    )
                    continue
                po_path = dict_path.with_suffix(".po")
                catalog = MessageCatalog.load(po_path) if po_path.is_file() else None
                dset.add(dictionary, catalog)
        return dset

    def add(self, dictionary: Dictionary, catalog: MessageCatalog | None = None) -> bool:
        """Add a dictionary and its messages unless the name is taken; True if added."""
        if dictionary.name in self._dicts:
            return False
        self._dicts[dictionary.name] = dictionary
        if catalog is not None:
            self._catalogs[dictionary.name] = catalog
        return True

    def __iter__(self) -> Iterator[Dictionary]:
        """Iterate over the dictionaries in name order."""
        for name in sorted(self._dicts):
            yield self._dicts[name]

    def __len__(self) -> int:
        return len(self._dicts)

    def names(self) -> list[str]:
        """The loaded dictionary names, sorted."""
        return sorted(self._dicts)

    def get(self, name: str) -> Dictionary | None:
        """The dictionary called ``name``, or None."""
        return self._dicts.get(name)

    def catalog(self, name: str) -> MessageCatalog | None:
        """The message file of dictionary ``name``, or None."""
        return self._catalogs.get(name)

    def lookup(self, dict_name: str, classes: Iterable[str]) -> str | None:
        """The code for this suspect class set in ``dict_name``, or None (no fallback)."""
        dictionary = self._dicts.get(dict_name)
        return None if dictionary is None else dictionary.lookup(classes)

    def nodiagcode(self) -> str:
        """The code for a suspect list that no dictionary knows (FMD-8000-11)."""
        code = self.lookup(FMD_DICT, [NODIAGCODE_CLASS])
        return NODIAGCODE if code is None else code

    def code_for(self, dict_name: str, classes: Iterable[str]) -> str:
        """The code for this suspect class set, or the nodiagcode when there is no entry."""
        code = self.lookup(dict_name, classes)
        return self.nodiagcode() if code is None else code

    def message(self, code: str) -> Message | None:
        """The message texts of ``code``, or None if the code or its message is unknown."""
        dict_name = code.partition("-")[0]
        catalog = self._catalogs.get(dict_name)
        return None if catalog is None else catalog.get(code)

    def validate(self) -> list[str]:
        """Every problem found (empty when all is well); never raises."""
        problems = list(self._problems)
        for dictionary in self:
            where = str(dictionary.path) if dictionary.path else dictionary.name
            catalog = self._catalogs.get(dictionary.name)
            if catalog is None:
                problems.append(f"{where}: dictionary {dictionary.name} has no .po message file")
            for code, key in dictionary.codes().items():
                problems.extend(_check_entry(dictionary, code, key, catalog))
            if catalog is not None:
                problems.extend(_check_catalog(dictionary, catalog))
        return problems


def _check_entry(
    dictionary: Dictionary, code: str, key: tuple[str, ...], catalog: MessageCatalog | None
) -> list[str]:
    """Problems with one dictionary entry: its code and its message."""
    where = str(dictionary.path) if dictionary.path else dictionary.name
    problems: list[str] = []
    value = dictionary.entries[key]
    try:
        decoded = decode_code(code)
    except DictionaryError as exc:
        decoded = None
        problems.append(f"{where}: {' '.join(key)}={value}: {exc}")
    if decoded is not None and decoded != (dictionary.name, value):
        problems.append(f"{where}: {code} decodes to {decoded}, not ({dictionary.name}, {value})")
    if catalog is None:
        return problems
    message = catalog.get(code)
    if message is None:
        problems.append(f"{where}: {code} ({' '.join(key)}) has no message")
        return problems
    missing = catalog.missing_fields(code)
    if missing:
        problems.append(f"{where}: message {code} lacks {', '.join(missing)}")
    empty = [f for f in MESSAGE_FIELDS if f not in missing and not getattr(message, f).strip()]
    if empty:
        problems.append(f"{where}: message {code} has empty {', '.join(empty)}")
    description = message.description
    if description and (description.count("%s") != 1 or description.count("%") != 1):
        problems.append(
            f"{where}: message {code} description must contain exactly one %s and no other %"
        )
    return problems


def _check_catalog(dictionary: Dictionary, catalog: MessageCatalog) -> list[str]:
    """Problems with messages whose code is not an entry of their dictionary."""
    where = str(catalog.path) if catalog.path else f"{dictionary.name}.po"
    problems: list[str] = []
    known = dictionary.codes()
    for code in catalog.codes():
        if code in known:
            continue
        try:
            dict_name, value = decode_code(code)
        except DictionaryError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if dict_name != dictionary.name:
            problems.append(f"{where}: message {code} belongs to dictionary {dict_name}")
        else:
            problems.append(f"{where}: message {code} (value {value}) has no dictionary entry")
    return problems
