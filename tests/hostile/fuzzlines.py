"""Seeded generators of hostile input, shared by the fuzz tests and ``bench/fuzz.py``.

Hypothesis drives the bounded property tests of the parsers; the streams fed to a
running daemon (thousands of lines in CI, millions in the long run) come from these
generators instead: each draws from one ``random.Random``, so a run is reproducible
from its seed, and is cheap enough to make a million inputs in seconds.

* :class:`WireFuzzer` makes ingest lines: valid ereports carrying a unique marker
  (``fuzzmark``) and fuzzed lines of many kinds (:data:`WIRE_KINDS`).  No line holds a
  newline, so every line gets exactly one reply.
* :class:`ControlFuzzer` makes control-socket request lines.
* :func:`mutate_mce`, :func:`mutate_program` and :func:`fmri_text` make mcelog text,
  injection-language programs and FMRI strings.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from fmd.xprt import CLOCK_CLASS

MARK = "fuzzmark"
"""The payload member that carries a valid event's unique marker."""

# Machine-check text from mcelog's and Xen's test inputs (the conformance corpus in
# tests/conformance holds them with their sources); the whole corpus is added from there.
SEED_MCE: tuple[str, ...] = (
    "CPU 0 2\nSTATUS 1234\nTSC 3062652eaab\nRIP 3f:<5678>\nMCGSTATUS 0x123\n",
    "CPU 0 BANK 1\nSTATUS 1234\nTSC 3062652eaab\nRIP 3f:<5678>\nPROCESSOR 0:6f5\n"
    "TIME 123456789\nSOCKETID 1\nMCGCAP 0xabc\nAPICID f\n",
    "# dimm0, channel0 corrected error\nCPU 0 2\nPROCESSOR 0:0x106a0\n"
    "STATUS 0x8800000000000080\nMISC 0\n",
    "# cache error on cpu 1 level 1 type 1 track 1\nCPU 1 2\n# nehalem\n"
    "PROCESSOR 0:0x106a0\nMCGCAP 0x800\nSTATUS 0x8820000000000105\n",
    "(XEN) MCE: The hardware reports a non fatal, correctable incident occurred on CPU 1.\n"
    "(XEN) Bank 2: d400008000040150 at    182c480179cf0\n",
    "Oct 25 13:39:31 h mcelog[9946]: Hardware event. This is not a software error.\n"
    "Oct 25 13:39:31 h mcelog[9946]: CPU 0 BANK 0\n"
    "Oct 25 13:39:31 h mcelog[9946]: TIME 1540467571 Thu Oct 25 13:39:31 2018\n"
    "Oct 25 13:39:31 h mcelog[9946]: STATUS d000000000000000 MCGSTATUS 0\n"
    "Oct 25 13:39:31 h mcelog[9946]: MCGCAP 100010a APICID 0 SOCKETID 0\n"
    "Oct 25 13:39:31 h mcelog[9946]: CPUID Vendor Intel Family 6 Model 94\n",
    "[  12.5] mce: [Hardware Error]: CPU 3: Machine Check Exception: 5 Bank 4: "
    "b200000000070f0f\n[  12.5] mce: [Hardware Error]: RIP !INEXACT! 10:<ffffffff8100b1a0>\n"
    "[  12.5] mce: [Hardware Error]: TSC 5f8a0 ADDR 1234000 MISC 8c\n",
    "CPU 3 BANK 2\nSTATUS 0x940000000000010a\nADDR 0x12345000\nMISC 0x8c\n"
    "CPUID Vendor AMD Family 16 Model 2\n",
)

