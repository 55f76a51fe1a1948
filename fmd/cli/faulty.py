"""Rendering of ``fmadm faulty``: pure functions from the daemon's answer to text.

The daemon's ``faulty`` request returns the cases (most severe first) with
their suspects, statuses, the responses agents recorded and the code's
message texts; this module lays them out as illumos does:

* the case header: ``%-15s %-37s %-14s %-9s %s`` under dashed rules, dates
  ``%b %d %H:%M:%S`` (``%b %d %Y`` when older than six months or in the future);
* the host block (Host, Platform, Chassis_id, Product_sn);
* per suspect ``Fault class``, ``Affects`` (ASRU) and ``FRU`` with their status
  texts, ``Problem in`` with ``-v`` or when the FRU or ASRU is missing;
* the responses agents recorded under the ASRU's status: failures always,
  successes with ``-v``, and always a page the kernel retired by itself (or
  that fmd left to the kernel's collector of corrected errors);
* Description, Response, Impact and Action wrapped at 80 columns.

Views: default, ``-s`` summary rows, ``-r`` one line per ASRU, ``-f`` per FRU,
``-g`` suspects grouped by FRU, class and message.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from fmd.asru import rsrc_status
from fmd.case import MAX_CASE_EVENTS
from fmd.cli.fmt import SIX_MONTHS_NS
from fmd.states import RESPONSE_KERNEL, RESPONSE_NONE

RULE = "--------------- ------------------------------------  -------------- ---------"
HEADER = "TIME            EVENT-ID                              MSG-ID         SEVERITY"
_LABEL_WIDTH = 12
_INDENT = " " * 14
_STATUS_INDENT = " " * 18


def faulty_date(time_ns: int, now_ns: int | None = None) -> str:
    """``%b %d %H:%M:%S``, or ``%b %d %Y`` for times over six months old or in the future."""
    now = time.time_ns() if now_ns is None else now_ns
    dt = datetime.fromtimestamp(time_ns / 1e9)
    if time_ns > now or now - time_ns > SIX_MONTHS_NS:
        return dt.strftime("%b %d %Y")
    return dt.strftime("%b %d %H:%M:%S")


def _label(name: str) -> str:
    return f"{name:<{_LABEL_WIDTH}}:"


def _wrapped(name: str, text: str) -> list[str]:
    if not text:
        return [f"{_label(name)}"]
    lines = textwrap.wrap(
        text,
        width=80,
        initial_indent=f"{_label(name)} ",
        subsequent_indent=_INDENT,
        break_long_words=False,
        break_on_hyphens=False,
    )
    return lines or [f"{_label(name)}"]


def case_row(case: Mapping[str, Any], now_ns: int | None = None) -> str:
    """The one-line summary of a case under the header."""
    extra = "injected" if case.get("injected") else ""
    return (
        f"{faulty_date(int(case['time_ns']), now_ns):<15} {case['uuid']:<37} "
        f"{case['code'] or '-':<14} {case['severity'] or '-':<9} {extra}"
    ).rstrip()


def _fru_text(s: Mapping[str, Any]) -> str:
    fru = s.get("fru")
    label = s.get("location")
    if not fru:
        return "None"
    return f'"{label}" ({fru})' if label else str(fru)


def _host_block(answer: Mapping[str, Any]) -> list[str]:
    return [
        f"{_label('Host')} {answer.get('host', '')}".rstrip(),
        f"{_label('Platform')} {answer.get('platform', '')}\t"
        f"{_label('Chassis_id')} {answer.get('chassis-id', '')}".rstrip(),
        f"{_label('Product_sn')} {answer.get('product-sn', '')}".rstrip(),
    ]


def _responses(s: Mapping[str, Any], verbose: bool) -> list[str]:
    """The responses worth a line: failures always, successes with ``-v``, and
    always what the kernel did or was left to do (the detail says it all)."""
    out = []
    for r in s.get("responses", []):
        if (r["ok"] and r["action"] == RESPONSE_KERNEL) or r["action"] == RESPONSE_NONE:
            # The detail says it all: what the kernel did, or why nothing was done.
            out.append(f"{_STATUS_INDENT}{r['module']}: {r['detail']}")
            continue
        if r["ok"] and not verbose:
            continue
        state = "done" if r["ok"] else "failed"
        out.append(f"{_STATUS_INDENT}{r['module']}: {r['action']} {state}: {r['detail']}")
    return out


def _suspect_block(s: Mapping[str, Any], verbose: bool) -> list[str]:
    cls = str(s["class"])
    certainty = int(s["certainty"])
    lines = [f"{_label('Fault class')} {cls}" + (f" {certainty}%" if certainty < 100 else "")]
    if s.get("note"):
        lines.append(f"{_label('Note')} {s['note']}")
    if s.get("asru"):
        lines.append(f"{_label('Affects')} {s['asru']}")
        lines.append(f"{_STATUS_INDENT}{s['status']}")
        lines.extend(_responses(s, verbose))
    if verbose or not s.get("asru") or not s.get("fru"):
        lines.append(f"{_label('Problem in')} {s.get('resource') or 'None'}")
        if not s.get("asru"):
            lines.extend(_responses(s, verbose))
    lines.append(f"{_label('FRU')} {_fru_text(s)}")
    lines.append(f"{_STATUS_INDENT}{s['fru-status']}")
    return lines


def _message_block(case: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for name, key in (
        ("Description", "description"),
        ("Response", "response"),
        ("Impact", "impact"),
        ("Action", "action"),
    ):
        out.extend(_wrapped(name, str(case.get(key) or "")))
        out.append("")
    return out


def render_default(
    answer: Mapping[str, Any],
    cases: Sequence[Mapping[str, Any]],
    *,
    verbose: bool = False,
    now_ns: int | None = None,
) -> list[str]:
    """The full view: per case its header, host, suspects and message."""
    return _render_groups(answer, [[c] for c in cases], verbose=verbose, now_ns=now_ns)


def _render_groups(
    answer: Mapping[str, Any],
    groups: Sequence[Sequence[Mapping[str, Any]]],
    *,
    verbose: bool,
    now_ns: int | None,
) -> list[str]:
    """Per group of alike cases: the header with a row per case, the host, the
    first case's suspects (merged ones say "N @ max NN%") and its message."""
    out: list[str] = []
    for members in groups:
        case = members[0]
        out += [RULE, HEADER, RULE]
        out += [case_row(c, now_ns) for c in members]
        out.append("")
        out += _host_block(answer)
        out.append("")
        ereports = int(case.get("ereports") or 0)
        if ereports > MAX_CASE_EVENTS:
            # A storm on a diagnosed resource: counted, not kept one by one.
            out += [
                f"{_label('Ereports')} {ereports} (the case keeps the first {MAX_CASE_EVENTS})",
                "",
            ]
        top = max((int(x["certainty"]) for c in members for x in c["suspects"]), default=100)
        for s in case["suspects"]:
            block = _suspect_block(s, verbose)
            if len(members) > 1:
                block[0] = f"{_label('Fault class')} {s['class']} {len(members)} @ max {top}%"
            out += block
            out.append("")
        out += _message_block(case)
    return out


