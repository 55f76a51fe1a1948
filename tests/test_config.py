"""Tests for fmd.config: value parsing, property tables, conf files and -o options."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fmd.config import (
    DAEMON_PROPERTIES,
    SIZE_SUFFIXES,
    TIME_SUFFIXES,
    ConfFile,
    Properties,
    PropSpec,
    PropType,
    parse_conf,
    parse_opt,
    parse_value,
)
from fmd.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

RANGES = {
    PropType.INT32: (-(2**31), 2**31 - 1),
    PropType.UINT32: (0, 2**32 - 1),
    PropType.INT64: (-(2**63), 2**63 - 1),
    PropType.UINT64: (0, 2**64 - 1),
}
INT_DEFAULTS = {
    PropType.INT32: "0",
    PropType.UINT32: "0",
    PropType.INT64: "0",
    PropType.UINT64: "0",
}


def spec(kind: PropType, default: str = "", choices: tuple[str, ...] = ()) -> PropSpec:
    """A throwaway spec named ``p`` with a default valid for ``kind``."""
    if not default:
        default = {
            PropType.BOOL: "false",
            PropType.TIME: "0",
            PropType.SIZE: "0",
            PropType.ENUM: choices[0] if choices else "",
        }.get(kind, INT_DEFAULTS.get(kind, ""))
    return PropSpec("p", kind, default, "test property", choices)


TABLE = (
    PropSpec("flag", PropType.BOOL, "true", "a flag"),
    PropSpec("count", PropType.UINT32, "7", "a count"),
    PropSpec("offset", PropType.INT64, "-3", "an offset"),
    PropSpec("name", PropType.STRING, "x", "a name"),
    PropSpec("mode", PropType.ENUM, "a", "a mode", ("a", "b")),
    PropSpec("period", PropType.TIME, "1h", "a period"),
    PropSpec("limit", PropType.SIZE, "1k", "a limit"),
)


# -- parse_value: integers ----------------------------------------------------


@pytest.mark.parametrize("kind", list(RANGES))
@given(data=st.data())
def test_int_decimal_and_hex_round_trip(kind: PropType, data: st.DataObject) -> None:
    """Every in-range integer parses back from its decimal and 0x hexadecimal text."""
    low, high = RANGES[kind]
    n = data.draw(st.integers(low, high))
    s = spec(kind)
    assert n == parse_value(s, str(n))
    hex_text = ("-" if n < 0 else "") + f"0x{abs(n):x}"
    assert n == parse_value(s, hex_text)
    assert n == parse_value(s, hex_text.upper().replace("0X", "0x"))


@pytest.mark.parametrize("kind", list(RANGES))
@given(data=st.data())
def test_int_out_of_range_rejected(kind: PropType, data: st.DataObject) -> None:
    """An integer outside its type's range is a ConfigError that states the range."""
    low, high = RANGES[kind]
    n = data.draw(st.one_of(st.integers(max_value=low - 1), st.integers(min_value=high + 1)))
    with pytest.raises(ConfigError, match=re.escape(f"({low} to {high})")):
        parse_value(spec(kind), str(n))


@pytest.mark.parametrize("kind", list(RANGES))
def test_int_boundaries(kind: PropType) -> None:
    """The exact ends of each integer range are accepted."""
    low, high = RANGES[kind]
    assert (low, high) == (parse_value(spec(kind), str(low)), parse_value(spec(kind), str(high)))


def test_int_error_message() -> None:
    """The message names the property, the bad text and the expected type."""
    s = PropSpec("store.batch", PropType.UINT32, "4096", "batch")
    with pytest.raises(ConfigError) as e:
        parse_value(s, "abc")
    assert str(e.value).startswith(
        "property 'store.batch': 'abc' is not an unsigned 32-bit integer"
    )


@pytest.mark.parametrize("text", ["", "1.0", "1_000", "0x", "12abc", "1e3", "0b101", "--1", "+-1"])
def test_int_malformed_rejected(text: str) -> None:
    """Text that is not a plain decimal or 0x hexadecimal integer is rejected."""
    with pytest.raises(ConfigError):
        parse_value(spec(PropType.INT64), text)