# Injection-language programs (the README's and tests/test_injlang.py's forms).
SEED_PROGRAMS: tuple[str, ...] = (
    "fmridef cpu { uint8_t version; string scheme; uint32_t cpuid; };\n"
    "evdef ereport.cpu.generic-x86.l2cache { uint8_t version; fmri cpu detector;\n"
    "    uint64_t IA32_MCi_STATUS; boolean error_uncorrected; };\n"
    'fmri cpu cpu0 = { 1, "cpu", 0 };\n'
    "event ereport.cpu.generic-x86.l2cache ce = { 0, cpu0, 0x900000400001017a, false };\n"
    "repeat 4 ce;\naddhrtime 1 h;\n",
    "evdef ereport.t { uint64_t ena; string s; int8_t i; };\n"
    'event ereport.t e = { 0x1001, "x", -128 };\ne;\n',
    "evdef ereport.t { enum sev { LOW, HIGH } a; enum sev b; boolean_t c;\n"
    "    uint16_t d[3]; string e[]; };\n"
    "event ereport.t x = { HIGH, LOW, true, [1, 2, 0xffff], [] };\nx;\n",
    "authdef a { string product-id; };\nfmridef hc { uint8_t version; string scheme; auth a "
    "authority; };\nlistdef pair { string name; uint32_t id; };\n"
    "evdef ereport.t { fmri hc resource; list pair path[2]; };\n"
    'event ereport.t x = { { 0, "hc", { "prod" } }, [ {"chip", 1}, {"core", 2} ] };\nx;\n',
    "evdef ereport.inner { uint8_t n; };\nevdef ereport.outer { event ereport.inner cause; };\n"
    "event ereport.inner i = { 7 };\nevent ereport.outer o = { i };\no;\n",
    "/* two events */\nevdef ereport.t { uint8_t n; };\nevent ereport.t one = { 1 };\n"
    "event ereport.t two = { 2 };\nsleep 0;\naddhrtime 3 ms;\n"
    "repeat 5 randomize { {one, 50}, {two, 50} };\nendhrtime;\n",
)

_MCE_WORDS = (
    "CPU", "BANK", "Bank", "STATUS", "MCGSTATUS", "MCGCAP", "ADDR", "MISC", "TSC", "APICID",
    "APIC", "IPID", "SYND", "PPIN", "microcode", "SOCKETID", "SOCKET", "TIME", "RIP",
    "!INEXACT!", "PROCESSOR", "CPUID", "Vendor", "Family", "Model", "Machine", "Check",
    "Exception:", "Check:", "HARDWARE ERROR", "Hardware event", "at", "on", "(XEN)", "0:6f5",
    "3:", "2:", "1.", "10:<ffff>", "0x", "0x9400000000000101", "-1", "\t", "\n", "\n\n",
)  # fmt: skip
_INJ_WORDS = (
    "evdef", "fmridef", "authdef", "listdef", "event", "fmri", "auth", "list", "repeat",
    "randomize", "sleep", "addhrtime", "endhrtime", "uint8_t", "int64_t", "uint64_t",
    "string", "boolean", "enum", "scheme", "true", "false", "ereport.t", "e", "x", "{", "}",
    "[", "]", ";", ",", "=", '"', "/*", "*/", "\\", "\n", "1000000", "-1", "0x", "h", "ns",
)  # fmt: skip


def conformance_mce(repo: Path) -> list[str]:
    """The machine-check inputs of the conformance corpus (tests/conformance)."""
    base = repo / "tests" / "conformance"
    texts = []
    for sub in ("mcelog-tests", "mcelog-ascii", "xen"):
        folder = base / sub
        if folder.is_dir():
            texts += [p.read_text(errors="replace") for p in sorted(folder.glob("*.txt"))]
    return texts


def huge_digits(rng: random.Random) -> str:
    """A long run of digits (up to 4000, below Python's int conversion limit)."""
    return "".join(rng.choice("0123456789") for _ in range(rng.choice((21, 40, 41, 100, 4000))))


def mutate_text(rng: random.Random, text: str, words: Sequence[str], edits: int = 0) -> str:
    """``text`` with characters flipped, deleted or inserted, words and huge numbers
    inserted, spans duplicated, or the end cut off."""
    for _ in range(edits or rng.randint(1, 6)):
        at = rng.randint(0, len(text))
        op = rng.randrange(8)
        if op == 0:
            text = text[:at] + chr(rng.randrange(0x20, 0x7F)) + text[at + 1 :]
        elif op == 1:
            text = text[:at] + text[at + rng.randint(1, 8) :]
        elif op == 2:
            text = text[:at] + rng.choice(words) + " " + text[at:]
        elif op == 3:
            text = text[:at] + huge_digits(rng) + text[at:]
        elif op == 4:
            end = min(len(text), at + rng.randint(1, 80))
            text = text[:end] + text[at:end] * rng.randint(1, 3) + text[end:]
        elif op == 5:
            text = text[:at]
        elif op == 6:
            text = (
                text[:at] + chr(rng.choice((0, 0x85, 0x2028, 0xFFFD, 0x663, 0x1F600))) + text[at:]
            )
        else:
            text = text[:at] + "0x" + "f" * rng.choice((16, 17, 64)) + text[at:]
    return text


