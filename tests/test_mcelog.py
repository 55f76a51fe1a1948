"""Tests for fmd.hw.mcelog: reading the mcelog and kernel machine-check text forms."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fmd.hw.mca import McaRecord, decode
from fmd.hw.mcelog import ParsedMca, ParsedRecord, ParseFailure, parse_mce_text

_PFX = "<0>[ 4142.218829] mce: [Hardware Error]: "
KERNEL_UC = f"""\
{_PFX}CPU 2: Machine Check Exception: 5 Bank 1: bd80000000100134
{_PFX}RIP !INEXACT! 33:<00007f3c2a1b2c40> {{memtest}}
{_PFX}TSC 2f1ad9c4e1 ADDR 3ab1c7400 MISC 86
{_PFX}PROCESSOR 0:606a6 TIME 1682293811 SOCKET 1 APIC 44 microcode d000389
{_PFX}Run the above through 'mcelog --ascii'
"""

KERNEL_AMD = """\
mce: [Hardware Error]: CPU 7: Machine Check: 0 Bank 4: 9c7d4000000a0813
mce: [Hardware Error]: TSC 0 ADDR f075b2040 MISC c008000001000000 SYND 4d000000 IPID 9600050f00
mce: [Hardware Error]: PROCESSOR 2:a20f10 TIME 1682293811 SOCKET 0 APIC e microcode a201009
"""

MCELOG_DECODED = """\
Hardware event. This is not a software error.
MCE 0
CPU 0 BANK 2
MISC 0 ADDR 1e9f000
TIME 946951762 Tue Jan  4 02:09:22 2000
MCG status:
MCi status:
Corrected error
MCi_MISC register valid
MCi_ADDR register valid
MCA: MEMORY CONTROLLER AC_CHANNEL0_ERR
Transaction: Address/Command error
STATUS 8c000000000000b0 MCGSTATUS 0
MCGCAP 1000c16 APICID 0 SOCKETID 0
CPUID Vendor Intel Family 6 Model 44
"""

RAW_TWO_RECORDS = """\
CPU 1 BANK 8
STATUS 0x8c00004000010090
ADDR 0x1996d2040
MISC 0x908c0000800
MCGSTATUS 0x0
MCGCAP 0x1000c18
SOCKETID 0
APICID 0x2
PROCESSOR 0:206f2

CPU 3 5
STATUS cc0000000000017a
MCGSTATUS 0
"""


def only_records(items: list[ParsedRecord]) -> list[McaRecord]:
    """The records of a parse, asserting there are no failures."""
    assert all(isinstance(item, ParsedMca) for item in items), items
    return [item.record for item in items if isinstance(item, ParsedMca)]


def test_kernel_four_line_form() -> None:
    """The kernel's __print_mce block becomes one record with every register it names."""
    [item] = parse_mce_text(KERNEL_UC)
    assert isinstance(item, ParsedMca)
    assert item.line == 1
    assert item.record == McaRecord(
        bank=1,
        status=0xBD80000000100134,
        cpu=2,
        socket=1,
        apicid=0x44,
        addr=0x3AB1C7400,
        misc=0x86,
        mcg_status=5,
        vendor="GenuineIntel",
        family=6,
        model=0x6A,
        time_ns=1682293811 * 10**9,
        tsc=0x2F1AD9C4E1,
        ip=0x7F3C2A1B2C40,
        cs=0x33,
    )


def test_kernel_form_decodes_as_srar() -> None:
    """A parsed SRAR data-load record decodes to the L0 data cache class."""
    [record] = only_records(parse_mce_text(KERNEL_UC))
    decoded = decode(record)
    assert decoded.leaf == "l0dcache_uc"
    assert decoded.compound_errorname == "DCACHELO_DRD_ERR"


def test_kernel_amd_form_with_smca_fields() -> None:
    """The AMD kernel block fills vendor, family 19h, SYND and IPID."""
    [record] = only_records(parse_mce_text(KERNEL_AMD))
    assert record.vendor == "AuthenticAMD"
    assert (record.family, record.model) == (0x19, 0x21)
    assert record.synd == 0x4D000000
    assert record.ipid == 0x9600050F00
    assert record.cpu == 7
    assert record.bank == 4
    assert record.apicid == 0xE