def render_summary(cases: Sequence[Mapping[str, Any]], now_ns: int | None = None) -> list[str]:
    """``-s``: the header and one row per case."""
    if not cases:
        return []
    return [RULE, HEADER, RULE, *(case_row(c, now_ns) for c in cases)]


def render_resources(cases: Sequence[Mapping[str, Any]], *, cache_ids: bool = False) -> list[str]:
    """``-r``: one line per ASRU with its state (``-i`` adds cache ids)."""
    out: list[str] = []
    seen: dict[str, int] = {}
    if cache_ids:
        out.append(f"{'CACHE-ID':<8} {'RESOURCE':<60} STATE")
    for case in cases:
        for s in case["suspects"]:
            fmri = s.get("asru") or s.get("resource") or s.get("fru")
            if not fmri:
                continue
            state = rsrc_status(int(s["fault-status"]))
            if case.get("injected"):
                state += " injected"
            key = f"{fmri} {state}"
            if key in seen:
                continue
            seen[key] = len(seen) + 1
            if cache_ids:
                out.append(f"{seen[key]:<8} {fmri:<60} {state}")
            else:
                out.append(f"{fmri:<69} {state}")
    return out


def _frus(cases: Iterable[Mapping[str, Any]]) -> dict[str, list[tuple[Mapping[str, Any], int]]]:
    """FRU text -> (case, certainty of its suspects in that FRU)."""
    by_fru: dict[str, list[tuple[Mapping[str, Any], int]]] = {}
    for case in cases:
        per_case: dict[str, list[int]] = {}
        for s in case["suspects"]:
            per_case.setdefault(_fru_text(s), []).append(int(s["certainty"]))
        for fru, certs in per_case.items():
            by_fru.setdefault(fru, []).append((case, sum(certs)))
    return by_fru


def render_frus(cases: Sequence[Mapping[str, Any]]) -> list[str]:
    """``-f``: per FRU, its status, the cases naming it and their message."""
    out: list[str] = []
    for fru, entries in _frus(cases).items():
        first = entries[0][0]
        status = next(s["fru-status"] for s in first["suspects"] if _fru_text(s) == fru)
        out += ["-" * 80, f"{fru} {status}"]
        for case, certainty in entries:
            n = sum(1 for s in case["suspects"] if _fru_text(s) == fru)
            word = "suspect" if n == 1 else "suspects"
            how = "total" if len(case["suspects"]) == n else "max"
            out.append(
                f"{case['uuid']} {n} {word} in this FRU {how} certainty {min(certainty, 100)}%"
            )
        out.append("")
        out += _message_block(first)
    return out


def render_grouped(
    answer: Mapping[str, Any],
    cases: Sequence[Mapping[str, Any]],
    *,
    verbose: bool = False,
    limit: int | None = None,
    now_ns: int | None = None,
) -> list[str]:
    """``-g``: cases with the same FRU, fault classes and message shown once,
    with the number of cases merged and their highest certainty."""
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for case in cases:
        key = (
            str(case["code"]),
            *sorted(f"{_fru_text(s)}|{s['class']}" for s in case["suspects"]),
        )
        groups.setdefault(key, []).append(case)
    selected = list(groups.values())[: limit if limit else None]
    return _render_groups(answer, selected, verbose=verbose, now_ns=now_ns)