def mutate_mce(rng: random.Random, seeds: Sequence[str]) -> str:
    """A real machine-check record, mutated; or a soup of its keywords."""
    if rng.random() < 0.15:
        return " ".join(rng.choice(_MCE_WORDS) for _ in range(rng.randint(0, 40)))
    return mutate_text(rng, rng.choice(seeds), _MCE_WORDS)


def mutate_program(rng: random.Random, seeds: Sequence[str]) -> str:
    """A valid injection-language program, mutated; or one that tries to expand."""
    roll = rng.random()
    if roll < 0.1:
        return " ".join(rng.choice(_INJ_WORDS) for _ in range(rng.randint(0, 60)))
    if roll < 0.11:  # rarer: each is tens of kB of program text
        return expansion_program(rng)
    return mutate_text(rng, rng.choice(seeds), _INJ_WORDS)


def expansion_program(rng: random.Random) -> str:
    """A program that tries to make many or large events: chained definitions whose
    arrays repeat the previous one, big repeat counts, deep values."""
    width = rng.choice((2, 16, 64, 4096))
    depth = rng.randint(1, 9)
    lines = ["listdef l0 { string s; };", f'list l0 v0 = {{ "{"x" * rng.choice((1, 1000))}" }};']
    for i in range(1, depth + 1):
        lines.append(f"listdef l{i} {{ list l{i - 1} a[]; }};")
        lines.append(f"list l{i} v{i} = {{ [{', '.join([f'v{i - 1}'] * width)}] }};")
    lines.append(f"evdef ereport.bomb {{ list l{depth} p; }};")
    lines.append(f"event ereport.bomb b = {{ v{depth} }};")
    for _ in range(rng.randint(0, 3)):
        lines.append(f"repeat {rng.choice((1, 999_999, 1_000_000, 1_000_001))} b;")
    if rng.random() < 0.3:
        nest = rng.choice((31, 33, 5000))
        lines.append("evdef ereport.deep { uint8_t n[]; };")
        lines.append("event ereport.deep d = { " + "[" * nest + "1" + "]" * nest + " };")
    return "\n".join(lines) + "\n"


# -- FMRIs -------------------------------------------------------------------------

_ODD = "%/:=?&#ab0 \t\x00\x7fé☃"


def _odd(rng: random.Random, n: int = 8) -> str:
    return "".join(rng.choice(_ODD) for _ in range(rng.randint(0, n)))


def fmri_text(rng: random.Random) -> str:
    """A string that is, or is close to, an FMRI of one of the known schemes."""
    roll = rng.randrange(10)
    if roll == 0:
        return f"cpu:///cpuid={rng.choice((0, 15, 2**32 - 1, 2**32, -1))}" + (
            f"/serial={_odd(rng)}" if rng.random() < 0.5 else ""
        )
    if roll == 1:
        path = "/".join(
            f"{rng.choice(('motherboard', 'chip', 'core', 'strand', _odd(rng)))}={_odd(rng, 3)}"
            for _ in range(rng.choice((0, 1, 4, 64, 65)))
        )
        auth = ":server-id=h:product-id=p" if rng.random() < 0.5 else ""
        query = f"?offset=0x{rng.getrandbits(64):x}" if rng.random() < 0.3 else ""
        return f"hc://{auth}/{path}{query}"
    if roll == 2:
        return f"mem:///unum={_odd(rng)}/physaddr=0x{rng.getrandbits(rng.choice((8, 64, 65))):x}"
    if roll == 3:
        return f"fmd:///module/{_odd(rng)}"
    if roll == 4:
        return "cpu:///cpuid=0/serial=" + "x" * rng.choice((4073, 4074, 4075, 10000))
    if roll == 5:
        return rng.choice(("hc://", "hc:///", "cpu://", "mem:///", "fmd:///module/", "x://y", ""))
    if roll == 6:
        return "".join(rng.choice("%0123456789abcdefABCDEF/:=?&") for _ in range(20))
    return mutate_text(
        rng,
        rng.choice(("hc://:server-id=h/motherboard=0/chip=1/core=0/strand=1?physaddr=0x1000",
                    "cpu:///cpuid=3/serial=abc", "mem:///unum=motherboard=0%2Fchip=0/offset=0x10",
                    "fmd:///module/cpumem-diagnosis")),
        ("%", "%2", "%zz", "%FF", "=", "/", "://", ":", "?", "&", "0x"),
        rng.randint(1, 3),
    )  # fmt: skip