def test_mcelog_decoded_output_reads_back() -> None:
    """mcelog's decoded block, prose and all, yields the record it describes."""
    [item] = parse_mce_text(MCELOG_DECODED)
    assert isinstance(item, ParsedMca)
    assert item.line == 3
    record = item.record
    assert record.status == 0x8C000000000000B0
    assert (record.cpu, record.bank, record.addr, record.misc) == (0, 2, 0x1E9F000, 0)
    assert record.time_ns == 946951762 * 10**9
    assert (record.vendor, record.family, record.model) == ("GenuineIntel", 6, 44)
    assert record.mcg_cap == 0x1000C16
    assert decode(record).compound_errorname == "MC_CH0_ADDR_CMD_ERR"


def test_raw_records_separated_by_blank_line() -> None:
    """Two raw records, the second in the 'CPU n b' form, come back in order."""
    items = parse_mce_text(RAW_TWO_RECORDS)
    first, second = only_records(items)
    assert [item.line for item in items] == [1, 11]
    assert first.misc == 0x908C0000800
    assert first.family == 6
    assert first.model == 0x2F
    assert (second.cpu, second.bank, second.status) == (3, 5, 0xCC0000000000017A)


def test_hardware_error_banner_separates_records() -> None:
    """An mcelog 'HARDWARE ERROR' banner ends the record before it."""
    text = (
        "CPU 0 BANK 1 STATUS 9000000000000135\n"
        "mcelog: HARDWARE ERROR. This is *NOT* a software problem!\n"
        "STATUS 9000000000000135 BANK 2\n"
    )
    first, second = only_records(parse_mce_text(text))
    assert (first.bank, second.bank) == (1, 2)
    assert second.cpu is None


def test_header_starts_a_new_record() -> None:
    """A CPU header closes the open record even without a blank line."""
    text = "CPU 0 BANK 1\nSTATUS 9000000000000135\nCPU 1 BANK 3\nSTATUS 9000000000000135\n"
    records = only_records(parse_mce_text(text))
    assert [(r.cpu, r.bank) for r in records] == [(0, 1), (1, 3)]


def test_xen_console_form() -> None:
    """The Xen console's CPU sentence and 'Bank b: status at addr' line form one record."""
    text = (
        "(XEN) MCE: The hardware reports a non fatal, correctable incident occurred on CPU 3.\n"
        "(XEN) Bank 8: 8c00004000010091 at 00000002f6a1c040\n"
    )
    [record] = only_records(parse_mce_text(text))
    assert (record.cpu, record.bank) == (3, 8)
    assert record.status == 0x8C00004000010091
    assert record.addr == 0x2F6A1C040


def test_other_cpu_prose_is_ignored() -> None:
    """Kernel lines such as 'CPU 3: Core temperature ...' neither open nor break records."""
    text = (
        "CPU 0 BANK 1\n"
        "mce: CPU 3: Core temperature above threshold, cpu clock throttled\n"
        "STATUS 9000000000000135\n"
    )
    [record] = only_records(parse_mce_text(text))
    assert (record.cpu, record.bank, record.status) == (0, 1, 0x9000000000000135)


def test_bad_hex_names_its_line() -> None:
    """A malformed STATUS makes the record a failure on that line; the next record survives."""
    text = "CPU 0 BANK 1\nSTATUS 90000g0000000135\n\nCPU 0 BANK 2\nSTATUS 9000000000000135\n"
    bad, good = parse_mce_text(text)
    assert isinstance(bad, ParseFailure)
    assert bad.line == 2
    assert "STATUS" in bad.reason
    assert "hex" in bad.reason
    assert isinstance(good, ParsedMca)
    assert good.record.bank == 2


def test_missing_status_and_bank() -> None:
    """Records without STATUS or without BANK are failures naming what is missing."""
    text = "CPU 0 BANK 1\nADDR 1000\n\nSTATUS 9000000000000135\n"
    no_status, no_bank = parse_mce_text(text)
    assert no_status == ParseFailure(1, "record has no STATUS")
    assert isinstance(no_bank, ParseFailure)
    assert no_bank.line == 4
    assert "BANK" in no_bank.reason