def test_int_huge_decimal_rejected_cleanly() -> None:
    """A decimal with more digits than int() converts is a range error, not a crash."""
    with pytest.raises(ConfigError, match="64-bit"):
        parse_value(spec(PropType.UINT64), "9" * 10_000)


# -- parse_value: booleans, strings, enums --------------------------------------

BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True}
BOOL_WORDS |= {"false": False, "no": False, "off": False, "0": False}


@given(st.sampled_from(sorted(BOOL_WORDS)), st.sampled_from([str.lower, str.upper, str.title]))
def test_bool_words(word: str, case: Callable[[str], str]) -> None:
    """Each boolean word parses, in any case."""
    assert BOOL_WORDS[word] is parse_value(spec(PropType.BOOL), case(word))


@given(st.text().filter(lambda t: t.strip().lower() not in BOOL_WORDS))
def test_bool_other_text_rejected(text: str) -> None:
    """Any other text is not a boolean."""
    with pytest.raises(ConfigError, match="is not a boolean"):
        parse_value(spec(PropType.BOOL), text)


@given(st.text())
def test_string_is_verbatim(text: str) -> None:
    """A STRING value is the text exactly, whitespace included."""
    assert text == parse_value(spec(PropType.STRING), text)


def test_enum_accepts_choices_and_names_them_on_error() -> None:
    """An ENUM takes only its choices; the error lists them."""
    s = spec(PropType.ENUM, choices=("native", "simulated"))
    assert parse_value(s, "simulated") == "simulated"
    with pytest.raises(ConfigError, match="'fake' is not one of: native, simulated"):
        parse_value(s, "fake")


# -- parse_value: TIME and SIZE -------------------------------------------------

EXPECTED_TIME_NS = {
    "72h": 72 * 3600 * 10**9,
    "1week": 7 * 86400 * 10**9,
    "30min": 30 * 60 * 10**9,
    "1.5h": 5400 * 10**9,
    "60s": 60 * 10**9,
    "1sec": 10**9,
    "500ms": 500 * 10**6,
    "2usec": 2000,
    "17": 17,
    "17ns": 17,
    "1d": 86400 * 10**9,
    "1month": 30 * 86400 * 10**9,
    "1year": 365 * 86400 * 10**9,
    "168hour": 168 * 3600 * 10**9,
    ".5s": 5 * 10**8,
    "2.s": 2 * 10**9,
    " 1H ": 3600 * 10**9,
}


@pytest.mark.parametrize(("text", "ns"), sorted(EXPECTED_TIME_NS.items()))
def test_time_examples(text: str, ns: int) -> None:
    """Documented TIME forms give the expected nanoseconds."""
    assert ns == parse_value(spec(PropType.TIME), text)


@given(st.integers(0, 2**64), st.sampled_from(sorted(TIME_SUFFIXES)))
def test_time_integer_times_suffix(n: int, suffix: str) -> None:
    """``<n><suffix>`` is n times the suffix's multiplier, up to 2**63-1 ns."""
    expected = n * TIME_SUFFIXES[suffix]
    if expected <= 2**63 - 1:
        assert parse_value(spec(PropType.TIME), f"{n}{suffix}") == expected
    else:
        with pytest.raises(ConfigError, match="is too large"):
            parse_value(spec(PropType.TIME), f"{n}{suffix}")


@given(st.integers(0, 10**5), st.integers(0, 999), st.sampled_from(["s", "min", "h", "d"]))
def test_time_fractions_are_exact(whole: int, millis: int, suffix: str) -> None:
    """A decimal fraction is scaled exactly, without floating-point error."""
    text = f"{whole}.{millis:03d}{suffix}"
    expected = (whole * 1000 + millis) * TIME_SUFFIXES[suffix] // 1000
    assert expected == parse_value(spec(PropType.TIME), text)


@pytest.mark.parametrize("text", ["", "m", "5m", "1 h", "-1s", "1.5ns", "h", "1fortnight", "0x10s"])
def test_time_malformed_rejected(text: str) -> None:
    """Unknown suffixes (including a bare m), negatives and fractional ns are rejected."""
    with pytest.raises(ConfigError):
        parse_value(spec(PropType.TIME), text)


