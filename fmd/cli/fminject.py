"""``fminject``: send ereports to the running fmd.

``fminject [-R root] [-n] [-v] [-q] [--format auto|json|mce|kernel|inj|rasdaemon] FILE|-``
reads the input, marks each event injected, sends them over the ingest socket
with pipelining, and prints an error with the line number for every event fmd
rejected.  The exit code is 1 if any was rejected, or if nothing in the input
was recognised ("no records found").  ``-n`` only checks the input locally.

Formats (``auto`` picks ``inj`` for a file named ``*.inj``, else looks at the
first line that is not blank or a ``#`` comment):

* ``json``: JSON lines, the wire format (blank lines and ``#`` lines skipped);
* ``mce``: the mcelog / kernel machine-check text form; each record is sent
  raw (``{"mca": {...}}``) and fmd decodes it against its platform, so the
  line numbers reported are those where each record starts;
* ``kernel``: a kernel log (``dmesg``, ``journalctl -k``, a syslog file):
  machine-check blocks, the AMD decoder's lines, EDAC, firmware (GHES) and
  thermal reports (:mod:`fmd.hw.kmsg`), sent as raw records and ereports with
  the line each record starts on; chosen when reading the text as a kernel log
  finds records, and at least as many as reading it as mcelog text;
* ``inj``: the illumos injection language (:mod:`fmd.injlang`), chosen when
  the first word is one of its keywords or the text starts with ``/*``.  The
  whole program is checked first; if it has errors, each is printed with its
  line and nothing is sent.  Otherwise the events it generates are sent with
  the line of the command that made them; ``sleep`` waits until fmd has
  acknowledged everything sent before it, then sleeps;
* ``rasdaemon``: rasdaemon's SQLite database (chosen for any SQLite file).
  fmd itself reads the file (control request ``import.rasdaemon``, root or
  fmd's user) and stores its rows with their original times, not marked
  injected; it remembers the last row it imported of each table, so running
  the import again adds only what rasdaemon recorded since
  (:mod:`fmd.xprts.rasdaemon`).
"""

from __future__ import annotations

import contextlib
import io
import re
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Final

import click
import orjson

from fmd.adm.client import AdmClient, permission_message
from fmd.cli.common import EXIT_ERROR, fail, paths_for, root_option, run_click
from fmd.errors import DaemonNotRunning, FmdError, ProtocolError
from fmd.hw.kmsg import KmsgFailure
from fmd.hw.kmsg_text import looks_like_kernel_log, parse_log_text
from fmd.hw.mcelog import ParseFailure, parse_mce_text
from fmd.hw.rasdaemon import SQLITE_MAGIC, check_database
from fmd.hw.telemetry import record_from_json, record_to_json
from fmd.injlang import KEYWORDS, Sleep, evaluate, parse_program
from fmd.protocol import EnaGenerator, decode_line, ereport_from_decoded

CONTROL_PREFIX = "resource.fm.fmd."
# Lines are sent in batches of at most this many, or this many bytes.
_BATCH_LINES: Final = 256
_BATCH_BYTES: Final = 1 << 20