def test_val_clear_is_a_failure() -> None:
    """A record whose STATUS has VAL clear is reported as a failure, not a record."""
    [item] = parse_mce_text("CPU 0 BANK 1\nSTATUS 1000000000000135\n")
    assert isinstance(item, ParseFailure)
    assert item.line == 1
    assert "VAL" in item.reason


def test_value_wider_than_64_bits() -> None:
    """A register value that does not fit in 64 bits is a failure."""
    [item] = parse_mce_text("CPU 0 BANK 1 STATUS 1ffffffffffffffff\n")
    assert isinstance(item, ParseFailure)
    assert "64 bits" in item.reason


def test_bank_out_of_range() -> None:
    """A bank number beyond 255 is refused with the record validation message."""
    [item] = parse_mce_text("CPU 0 BANK 300 STATUS 9000000000000135\n")
    assert isinstance(item, ParseFailure)
    assert "bank 300" in item.reason


def test_bad_rip_and_processor() -> None:
    """Malformed RIP and PROCESSOR values are failures naming the keyword."""
    [rip] = parse_mce_text("CPU 0 BANK 1 STATUS 9000000000000135\nRIP zz\n")
    [proc] = parse_mce_text("CPU 0 BANK 1 STATUS 9000000000000135\nPROCESSOR x:1\n")
    assert isinstance(rip, ParseFailure)
    assert rip.line == 2
    assert "RIP" in rip.reason
    assert isinstance(proc, ParseFailure)
    assert "PROCESSOR" in proc.reason


def test_empty_and_prose_only_text() -> None:
    """Text with no machine-check tokens gives no items."""
    assert parse_mce_text("") == []
    assert parse_mce_text("kernel: all is well\n\nnothing to see\n") == []


# --- property tests -----------------------------------------------------------------------

_u64 = st.integers(0, (1 << 64) - 1)


@st.composite
def records(draw: st.DrawFn) -> McaRecord:
    """Records that the mcelog raw form can express exactly."""
    return McaRecord(
        cpu=draw(st.integers(0, 4096)),
        bank=draw(st.integers(0, 255)),
        status=draw(_u64) | (1 << 63),
        addr=draw(st.none() | _u64),
        misc=draw(st.none() | _u64),
        mcg_status=draw(_u64),
        mcg_cap=draw(_u64),
        socket=draw(st.none() | st.integers(0, 64)),
        apicid=draw(st.none() | st.integers(0, 0xFFFF)),
        time_ns=draw(st.none() | st.integers(0, 2**33).map(lambda s: s * 10**9)),
    )


def format_raw(record: McaRecord) -> str:
    """Write a record in the mcelog raw form, one KEY value per line."""
    lines = [
        f"CPU {record.cpu} BANK {record.bank}",
        f"STATUS {record.status:x}",
        f"MCGSTATUS 0x{record.mcg_status:x}",
        f"MCGCAP {record.mcg_cap:x}",
    ]
    if record.addr is not None:
        lines.append(f"ADDR 0x{record.addr:x}")
    if record.misc is not None:
        lines.append(f"MISC {record.misc:x}")
    if record.socket is not None:
        lines.append(f"SOCKETID {record.socket}")
    if record.apicid is not None:
        lines.append(f"APICID {record.apicid:x}")
    if record.time_ns is not None:
        lines.append(f"TIME {record.time_ns // 10**9} Tue Jan  4 02:09:22 2000")
    return "\n".join(lines) + "\n"


@given(st.lists(records(), min_size=1, max_size=4))
def test_raw_form_round_trips(recs: list[McaRecord]) -> None:
    """Records written in the raw form and separated by blank lines parse back equal."""
    text = "\n".join(format_raw(r) for r in recs)
    assert only_records(parse_mce_text(text)) == recs


def check_items(text: str, items: list[ParsedRecord]) -> None:
    """Every item is a record or a failure whose line lies inside the text."""
    nlines = len(text.splitlines())
    for item in items:
        assert isinstance(item, ParsedMca | ParseFailure)
        assert 1 <= item.line <= nlines
        if isinstance(item, ParseFailure):
            assert item.reason


_ALPHABET = st.sampled_from(
    [
        *"0123456789abcdefxX:<>!{}. \t\n-",
        *["CPU ", "BANK ", "Bank ", "STATUS ", "ADDR ", "MISC ", "RIP ", "PROCESSOR ", "TIME "],
        *["Machine Check: ", "Machine Check Exception: ", "CPUID Vendor ", "Family ", "Model "],
        *["HARDWARE ERROR", "\u0663", "\u00a0", "\r", "_", "at "],
    ]
)