def test_time_bare_m_explains_itself() -> None:
    """A TIME ending in a bare m is rejected with a hint to write min or ms."""
    with pytest.raises(ConfigError, match="write min for minutes or ms for milliseconds"):
        parse_value(spec(PropType.TIME), "5m")


def test_time_too_large_rejected() -> None:
    """A TIME beyond a signed 64-bit count of nanoseconds is rejected."""
    with pytest.raises(ConfigError, match="'1000year' is too large"):
        parse_value(spec(PropType.TIME), "1000year")


EXPECTED_SIZES = {"1m": 1 << 20, "1M": 1 << 20, "64k": 65536, "64KB": 65536, "1.5g": 3 << 29}
EXPECTED_SIZES |= {"2t": 2 << 40, "10": 10, "10b": 10, "1mb": 1 << 20, "3Gb": 3 << 30}


@pytest.mark.parametrize(("text", "size"), sorted(EXPECTED_SIZES.items()))
def test_size_examples(text: str, size: int) -> None:
    """Documented SIZE forms give the expected bytes, case-insensitively."""
    assert size == parse_value(spec(PropType.SIZE), text)


@given(st.integers(0, 2**64), st.sampled_from(sorted(SIZE_SUFFIXES)), st.booleans())
def test_size_integer_times_suffix(n: int, suffix: str, upper: bool) -> None:
    """``<n><suffix>`` is n times a power of 1024, whatever the suffix's case."""
    text = f"{n}{suffix.upper() if upper else suffix}"
    expected = n * SIZE_SUFFIXES[suffix]
    if expected <= 2**63 - 1:
        assert parse_value(spec(PropType.SIZE), text) == expected
    else:
        with pytest.raises(ConfigError, match="is too large"):
            parse_value(spec(PropType.SIZE), text)


@pytest.mark.parametrize("text", ["", "1.5b", "1kib", "-1k", "k", "1 k", "1p"])
def test_size_malformed_rejected(text: str) -> None:
    """Unknown suffixes, negatives and fractional bytes are rejected."""
    with pytest.raises(ConfigError, match="is not"):
        parse_value(spec(PropType.SIZE), text)


@pytest.mark.parametrize("kind", list(PropType))
@given(text=st.text(max_size=40))
def test_parse_value_raises_only_config_error(kind: PropType, text: str) -> None:
    """Arbitrary text either parses or raises ConfigError, never anything else."""
    s = spec(kind, choices=("a", "b") if kind is PropType.ENUM else ())
    try:
        parse_value(s, text)
    except ConfigError as e:
        assert "property 'p'" in str(e)


# -- PropSpec -------------------------------------------------------------------


def test_spec_rejects_bad_default() -> None:
    """A spec whose default does not parse cannot be made."""
    with pytest.raises(ConfigError, match="default of property 'n': 'lots'"):
        PropSpec("n", PropType.UINT32, "lots", "n")


def test_spec_enum_needs_choices() -> None:
    """An ENUM without choices, or choices on another type, is rejected."""
    with pytest.raises(ConfigError, match="no choices"):
        PropSpec("e", PropType.ENUM, "", "e")
    with pytest.raises(ConfigError, match="not an ENUM"):
        PropSpec("s", PropType.STRING, "", "s", ("a",))


@pytest.mark.parametrize("name", ["", "a b", "a=b", "a#b"])
def test_spec_rejects_bad_names(name: str) -> None:
    """A name that could not be written in a setprop line or -o option is rejected."""
    with pytest.raises(ConfigError, match="is invalid"):
        PropSpec(name, PropType.STRING, "", "x")


# -- Properties -----------------------------------------------------------------


def test_build_defaults() -> None:
    """With no sources every property holds its parsed default, from ``default``."""
    props = Properties.build(TABLE)
    assert list(props.items()) == [
        ("flag", True),
        ("count", 7),
        ("offset", -3),
        ("name", "x"),
        ("mode", "a"),
        ("period", 3600 * 10**9),
        ("limit", 1024),
    ]
    assert {"default"} == {props.origin(n) for n in props}


