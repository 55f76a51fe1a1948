"""``fminject``: send ereports to the running fmd.

``fminject [-R root] [-n] [-v] [-q] [--format auto|json|mce|inj] FILE|-`` reads
the input, marks each event injected, sends them over the ingest socket with
pipelining, and prints an error with the line number for every event fmd
rejected.  The exit code is 1 if any was rejected.  ``-n`` only checks the
input locally.

Formats (``auto`` picks ``inj`` for a file named ``*.inj``, else looks at the
first line that is not blank or a ``#`` comment):

* ``json``: JSON lines, the wire format (blank lines and ``#`` lines skipped);
* ``mce``: the mcelog / kernel machine-check text form; each record is sent
  raw (``{"mca": {...}}``) and fmd decodes it against its platform, so the
  line numbers reported are those where each record starts;
* ``inj``: the illumos injection language (:mod:`fmd.injlang`), chosen when
  the first word is one of its keywords or the text starts with ``/*``.  The
  whole program is checked first; if it has errors, each is printed with its
  line and nothing is sent.  Otherwise the events it generates are sent with
  the line of the command that made them; ``sleep`` waits until fmd has
  acknowledged everything sent before it, then sleeps.
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

from fmd.adm.client import permission_message
from fmd.cli.common import EXIT_ERROR, fail, paths_for, root_option, run_click
from fmd.errors import ProtocolError
from fmd.hw.mcelog import ParseFailure, parse_mce_text
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


Item = tuple[int, bytes] | Sleep


def _detect(data: bytes, name: str) -> str:
    if name.endswith(".inj"):
        return "inj"
    for raw in data.splitlines():
        line = raw.strip()
        if line and not line.startswith(b"#"):
            if line.startswith(b"/*"):
                return "inj"
            word = re.match(rb"[A-Za-z_]+", line)
            if word is not None and word.group().decode() in KEYWORDS:
                return "inj"
            return "json" if line.startswith(b"{") else "mce"
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
    type=click.Choice(["auto", "json", "mce", "inj"]),
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
    items: Iterable[Item]
    if fmt == "mce":
        items, parse_errors = _mce_items(data)
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
        click.echo(f"fminject: {total - errors} of {total} events accepted")
    sys.exit(EXIT_ERROR if errors else 0)


def main() -> None:
    run_click(cli, "fminject")


if __name__ == "__main__":
    main()