@given(st.text())
def test_arbitrary_text_never_raises(text: str) -> None:
    """Any Unicode text parses without raising."""
    check_items(text, parse_mce_text(text))


@given(st.lists(_ALPHABET, max_size=60).map("".join))
def test_keyword_soup_never_raises(text: str) -> None:
    """Random sequences of keywords, digits and punctuation parse without raising."""
    check_items(text, parse_mce_text(text))


@given(
    base=st.sampled_from([KERNEL_UC, KERNEL_AMD, MCELOG_DECODED, RAW_TWO_RECORDS]),
    edits=st.lists(
        st.tuples(st.integers(0, 2000), st.integers(0, 3), st.sampled_from(list(" 0fgZ:\n<x"))),
        max_size=8,
    ),
)
def test_mutated_valid_text_never_raises(base: str, edits: list[tuple[int, int, str]]) -> None:
    """Valid samples with characters inserted, deleted or replaced parse without raising."""
    text = base
    for pos, op, char in edits:
        at = pos % (len(text) + 1)
        if op == 0:
            text = text[:at] + char + text[at:]
        elif op == 1:
            text = text[:at] + text[at + 1 :]
        else:
            text = text[:at] + char + text[at + 1 :]
    check_items(text, parse_mce_text(text))


# --- the mce-inject language -----------------------------------------------------------------

_VAL, _OVER, _UC, _EN = 1 << 63, 1 << 62, 1 << 61, 1 << 60
_MISCV, _ADDRV, _PCC, _S, _AR = 1 << 59, 1 << 58, 1 << 57, 1 << 56, 1 << 55
_STATUS_BITS = {
    "CORRECTED": _VAL | _EN,
    "UNCORRECTED": _VAL | _UC | _EN,
    "FATAL": _VAL | _UC | _EN | _PCC,
    "VAL": _VAL,
    "OVER": _OVER,
    "UC": _UC,
    "EN": _EN,
    "MISCV": _MISCV,
    "ADDRV": _ADDRV,
    "PCC": _PCC,
    "S": _S,
    "AR": _AR,
    "TES_YELLOW": 1 << 54,
    "UCNA": 0,
    "SRAO": _S,
    "SRAR": _S | _AR,
}


def test_symbolic_status_and_mcgstatus() -> None:
    """STATUS and MCGSTATUS words are OR-ed with the numbers beside them (C literals)."""
    text = "CPU 0 BANK 2\nSTATUS UNCORRECTED SRAR 0x134\nMCGSTATUS RIPV MCIP EIPV\n"
    [record] = only_records(parse_mce_text(text))
    assert record.status == _VAL | _UC | _EN | _S | _AR | 0x134
    assert record.mcg_status == 0b111


def test_mce_inject_addr_and_misc_set_their_valid_bits() -> None:
    """In a record whose STATUS is symbolic, ADDR and MISC set ADDRV and MISCV."""
    text = "CPU 0 BANK 2\nSTATUS UNCORRECTED SRAO 0x17a\nADDR 0x1234\nMISC 0x8c\n"
    [record] = only_records(parse_mce_text(text))
    assert record.status == _VAL | _UC | _EN | _S | _ADDRV | _MISCV | 0x17A
    # ...but a numeric (mcelog) STATUS is taken exactly as given.
    [raw] = only_records(parse_mce_text("CPU 0 BANK 2\nSTATUS 0x9000000000000135\nADDR 1\n"))
    assert raw.status == 0x9000000000000135


def test_mce_inject_commands_and_rip() -> None:
    """HOLD, POLL, EXCP, NOBROADCAST ... change no register; RIP takes 0x-prefixed cs:ip."""
    text = (
        "CPU 3 BANK 1\nSTATUS CORRECTED\nRIP 0x73:0x1eadbabe\n"
        "HOLD POLL EXCP NOBROADCAST IRQBROADCAST NMIBROADCAST IN_IRQ IN_PROC\n"
    )
    [record] = only_records(parse_mce_text(text))
    assert (record.cpu, record.bank, record.status) == (3, 1, _VAL | _EN)
    assert (record.cs, record.ip) == (0x73, 0x1EADBABE)