def test_build_later_sources_override() -> None:
    """A later source wins, and its origin and text are recorded."""
    props = Properties.build(
        TABLE,
        [
            ("count", "8", "fmd.conf:3"),
            ("period", "30min", "fmd.conf:4"),
            ("count", "0x10", "-o"),
        ],
    )
    assert (
        props.get_int("count"),
        props.origin("count"),
        props.text("count"),
    ) == (16, "-o", "0x10")
    assert (props.get_time_ns("period"), props.origin("period")) == (1800 * 10**9, "fmd.conf:4")
    assert props.origin("flag") == "default"


def test_build_unknown_name_suggests_close_names() -> None:
    """An unknown name is an error naming the origin and the closest known names."""
    with pytest.raises(ConfigError) as e:
        Properties.build(DAEMON_PROPERTIES, [("store.bach", "1", "etc/fmd/fmd.conf:12")])
    assert str(e.value).startswith("etc/fmd/fmd.conf:12: unknown property 'store.bach'")
    assert "'store.batch'" in str(e.value)


def test_build_unknown_name_without_close_match() -> None:
    """An unknown name with nothing similar still names the origin."""
    with pytest.raises(ConfigError, match=r"^-o: unknown property 'zzzzzz'; no known"):
        Properties.build(TABLE, [("zzzzzz", "1", "-o")])


def test_build_bad_value_names_origin() -> None:
    """A bad value is an error prefixed with its origin."""
    with pytest.raises(ConfigError) as e:
        Properties.build(TABLE, [("count", "abc", "x.conf:2")])
    assert str(e.value).startswith(
        "x.conf:2: property 'count': 'abc' is not an unsigned 32-bit integer"
    )


def test_build_rejects_duplicate_names() -> None:
    """A table that declares a name twice is rejected."""
    with pytest.raises(ConfigError, match="declared twice"):
        Properties.build((*TABLE, TABLE[0]))


def test_typed_getters() -> None:
    """Each typed getter returns its property's parsed value."""
    props = Properties.build(TABLE)
    assert (
        props.get_bool("flag"),
        props.get_int("count"),
        props.get_int("offset"),
        props.get_str("name"),
        props.get_str("mode"),
        props.get_time_ns("period"),
        props.get_size("limit"),
    ) == (True, 7, -3, "x", "a", 3600 * 10**9, 1024)


@pytest.mark.parametrize(
    ("getter", "name"),
    [("get_bool", "count"), ("get_int", "flag"), ("get_str", "period"), ("get_size", "period")],
)
def test_typed_getter_wrong_type(getter: str, name: str) -> None:
    """A typed getter used on a property of another type is an error naming both."""
    with pytest.raises(ConfigError, match=f"property '{name}' is of type"):
        getattr(Properties.build(TABLE), getter)(name)


def test_get_unknown_name() -> None:
    """get(), origin() and the typed getters reject undeclared names with a suggestion."""
    props = Properties.build(TABLE)
    for call in (props.get, props.origin, props.get_int):
        with pytest.raises(ConfigError, match="unknown property 'cont'; did you mean 'count'"):
            call("cont")


def test_mapping_protocol() -> None:
    """Properties reads like a mapping of name to value, in table order."""
    props = Properties.build(TABLE)
    assert [s.name for s in TABLE] == list(props)
    assert len(TABLE) == len(props)
    assert "flag" in props and "nope" not in props
    assert props["count"] == 7
    with pytest.raises(KeyError):
        props["nope"]
    assert props.specs == TABLE
    assert TABLE[1] is props.spec("count")


def test_properties_are_read_only() -> None:
    """Nothing can be assigned to a built Properties."""
    props = Properties.build(TABLE)
    with pytest.raises(AttributeError):
        setattr(props, "_values", {})  # noqa: B010
    with pytest.raises(TypeError):
        props._values["count"] = 1  # type: ignore[index]


# -- the daemon table -------------------------------------------------------------


