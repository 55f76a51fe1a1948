"""x86 CPU identity as the kernel and its tools report it: vendor numbers and the CPUID signature.

Every machine-check producer on Linux names the CPU the same two ways, and
every reader in fmd decodes them here:

* a *vendor number*: Linux's ``X86_VENDOR_*`` constants
  (``arch/x86/include/asm/processor.h``), stored in ``struct mce.cpuvendor``
  and printed by the kernel's ``PROCESSOR <vendor>:<cpuid>`` line, the
  ``mce_record`` tracepoint and rasdaemon's ``cpuvendor`` column::

      0 Intel   1 Cyrix   2 AMD   3 UMC   5 Centaur   7 Transmeta
      8 NSC     9 Hygon  10 Zhaoxin      11 Vortex

  (4 and 6 were never assigned; 0xff is "unknown").  :data:`LINUX_VENDORS`
  maps them to the CPUID vendor string the decoders key on (``GenuineIntel``,
  ``HygonGenuine``, ...).  A Xen dom0's ``xen_mcelog`` driver copies Xen's
  own numbering instead (:data:`XEN_VENDORS`).  mcelog's decoded text names
  the vendor with a short word (``CPUID Vendor Intel``): :func:`vendor_of_word`;
* the *CPUID signature* (leaf 1 EAX), from which :func:`family_model` derives
  the family and model as the kernel does (``x86_family``/``x86_model`` in
  ``arch/x86/lib/cpu.c``, the numbers ``/proc/cpuinfo`` shows): the extended
  family is added only to base family 0Fh, and the extended model is the
  model's high nibble once the family is 06h or more (Intel's 06h, AMD's 0Fh
  and later, Zhaoxin's 07h).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = [
    "AMD",
    "CENTAUR",
    "HYGON",
    "INTEL",
    "LINUX_VENDORS",
    "XEN_VENDORS",
    "ZHAOXIN",
    "family_model",
    "vendor_name",
    "vendor_of_word",
]

# The CPUID vendor strings the decoders key on.
INTEL: Final = "GenuineIntel"
AMD: Final = "AuthenticAMD"
HYGON: Final = "HygonGenuine"
CENTAUR: Final = "CentaurHauls"
ZHAOXIN: Final = "  Shanghai  "

# Linux's X86_VENDOR_* numbers -> CPUID vendor string.
LINUX_VENDORS: Final[Mapping[int, str]] = {
    0: INTEL,
    1: "CyrixInstead",
    2: AMD,
    3: "UMC UMC UMC ",
    5: CENTAUR,
    7: "GenuineTMx86",
    8: "Geode by NSC",
    9: HYGON,
    10: ZHAOXIN,
    11: "Vortex86 SoC",
}

# Xen's vendor numbers as the xen_mcelog driver copies them: one bit per
# vendor since Xen 4.13 (1 Intel, 2 AMD, 4 Centaur, 8 Shanghai, 16 Hygon),
# Linux's numbers before (0 Intel, 2 AMD, 5 Centaur; no other vendor runs Xen).
# Both are accepted where they do not clash.
XEN_VENDORS: Final[Mapping[int, str]] = {
    0: INTEL,
    1: INTEL,
    2: AMD,
    4: CENTAUR,
    5: CENTAUR,
    8: ZHAOXIN,
    16: HYGON,
}

# The short vendor words of mcelog's "CPUID Vendor <word>" line (and the common
# marketing names), lower-cased -> CPUID vendor string.
_VENDOR_WORDS: Final[Mapping[str, str]] = {
    "intel": INTEL,
    "cyrix": LINUX_VENDORS[1],
    "amd": AMD,
    "umc": LINUX_VENDORS[3],
    "centaur": CENTAUR,
    "transmeta": LINUX_VENDORS[7],
    "nsc": LINUX_VENDORS[8],
    "hygon": HYGON,
    "zhaoxin": ZHAOXIN,
    "vortex": LINUX_VENDORS[11],
}

# CPUID leaf 1 EAX fields.
_NIBBLE: Final = 0xF
_MODEL_SHIFT: Final = 4
_FAMILY_SHIFT: Final = 8
_EXT_MODEL_SHIFT: Final = 16
_EXT_FAMILY_SHIFT: Final = 20
_EXT_FAMILY_MASK: Final = 0xFF
# The base family whose extended family counts, and the first family whose
# extended model does.
_EXTENDED_FAMILY: Final = 0xF
_EXT_MODEL_FROM_FAMILY: Final = 0x6


def vendor_name(number: int, vendors: Mapping[int, str] = LINUX_VENDORS) -> str | None:
    """The CPUID vendor string of a kernel vendor number (None when unassigned)."""
    return vendors.get(number)


def vendor_of_word(word: str) -> str:
    """The CPUID vendor string for mcelog's short vendor word (``Intel``, ``AMD``, ...).

    A word fmd does not know is returned as it is (it may already be a CPUID
    vendor string).
    """
    return _VENDOR_WORDS.get(word.lower(), word)


def family_model(eax: int) -> tuple[int, int]:
    """The display family and model of a CPUID leaf 1 EAX signature."""
    base_family = (eax >> _FAMILY_SHIFT) & _NIBBLE
    family = base_family
    if base_family == _EXTENDED_FAMILY:
        family += (eax >> _EXT_FAMILY_SHIFT) & _EXT_FAMILY_MASK
    model = (eax >> _MODEL_SHIFT) & _NIBBLE
    if family >= _EXT_MODEL_FROM_FAMILY:
        model |= ((eax >> _EXT_MODEL_SHIFT) & _NIBBLE) << _MODEL_SHIFT
    return family, model