def test_mce_inject_held_empty_records_yield_nothing() -> None:
    """mce-test's held companion records (a bare 'CPU n BANK b' after HOLD) are empty
    injections: they yield no record and no failure."""
    text = "CPU 0 BANK 1\nSTATUS CORRECTED\nHOLD\nCPU 1 BANK 0\n#\nCPU 1 BANK 2\nSTATUS CORRECTED\n"
    records = only_records(parse_mce_text(text))
    assert [(r.cpu, r.bank) for r in records] == [(0, 1), (1, 2)]
    # Outside the mce-inject language a bare header is still a failure.
    assert parse_mce_text("CPU 1 BANK 0\n") == [ParseFailure(1, "record has no STATUS")]


def test_mce_and_cpu_alone_start_records() -> None:
    """mce-inject's 'MCE' and 'CPU n' lines start records; BANK follows on its own."""
    text = "MCE\nBANK 4\nSTATUS FATAL\nCPU 2\nBANK 1\nSTATUS corrected\n"
    first, second = only_records(parse_mce_text(text))
    assert (first.cpu, first.bank, first.status) == (None, 4, _VAL | _UC | _EN | _PCC)
    assert (second.cpu, second.bank, second.status) == (2, 1, _VAL | _EN)


def test_bad_number_in_a_symbolic_status_is_a_failure() -> None:
    """A number in a symbolic list that is not a C literal (bare hex) is an error."""
    [item] = parse_mce_text("CPU 0 BANK 1\nSTATUS UNCORRECTED 17a\n")
    assert isinstance(item, ParseFailure)
    assert item.line == 2
    assert "17a" in item.reason


@given(
    words=st.lists(st.sampled_from(sorted(_STATUS_BITS)), min_size=1, max_size=6),
    number=st.none() | st.integers(0, 0xFFFF),
    lower=st.booleans(),
)
def test_symbolic_status_is_the_or_of_its_words(
    words: list[str], number: int | None, lower: bool
) -> None:
    """Any list of STATUS words (any case) and one number gives the OR of their bits."""
    items = [w.lower() if lower else w for w in words]
    if number is not None:
        items.append(hex(number))
    text = f"CPU 0 BANK 1\nSTATUS {' '.join(items)}\n"
    expected = 0
    for word in words:
        expected |= _STATUS_BITS[word]
    expected |= number or 0
    parsed = parse_mce_text(text)
    if expected & _VAL:
        [record] = only_records(parsed)
        assert record.status == expected
    else:
        assert [type(i) for i in parsed] == [ParseFailure]


# --- prose is not a record -------------------------------------------------------------------


def test_prose_with_a_register_word_is_ignored() -> None:
    """Boot lines that merely contain a register word neither open nor fail records."""
    text = (
        "(XEN) checking TSC synchronization across 2 CPUs: passed.\n"
        "[    0.000000] TSC deadline timer available\n"
        "tsc: Marking TSC unstable due to clocksource watchdog\n"
        "(XEN) CPU 0 BANK 1\n"
        "(XEN) STATUS 9000000000000135\n"
        "kernel: TSC deadline timer enabled\n"
    )
    [record] = only_records(parse_mce_text(text))
    assert (record.cpu, record.bank, record.status) == (0, 1, 0x9000000000000135)
    assert parse_mce_text("(XEN) checking TSC synchronization across 2 CPUs: passed.\n") == []


def test_malformed_values_on_record_lines_are_still_errors() -> None:
    """A bad value followed by nothing or by another keyword is a record line's error."""
    for line in ("STATUS 90000g0000000135", "STATUS zz MISC 0", "mcelog: ADDR nothex"):
        [item] = parse_mce_text(f"CPU 0 BANK 1\n{line}\n")
        assert isinstance(item, ParseFailure), line
        assert item.line == 2


def test_too_wide_numbers_are_errors_even_in_prose() -> None:
    """A number too wide for its register is an error wherever it stands."""
    [item] = parse_mce_text("CPU 0 BANK 1\nsaw TSC 1ffffffffffffffff cycles\n")
    assert isinstance(item, ParseFailure)
    assert "64 bits" in item.reason