def test_daemon_table_builds_and_has_expected_defaults() -> None:
    """The daemon table's defaults parse to the documented values."""
    props = Properties.build(DAEMON_PROPERTIES)
    assert dict(props.items()) == {
        "clock": "native",
        "platform": "auto",
        "topo.sysfs": "/sys",
        "topo.xenpm": "xenpm",
        "store.url": "",
        "store.sync": "full",
        "store.batch": 16384,
        "client.evqlim": 65536,
        "client.evqmem": 64 << 20,
        "client.error": "event",
        "xprt.socket": True,
        "xprt.file": "",
        "xprt.maxline": 1 << 20,
        "xprt.rate": 0,
        "xprt.burst": 10000,
        "xprt.coalesce": 100,
        "xprt.dedup_window": 30 * 24 * 3600 * 10**9,
        "xprt.tracefs": "auto",
        "xprt.tracefs.root": "",
        "xprt.tracefs.buffer_kb": 256,
        "xprt.kmsg": "auto",
        "xprt.kmsg.path": "/dev/kmsg",
        "xprt.mcelog": "auto",
        "xprt.mcelog.path": "/dev/mcelog",
        "xprt.edac": "auto",
        "xprt.edac.interval": 10 * 10**9,
        "xprt.pstore": "auto",
        "xprt.pstore.dir": "/sys/fs/pstore",
        "xprt.pstore.remove": False,
        "xprt.rasdaemon": "",
        "xprt.bootid": "/proc/sys/kernel/random/boot_id",
        "log.level": "info",
        "log.format": "auto",
        "log.errlimit": 10,
        "log.errwindow": 60 * 10**9,
        "log.minfree": 2 << 20,
        "access.group": "adm",
        "plugin.path": "",
        "modules.disable": "",
        "gc_interval": 86400 * 10**9,
        "ckpt.save": True,
        "ckpt.restore": True,
        "shutdown.wait": 10 * 10**9,
        "self.name": "fmd-self-diagnosis",
        "fg": False,
    }


def test_daemon_table_descriptions() -> None:
    """Every daemon property has a description that is a sentence."""
    for s in DAEMON_PROPERTIES:
        assert s.description.endswith("."), s.name
        assert len(s.description) > 20, s.name


def test_example_fmd_conf_lists_every_property_commented_out(tmp_path: Path) -> None:
    """etc/fmd/fmd.conf sets nothing and shows each property once with its default."""
    path = REPO / "etc" / "fmd" / "fmd.conf"
    assert parse_conf(path).setprops == []
    shown = [line[1:] for line in path.read_text().splitlines() if line.startswith("#setprop ")]
    uncommented = tmp_path / "fmd.conf"
    uncommented.write_text("\n".join(shown) + "\n")
    conf = parse_conf(uncommented)
    assert [(s.name, s.default) for s in DAEMON_PROPERTIES] == [
        (name, value) for name, value, _ in conf.setprops
    ]


@pytest.mark.parametrize("module", ["cpumem-retire", "syslog-msgs"])
def test_example_plugin_confs_list_every_property_commented_out(
    tmp_path: Path, module: str
) -> None:
    """etc/fmd/plugins/<agent>.conf sets nothing and shows each of the agent's
    properties once, in table order, with its default."""
    from agents.retire.agent import CpumemRetire
    from agents.syslog_msgs import SyslogMsgs

    table = {"cpumem-retire": CpumemRetire, "syslog-msgs": SyslogMsgs}[module].properties
    path = REPO / "etc" / "fmd" / "plugins" / f"{module}.conf"
    assert parse_conf(path).setprops == []
    shown = [line[1:] for line in path.read_text().splitlines() if line.startswith("#setprop ")]
    uncommented = tmp_path / "m.conf"
    uncommented.write_text("\n".join(shown) + "\n")
    conf = parse_conf(uncommented)
    assert [(s.name, s.default) for s in table] == [
        (name, value) for name, value, _ in conf.setprops
    ]


# -- conf files -------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    """Write ``text`` to ``tmp_path/m.conf`` and return its path."""
    path = tmp_path / "m.conf"
    path.write_text(text)
    return path


def test_parse_conf_all_directives(tmp_path: Path) -> None:
    """setprop, subscribe and dictionary lines are collected with file:line origins."""
    path = write(
        tmp_path,
        "# a module conf\n"
        "\n"
        "subscribe ereport.cpu.*   # trailing comment\n"
        "setprop autoclose upsets\n"
        '  setprop label "CPU 0 # socket"\n'
        "dictionary SUNOS\n"
        'setprop empty ""\n'
        "setprop url x#y\n",
    )
    conf = parse_conf(path)
    assert (
        ConfFile(
            path,
            setprops=[
                ("autoclose", "upsets", f"{path}:4"),
                ("label", "CPU 0 # socket", f"{path}:5"),
                ("empty", "", f"{path}:7"),
                ("url", "x#y", f"{path}:8"),
            ],
            subscriptions=[("ereport.cpu.*", f"{path}:3")],
            dictionaries=[("SUNOS", f"{path}:6")],
        )
        == conf
    )


