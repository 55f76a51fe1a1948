"""Event classes and subscription patterns: validating them and matching one against the other.

A class is dot-separated components of [A-Za-z0-9_-].  In a pattern a
component may also be "*": an inner "*" matches exactly one component, a
trailing "*" matches one or more (so "a.*" matches "a.b" and "a.b.c" but
not "a"), and "*" alone matches every class.
"""

from __future__ import annotations

import re
from typing import Final

from fmd.errors import ProtocolError
from fmd.protocol._common import _show

_COMPONENT: Final = r"[A-Za-z0-9_\-]+"
_CLASS_RE: Final = re.compile(rf"{_COMPONENT}(?:\.{_COMPONENT})*")
_PATTERN_RE: Final = re.compile(rf"(?:{_COMPONENT}|\*)(?:\.(?:{_COMPONENT}|\*))*")
_COMPONENT_RE: Final = re.compile(_COMPONENT)


# The longest class or pattern: the store keeps classes in 255-character columns.
MAX_CLASS_LEN: Final = 255


def _class_problem(text: str, kind: str) -> str | None:
    """Why *text* is not a valid class (kind "class") or pattern (kind "pattern"), or None."""
    if len(text) > MAX_CLASS_LEN:
        return f"invalid {kind} {_show(text)}: longer than {MAX_CLASS_LEN} characters"
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