# -- JSON values ---------------------------------------------------------------------

_NUMBERS: tuple[Any, ...] = (
    0, -1, 1, 255, 256, 2**31, 2**32 - 1, 2**32, 2**52 - 1, 2**52, 2**53 + 1, 2**63 - 1, 2**63,
    2**64 - 1, -(2**63), 0.5, -0.0, 1e300, 3.14, 1e-300,
)  # fmt: skip


def json_value(rng: random.Random, budget: int = 6) -> Any:
    """A random JSON value (nested up to ``budget`` levels)."""
    roll = rng.randrange(10 if budget > 0 else 6)
    if roll == 0:
        return None
    if roll == 1:
        return rng.random() < 0.5
    if roll == 2:
        return rng.choice(_NUMBERS)
    if roll == 3:
        return rng.getrandbits(rng.choice((8, 32, 64))) - rng.choice((0, 2**7, 2**31))
    if roll == 4:
        return _odd(rng, 12)
    if roll == 5:
        return rng.choice(("0x9400000000000101", "0x", "0x1g", "ereport.x", "", "hc:///", "\0"))
    if roll < 8:
        return [json_value(rng, budget - 1) for _ in range(rng.randint(0, 3))]
    return {_odd(rng, 4): json_value(rng, budget - 1) for _ in range(rng.randint(0, 3))}