def test_parse_conf_missing_file_is_empty(tmp_path: Path) -> None:
    """A conf file that does not exist reads as empty."""
    assert ConfFile(tmp_path / "none.conf") == parse_conf(tmp_path / "none.conf")


def test_parse_conf_unreadable_is_error(tmp_path: Path) -> None:
    """A path that exists but cannot be read as a file is an error."""
    with pytest.raises(ConfigError, match="cannot read"):
        parse_conf(tmp_path)


def test_parse_conf_not_utf8(tmp_path: Path) -> None:
    """A file that is not UTF-8 is an error naming it."""
    path = tmp_path / "bin.conf"
    path.write_bytes(b"setprop a \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        parse_conf(path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("setprp a b", "unknown directive 'setprp'"),
        ("setprop a", "setprop takes a name and one value"),
        ("setprop a b c", "quote a value that contains spaces"),
        ("subscribe", "subscribe takes one argument, found 0"),
        ("dictionary A B", "dictionary takes one argument, found 2"),
        ("dictionary ../x", "is not a dictionary name"),
        ('setprop a "b', "no closing"),
        ('setprop a "b"c', "'c' follows a closing"),
        ('setprop a b"c', "has a '\"' inside it"),
    ],
)
def test_parse_conf_errors_name_line_and_word(tmp_path: Path, line: str, message: str) -> None:
    """A bad line is an error naming file:line and what was wrong."""
    path = write(tmp_path, f"# ok\n{line}\n")
    with pytest.raises(ConfigError, match=f"^{re.escape(f'{path}:2: ')}.*{re.escape(message)}"):
        parse_conf(path)


def test_parse_conf_restricted_directives(tmp_path: Path) -> None:
    """A file limited to setprop rejects subscribe, listing what is allowed."""
    path = write(tmp_path, "subscribe ereport.*\n")
    with pytest.raises(ConfigError, match=r"unknown directive 'subscribe'; expected setprop$"):
        parse_conf(path, directives={"setprop"})


def quote(value: str) -> str:
    """Quote ``value`` the way a conf file writer would."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@given(
    st.text(
        alphabet=st.characters(
            blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="\x85"
        ),
    )
)
def test_parse_conf_quoted_value_round_trip(
    tmp_path_factory: pytest.TempPathFactory, value: str
) -> None:
    """Any single-line value, quoted with backslash escapes, reads back unchanged."""
    path = tmp_path_factory.mktemp("q") / "q.conf"
    path.write_text(f"setprop v {quote(value)}  # note\n", encoding="utf-8")
    assert [("v", value, f"{path}:1")] == parse_conf(path).setprops


def test_parse_conf_feeds_properties(tmp_path: Path) -> None:
    """setprop lines build Properties whose origins point at the file."""
    path = write(tmp_path, "setprop count 9\nsetprop period 72h\n")
    props = Properties.build(TABLE, parse_conf(path).setprops)
    assert (9, f"{path}:1") == (props.get_int("count"), props.origin("count"))
    assert props.get_time_ns("period") == 72 * 3600 * 10**9


# -- -o options -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("store.batch=1024", ("store.batch", "1024")),
        ("store.url=", ("store.url", "")),
        ("xprt.file=a=b,c", ("xprt.file", "a=b,c")),
        (" clock =simulated", ("clock", "simulated")),
    ],
)
def test_parse_opt(text: str, expected: tuple[str, str]) -> None:
    """-o name=value splits at the first '='; the value may be empty or contain '='."""
    assert expected == parse_opt(text)


@pytest.mark.parametrize("text", ["store.batch", "=1", ""])
def test_parse_opt_rejects_missing_name_or_equals(text: str) -> None:
    """-o without '=' or without a name is an error."""
    with pytest.raises(ConfigError, match="expected name=value"):
        parse_opt(text)