def _lines(fh: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    for n, raw in enumerate(fh, start=1):
        line = raw.rstrip(b"\r\n")
        if not line.strip() or line.lstrip().startswith(b"#"):
            continue
        yield n, line


def _mce_items(data: bytes) -> tuple[list[tuple[int, bytes]], list[tuple[int, str]]]:
    """Raw records (line number, wire line) and parse errors of mcelog text."""
    items: list[tuple[int, bytes]] = []
    errors: list[tuple[int, str]] = []
    for parsed in parse_mce_text(data.decode("utf-8", errors="replace")):
        if isinstance(parsed, ParseFailure):
            errors.append((parsed.line, parsed.reason))
        else:
            items.append((parsed.line, orjson.dumps({"mca": record_to_json(parsed.record)})))
    return items, errors


def _kernel_items(data: bytes) -> tuple[list[tuple[int, bytes]], list[tuple[int, str]]]:
    """Wire lines (line number, line) and unreadable records of a text kernel log."""
    items: list[tuple[int, bytes]] = []
    errors: list[tuple[int, str]] = []
    for result in parse_log_text(data.decode("utf-8", errors="replace")):
        if isinstance(result, KmsgFailure):
            errors.append((result.line, result.reason))
        else:
            items.append((result.line, orjson.dumps(result.obj)))
    return items, errors


Item = tuple[int, bytes] | Sleep


def _detect(data: bytes, name: str) -> str:
    if name.endswith(".inj"):
        return "inj"
    if data.startswith(SQLITE_MAGIC):
        return "rasdaemon"
    for raw in data.splitlines():
        line = raw.strip()
        if line and not line.startswith(b"#"):
            if line.startswith(b"/*"):
                return "inj"
            word = re.match(rb"[A-Za-z_]+", line)
            if word is not None and word.group().decode() in KEYWORDS:
                return "inj"
            if line.startswith(b"{") and not re.match(rb"\{\d+\}\[", line):
                return "json"
            text = data.decode("utf-8", errors="replace")
            return "kernel" if looks_like_kernel_log(text) else "mce"
    return "json"


def _inj_items(data: bytes) -> tuple[Iterable[Item], list[tuple[int, str]]]:
    """The items a program in the injection language generates, or its errors."""
    program, errors = parse_program(data.decode("utf-8", errors="replace"))
    if errors:
        return [], [(e.line, str(e)) for e in errors]
    return evaluate(program), []


def _prepare(line: bytes) -> bytes:
    """Mark an event injected (the daemon validates everything else)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    if not isinstance(obj, dict) or "__injected" in obj:
        return line
    cls = obj.get("class")
    ereport = isinstance(cls, str) and cls.startswith("ereport.")
    raw_record = cls is None and "mca" in obj
    if ereport or raw_record:
        obj["__injected"] = True
        return orjson.dumps(obj)
    return line


def _check(line: bytes, gen: EnaGenerator) -> None:
    """Validate one line as fmd would (for -n)."""
    obj = decode_line(line)
    if str(obj.get("class", "")).startswith(CONTROL_PREFIX):
        return
    if "mca" in obj and "class" not in obj:
        # Decoding needs fmd's platform: check the registers only.
        raw = obj["mca"]
        if not isinstance(raw, dict):
            raise ProtocolError("'mca' must be an object of MCA registers")
        record_from_json(raw)
        return
    ereport_from_decoded(obj, time.time_ns(), gen)


def _connect(path: str, wait: float) -> socket.socket:
    deadline = time.monotonic() + wait
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            s.close()
            if time.monotonic() >= deadline:
                fail("fminject", f"fmd is not running (no ingest socket at {path}): {exc.strerror}")
            time.sleep(0.1)
        except PermissionError as exc:
            s.close()
            fail("fminject", permission_message(Path(path), "ingest socket", exc))
        except OSError as exc:
            s.close()
            fail("fminject", f"cannot reach fmd at {path}: {exc.strerror or exc}")


# How long an import may take before fminject stops waiting (fmd finishes it anyway).
_IMPORT_TIMEOUT_S: Final = 3600.0


def _rasdaemon(root: str | None, name: str, *, parse_only: bool, quiet: bool, wait: float) -> None:
    """``--format rasdaemon``: have fmd import the database (or check it locally, -n); exits."""
    if name == "<stdin>":
        fail("fminject", "--format rasdaemon reads a database file, not standard input")
    path = Path(name).resolve()
    try:
        if parse_only:
            rows, bad, problems = check_database(path)
            if not rows:
                fail("fminject", f"{path}: no records found")
            for table, row_id, reason in bad:
                click.echo(f"fminject: {path}: {table} id {row_id}: {reason}", err=True)
            if not quiet:
                for note in problems:
                    click.echo(f"fminject: {path}: note: {note}", err=True)
                click.echo(f"fminject: {rows - len(bad)} of {rows} rows are valid")
            sys.exit(EXIT_ERROR if bad else 0)
        deadline = time.monotonic() + wait
        while True:
            try:
                with AdmClient(paths_for(root).adm_socket, timeout=_IMPORT_TIMEOUT_S) as client:
                    result = client.call("import.rasdaemon", path=str(path))
                break
            except DaemonNotRunning:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)
    except FmdError as exc:
        fail("fminject", str(exc))
    for reason, n in result.get("reasons", {}).items():
        click.echo(f"fminject: {path}: {n} rows: {reason}", err=True)
    if not result["rows"]:
        fail("fminject", f"{path}: no records found")
    if not quiet:
        for note in result.get("problems", []):
            click.echo(f"fminject: {path}: note: {note}", err=True)
        for table in result.get("replaced_tables", []):
            click.echo(
                f"fminject: {path}: note: table {table} is not the one imported before "
                "(a new database?); read from its start",
                err=True,
            )
        extra = (
            [f"{result['already_imported']} imported before"] if result["already_imported"] else []
        )
        extra += [f"{result['rejected']} rejected"] if result["rejected"] else []
        extra += [f"{result['duplicates']} already stored"] if result.get("duplicates") else []
        more = f" ({', '.join(extra)})" if extra else ""
        click.echo(
            f"fminject: {path}: imported {result['imported']} of {result['rows']} rows{more}"
        )
    sys.exit(EXIT_ERROR if result["rejected"] else 0)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@root_option
@click.option("-n", "parse_only", is_flag=True, help="Check the input; send nothing.")
@click.option("-v", "verbose", is_flag=True, help="Print each event and its ENA as it is stored.")
@click.option("-q", "quiet", is_flag=True, help="Print nothing but errors.")
@click.option(
    "--wait",
    "wait",
    type=float,
    default=0.0,
    metavar="SECONDS",
    help="Wait up to SECONDS for fmd to start listening.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "json", "mce", "kernel", "inj", "rasdaemon"]),
    default="auto",
    help="Input format (default: from a .inj name or the first line).",
)
@click.argument("source", type=click.File("rb"))
def cli(
    root: str | None,
    parse_only: bool,
    verbose: bool,
    quiet: bool,
    wait: float,
    fmt: str,
    source: IO[bytes],
) -> None:
    """Inject the ereports in SOURCE (a file, or - for standard input) into fmd."""
    name = getattr(source, "name", "-")
    name = "<stdin>" if name in ("-", "<stdin>") else str(name)
    errors = 0
    data = source.read()
    if fmt == "auto":
        fmt = _detect(data, name)
    if fmt == "rasdaemon":
        _rasdaemon(root, name, parse_only=parse_only, quiet=quiet, wait=wait)
    items: Iterable[Item]
    if fmt == "mce":
        items, parse_errors = _mce_items(data)
    elif fmt == "kernel":
        items, parse_errors = _kernel_items(data)
    elif fmt == "inj":
        items, parse_errors = _inj_items(data)
    else:
        items, parse_errors = list(_lines(io.BytesIO(data))), []
    for n, reason in parse_errors:
        errors += 1
        click.echo(f"fminject: {name}:{n}: {reason}", err=True)
    if fmt == "inj" and parse_errors:
        # A program with errors is incomplete: send none of it.
        sys.exit(EXIT_ERROR)
    if isinstance(items, list) and not items and not parse_errors:
        # Nothing recognised (prose, the wrong format): say so rather than "0 of 0".
        fail("fminject", f"{name}: no records found (read as {fmt})")
    if parse_only:
        gen = EnaGenerator()
        count = len(parse_errors)
        for item in items:
            if isinstance(item, Sleep):
                continue
            n, line = item
            count += 1
            try:
                _check(line, gen)
            except ProtocolError as exc:
                errors += 1
                click.echo(f"fminject: {name}:{n}: {exc}", err=True)
        if not quiet:
            click.echo(f"fminject: {count - errors} of {count} events are valid")
        sys.exit(EXIT_ERROR if errors else 0)

    paths = paths_for(root)
    sock = _connect(str(paths.xprt_socket), wait)
    # Lines sent and not yet answered, in order (memory stays bounded: the
    # sender blocks once the socket buffers are full).
    pending: deque[tuple[int, bytes]] = deque()
    lock = threading.Condition()
    send_error: list[BaseException] = []
    counts = {"sent": 0, "acked": 0, "done": 0}

    def sender() -> None:
        try:
            out: list[bytes] = []
            size = 0
            for item in items:
                if isinstance(item, Sleep):
                    # Flush, wait until fmd has answered everything sent, then sleep.
                    if out:
                        sock.sendall(b"".join(out))
                        out.clear()
                        size = 0
                    with lock:
                        while counts["acked"] < counts["sent"]:
                            lock.wait()
                    time.sleep(item.seconds)
                    continue
                n, line = item
                with lock:
                    pending.append((n, line))
                    counts["sent"] += 1
                    lock.notify_all()
                wire = _prepare(line) + b"\n"
                out.append(wire)
                size += len(wire)
                if len(out) >= _BATCH_LINES or size >= _BATCH_BYTES:
                    sock.sendall(b"".join(out))
                    out.clear()
                    size = 0
            if out:
                sock.sendall(b"".join(out))
        except OSError as exc:
            send_error.append(exc)
        finally:
            with lock:
                counts["done"] = 1
                lock.notify_all()
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    rfile = sock.makefile("rb")
    total = 0
    duplicates = 0  # copies of hardware events fmd had already stored
    while True:
        with lock:
            while not pending and not counts["done"]:
                lock.wait()
            if not pending:
                break
            n, line = pending.popleft()
        reply_line = rfile.readline()
        if not reply_line:
            fail(
                "fminject", f"fmd closed the connection after {total} of the events (at {name}:{n})"
            )
        reply: dict[str, Any] = orjson.loads(reply_line)
        total += 1
        with lock:
            counts["acked"] += 1
            lock.notify_all()
        if reply.get("ok"):
            if reply.get("duplicate"):
                duplicates += 1
            if verbose:
                ena = reply.get("ena")
                click.echo(
                    f"{name}:{n}: "
                    + (f"ena=0x{ena:016x} " if ena is not None else "")
                    + line.decode(errors="replace")
                )
        else:
            errors += 1
            click.echo(f"fminject: {name}:{n}: {reply.get('error')}", err=True)
    t.join()
    sock.close()
    if send_error:
        fail("fminject", f"lost the connection to fmd: {send_error[0]}")
    total += len(parse_errors)
    if not quiet:
        dup = f" ({duplicates} already stored, not stored again)" if duplicates else ""
        click.echo(f"fminject: {total - errors} of {total} events accepted{dup}")
    sys.exit(EXIT_ERROR if errors else 0)


def main() -> None:
    run_click(cli, "fminject")


if __name__ == "__main__":
    main()