def dumps(obj: Any) -> bytes:
    """JSON bytes of ``obj``; integers beyond 64 bits are written in full."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")


# -- the ingest stream ------------------------------------------------------------------

RESERVED = ("class", "ena", "time", "detector", "__injected")
MCA_MEMBERS = (
    "bank", "status", "addr", "misc", "mcgstatus", "mcgcap", "cpu", "socket", "core",
    "thread", "apicid", "family", "model", "tsc", "ip", "cs", "ipid", "synd", "ppin",
    "vendor", "time",
)  # fmt: skip
VALID_CLASSES = (
    "ereport.cpu.generic-x86.l2cache",
    "ereport.cpu.generic-x86.icache",
    "ereport.io.pci.fabric",
    "ereport.fuzz.valid",
)


def strand(cpuid: int) -> str:
    """The hc FMRI of a CPU of the sim platform (4 chips of 2 cores of 2 strands)."""
    return f"hc:///motherboard=0/chip={cpuid // 4}/core={cpuid // 2 % 2}/strand={cpuid % 2}"


class WireFuzzer:
    """Valid and fuzzed ingest lines from one seed."""

    def __init__(
        self, seed: int, *, long_lines: float = 0.0005, clock: bool = True, tag: str = "v"
    ) -> None:
        self.rng = random.Random(seed)
        self.tag = tag
        kinds: list[tuple[str, Callable[[], bytes], float]] = [
            ("bytes", self.random_bytes, 6),
            ("utf8", self.bad_utf8, 4),
            ("truncated", self.truncated, 6),
            ("deep", self.deep, 4),
            ("hugenum", self.huge_number, 5),
            ("nulls", self.nulls, 6),
            ("mca", self.mca, 14),
            ("detector", self.detector, 10),
            ("types", self.wrong_types, 8),
            ("class", self.bad_class, 4),
            ("limits", self.limits, 8),
            ("mutated", self.mutated, 10),
            ("nonobject", self.non_object, 3),
            ("random", self.random_object, 6),
            ("blank", self.blank, 2),
            ("long", self.long_line, long_lines * 100),
        ]
        if clock:
            kinds.append(("control", self.control, 3))
        self.kinds = [name for name, _, _ in kinds]
        self._makers = [maker for _, maker, _ in kinds]
        self._weights = [weight for _, _, weight in kinds]

    def valid(self, seq: int) -> bytes:
        """A valid ereport whose payload carries the marker ``<tag>-<seq>``."""
        rng = self.rng
        cls = rng.choice(VALID_CLASSES)
        obj: dict[str, Any] = {"class": cls, MARK: f"{self.tag}-{seq}"}
        if cls.startswith("ereport.cpu."):
            obj["detector"] = strand(rng.randrange(16))
        elif cls == "ereport.io.pci.fabric":
            obj["detector"] = "hc:///motherboard=0/hostbridge=0"
        if rng.random() < 0.3:
            obj["time"] = 1_700_000_000 + rng.randrange(10**6)
        return orjson.dumps(obj)

    def fuzz(self) -> tuple[str, bytes]:
        """One fuzzed line (no newline in it) and the name of its kind."""
        i = self.rng.choices(range(len(self._makers)), self._weights)[0]
        line = self._makers[i]()
        return self.kinds[i], line.replace(b"\n", b" ")

    # -- the kinds
    def random_bytes(self) -> bytes:
        return self.rng.randbytes(self.rng.randint(1, 300))

    def bad_utf8(self) -> bytes:
        junk = self.rng.choice((b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80"))
        where = self.rng.randrange(3)
        if where == 0:
            return b'{"class": "ereport.x.' + junk + b'"}'
        if where == 1:
            return b'{"class": "ereport.x", "p' + junk + b'": 1}'
        return b'{"class": "ereport.x", "p": "' + junk + b'"}'

    def _event(self) -> dict[str, Any]:
        rng = self.rng
        obj: dict[str, Any] = {"class": rng.choice(VALID_CLASSES)}
        for name in rng.sample(("ena", "time", "detector", "__injected", "p"), rng.randint(0, 3)):
            obj[name] = {
                "ena": f"0x{rng.getrandbits(64):x}",
                "time": 1_700_000_000.5,
                "detector": strand(rng.randrange(16)),
                "__injected": True,
                "p": json_value(rng),
            }[name]
        return obj

    def truncated(self) -> bytes:
        line = dumps(self._event())
        return line[: self.rng.randrange(len(line))]

    def deep(self) -> bytes:
        rng = self.rng
        n = rng.choice((31, 32, 33, rng.randint(1, 100), rng.randint(100, 5000)))
        arrays = b"[" * n + b"]" * n
        objects = b'{"a":' * n + b"1" + b"}" * n
        inner = arrays if rng.random() < 0.5 else objects
        if rng.random() < 0.2:
            inner = inner[: rng.randrange(len(inner) + 1)]
        member = rng.choice((b"p", b"detector", b"time", b"ena"))
        return b'{"class":"ereport.x.deep","' + member + b'":' + inner + b"}"

    def huge_number(self) -> bytes:
        rng = self.rng
        digits = huge_digits(rng).encode()
        number = rng.choice((digits, b"-" + digits, digits + b"e999", b"1e400", b"-1e400",
                             b"0." + digits, b"1e-400"))  # fmt: skip
        member = rng.choice(
            (b"ena", b"time", b"cpuid", b"physaddr", b"bank", b"IA32_MCi_STATUS", b"p")
        )
        if rng.random() < 0.3:
            return b'{"mca": {"cpu": 1, "bank": 2, "status": ' + number + b"}}"
        return b'{"class":"ereport.x.huge","' + member + b'":' + number + b"}"

    def nulls(self) -> bytes:
        rng = self.rng
        if rng.random() < 0.4:
            rec = self._mca_record()
            for name in rng.sample(list(rec), rng.randint(1, len(rec))):
                rec[name] = None
            return dumps({"mca": rec} if rng.random() < 0.8 else {"mca": None})
        obj = self._event()
        for name in rng.sample(RESERVED, rng.randint(1, len(RESERVED))):
            obj[name] = None
        return dumps(obj)

    def _mca_record(self) -> dict[str, Any]:
        rng = self.rng

        def reg() -> Any:
            value = rng.getrandbits(64) | (1 << 63 if rng.random() < 0.8 else 0)
            return rng.choice((value, f"0x{value:x}", f"{value:#X}", str(value), f" 0x{value:x} "))

        rec: dict[str, Any] = {
            "cpu": rng.choice((0, 3, 13, 15, 16, 63, -1, 2**32, rng.randrange(64))),
            "bank": rng.choice((0, 1, 2, 4, 8, 255, 256, -1, -2)),
            "status": rng.choice((
                "0x9400000000000101", "0x940000000000010a", "0x9c00000000000150",
                "0xbd80000000100134", "0x8c00004000010090", "0x0000000000000101", reg(),
            )),
        }  # fmt: skip
        if rng.random() < 0.2:
            del rec["cpu"]
            rec["apicid"] = rng.choice((0, 1, 7, 200, -3))
        for name in rng.sample(("addr", "misc", "mcgstatus", "mcgcap", "tsc", "ip", "cs",
                                "ipid", "synd", "ppin"), rng.randint(0, 4)):  # fmt: skip
            rec[name] = reg()
        if rng.random() < 0.3:
            rec["vendor"] = rng.choice(("GenuineIntel", "AuthenticAMD", "HygonGenuine", "", 5))
            rec["family"] = rng.choice((6, 15, 16, 23, 25, -1))
            rec["model"] = rng.choice((0, 2, 85, 143, 2**40))
        if rng.random() < 0.2:
            rec["time"] = rng.choice((1_700_000_000, "2023-11-14T22:13:20Z", -5, 2**62, "x"))
        if rng.random() < 0.1:
            rec[rng.choice(("bogus", "class", "", "STATUS"))] = json_value(rng)
        if rng.random() < 0.1:
            rec[rng.choice(MCA_MEMBERS)] = json_value(rng)
        return rec

    def mca(self) -> bytes:
        rng = self.rng
        obj: dict[str, Any] = {"mca": self._mca_record()}
        if rng.random() < 0.1:
            obj[rng.choice(("ena", "__injected", "class", "detector"))] = json_value(rng)
        return dumps(obj)

    def detector(self) -> bytes:
        rng = self.rng
        roll = rng.randrange(4)
        if roll == 0:
            det: Any = fmri_text(rng)
        elif roll == 1:
            det = {
                "scheme": rng.choice(("hc", "cpu", "mem", "fmd", "dev", 1, None)),
                rng.choice(("cpuid", "hc-list", "unum", "mod-name", "authority", "hc-specific",
                            "hc-list-sz", "version", "serial")): json_value(rng),
            }  # fmt: skip
        elif roll == 2:
            det = {
                "scheme": "hc",
                "hc-list": [
                    {"hc-name": rng.choice(("motherboard", "chip", "core", "strand")),
                     "hc-id": rng.choice(("0", "1", 3, "x", None))}
                    for _ in range(rng.choice((0, 1, 4, 64, 65)))
                ],
            }  # fmt: skip
        else:
            det = json_value(rng)
        cls = rng.choice(("ereport.cpu.generic-x86.l2cache_uc", "ereport.cpu.amd.dc.data_eccm",
                          "ereport.cpu.generic-x86.mem_ce", "ereport.x.det"))  # fmt: skip
        obj: dict[str, Any] = {"class": cls, "detector": det}
        if rng.random() < 0.3:
            obj["cpuid"] = rng.choice((0, 5, 12, 99, -1, 2**32))
        if rng.random() < 0.3:
            obj["physaddr"] = rng.choice((0x1000, 2**52 - 1, 2**52, -4096))
        return dumps(obj)

    def wrong_types(self) -> bytes:
        rng = self.rng
        obj = self._event()
        for name in rng.sample(RESERVED, rng.randint(1, 3)):
            obj[name] = rng.choice((json_value(rng), [], {}, 1.5, "", True, "0x", -1))
        return dumps(obj)

    def bad_class(self) -> bytes:
        rng = self.rng
        cls = rng.choice((
            "", "ereport", "ereport.", "ereport..x", "fault.x", "list.suspect", "ereport.x y",
            "ereport.\u00e9", "ereport." + "a" * 300, "ereport.x." + "." * 3, "EREPORT.x",
            "resource.fm.fmd.clock.other", "resource.fm.fmd.x", "ereport.x\0",
        ))  # fmt: skip
        return dumps({"class": cls})

    def limits(self) -> bytes:
        rng = self.rng
        roll = rng.randrange(5)
        if roll == 0:
            k = rng.choice((30, 31, 32, 33))
            nested: Any = []
            for _ in range(k - 1):
                nested = [nested]
            return dumps({"class": "ereport.x.limits", "p": nested})
        if roll == 1:
            n = rng.choice((4094, 4095, 4096, 5000))
            return dumps({"class": "ereport.x.limits", "p": list(range(n))})
        if roll == 2:
            base = "cpu:///cpuid=0/serial="
            detector = base + "x" * (rng.choice((4095, 4096, 4097)) - len(base))
            return dumps({"class": "ereport.x.limits", "detector": detector})
        member, low, high = rng.choice((
            ("cpuid", 0, 2**32 - 1), ("apicid", 0, 2**32 - 1), ("physaddr", 0, 2**52 - 1),
            ("bank", -1, 255), ("IA32_MCi_STATUS", 0, 2**64 - 1), ("IA32_MCG_CAP", 0, 2**64 - 1),
            ("syndrome", 0, 2**64 - 1),
        ))  # fmt: skip
        value: Any = rng.choice((low, high, low - 1, high + 1, rng.randint(low, high)))
        if roll == 4:
            value = rng.choice((f"0x{abs(value):x}", str(value), float(value), None, True))
        return dumps({"class": "ereport.x.limits", member: value})

    def mutated(self) -> bytes:
        rng = self.rng
        line = bytearray(
            self.valid(0) if rng.random() < 0.5 else dumps({"mca": self._mca_record()})
        )
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(line))
            op = rng.randrange(3)
            if op == 0:
                line[at] = rng.randrange(256)
            elif op == 1:
                del line[at]
            else:
                line.insert(at, rng.choice(b'{}[]",:0\\ '))
        return bytes(line).replace(MARK.encode(), b"notmark")

    def non_object(self) -> bytes:
        return dumps(self.rng.choice(([], [{"class": "ereport.x"}], "ereport.x", 1, None, True)))

    def random_object(self) -> bytes:
        rng = self.rng
        obj = {rng.choice((*RESERVED, "mca", "p", _odd(rng, 3))): json_value(rng)
               for _ in range(rng.randint(0, 6))}  # fmt: skip
        obj.pop(MARK, None)
        return dumps(obj)

    def blank(self) -> bytes:
        return self.rng.choice((b"", b" ", b"\t", b"\r", b"  \t "))

    def long_line(self) -> bytes:
        size = self.rng.randint(1 << 20, 2 << 20)
        pad = b"x" * size
        if self.rng.random() < 0.5:
            return b'{"class":"ereport.x.long","p":"' + pad + b'"}'
        return pad

    def control(self) -> bytes:
        rng = self.rng
        delta: Any = rng.choice((-2, -(2**63), 1.5, "1", None, True, [], {}, 1e30, 2**64, "0x10",
                            0, 1, 1000, 3_600_000_000_000))  # fmt: skip
        obj: dict[str, Any] = {"class": CLOCK_CLASS}
        if rng.random() < 0.9:
            obj["delta"] = delta
        if rng.random() < 0.1:
            obj["class"] = rng.choice(("resource.fm.fmd.clock.x", "resource.fm.fmd.clock."))
        return dumps(obj)


# -- the control socket --------------------------------------------------------------------


class ControlFuzzer:
    """Control-socket request lines from one seed: requests for ``ops`` (or unknown ones)
    with arguments drawn from ``likely`` or random JSON, and garbage lines."""

    def __init__(
        self,
        seed: int,
        ops: Sequence[str],
        likely: Mapping[str, Any],
        weights: Mapping[str, float] | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.ops = list(ops)
        self.likely = likely
        # Relative weights of the ops (1 unless given), to make slow ones rarer.
        self.weights = [(weights or {}).get(op, 1.0) for op in self.ops]

    def request(self) -> dict[str, Any]:
        rng = self.rng
        op: Any = (
            rng.choices(self.ops, self.weights)[0]
            if rng.random() < 0.9
            else rng.choice(("", "nosuch", "PING", "config ", _odd(rng, 6), None, 1, [], {}))
        )
        req: dict[str, Any] = {}
        for name in rng.sample(sorted(self.likely), rng.randint(0, 4)):
            req[name] = rng.choice(self.likely[name]) if rng.random() < 0.7 else json_value(rng)
        for _ in range(rng.randint(0, 2)):
            req[_odd(rng, 5)] = json_value(rng)
        if rng.random() < 0.97:
            req["op"] = op
        return req

    def line(self) -> tuple[str, bytes]:
        """One request line (no newline) and its kind ("request" or "garbage")."""
        rng = self.rng
        if rng.random() < 0.75:
            return "request", dumps(self.request())
        roll = rng.randrange(6)
        if roll == 0:
            data = rng.randbytes(rng.randint(0, 200))
        elif roll == 1:
            full = dumps(self.request())
            data = full[: rng.randrange(len(full))]
        elif roll == 2:
            n = rng.choice((10, 100, 1000, 100_000))
            data = b'{"op":"ping","a":' + b"[" * n + b"]" * n + b"}"
        elif roll == 3:
            data = b'{"op":"ping","timeout":' + huge_digits(rng).encode() + b"}"
        elif roll == 4:
            data = dumps(rng.choice(([], "ping", 1, None, [{"op": "ping"}])))
        else:
            data = b'{"op":"' + rng.choice((b"\xff", b"\xc3", b"\xed\xa0\x80")) + b'"}'
        return "garbage", data.replace(b"\n", b" ")
