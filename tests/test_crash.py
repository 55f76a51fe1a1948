"""Crash consistency: SIGKILL at random moments while ereports stream in.

A pipelined client streams ereports (unique ``seq``, ``key = seq % 7``) into the
real daemon; the daemon is killed with SIGKILL at a random moment, restarted,
and the stream goes on with new seqs (a seq is never sent twice).  After every
restart and at the end the store must show that nothing acknowledged was lost,
nothing was stored twice, and the ``crash-test`` module's SERD engines and
cases count every stored event exactly once (reference §2.3-2.5, §15: module
state and the commit mark land in one transaction, replay skips what a
checkpoint already covers).
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import orjson
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tests.fmdproc import FmdProcess
from tests.pgschema import pg_schema_url

pytestmark = pytest.mark.e2e

CLASS = "ereport.crash.test"
KEYS = 7
MODULE = "crash-test"
FIRE_EVERY = 5  # crashtest.py's fire.<key> engines have N=4
# The kill moments come from this seed; FMD_CRASH_SEED explores others.
SEED = int(os.environ.get("FMD_CRASH_SEED", "20240611"))
# The sender stops here at the latest; the kill always comes first.
STREAM_LIMIT = 2_000_000


class Stream:
    """A pipelined ingest client: one thread sends lines, another matches the replies."""

    BLOCK = 128

    def __init__(self, path: Path, first_seq: int, limit: int = STREAM_LIMIT) -> None:
        self.first_seq = first_seq
        self.limit = limit
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        # sent[i] is the seq of the i-th line written; reply i answers it.
        self.sent: list[int] = []
        self.acked: list[int] = []
        self.refused: list[tuple[int, str]] = []
        self.torn = 0
        self.finished = threading.Event()
        self._threads = [
            threading.Thread(target=self._send, name="crash-send", daemon=True),
            threading.Thread(target=self._read, name="crash-read", daemon=True),
        ]

    def start(self) -> Stream:
        for t in self._threads:
            t.start()
        return self

    def join(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
            assert not t.is_alive(), f"{t.name} still running {timeout} s after the kill"
        self.sock.close()

    @property
    def next_seq(self) -> int:
        return self.first_seq + len(self.sent)

    def _send(self) -> None:
        seq, end = self.first_seq, self.first_seq + self.limit
        try:
            while seq < end:
                hi = min(seq + self.BLOCK, end)
                block = b"".join(
                    orjson.dumps({"class": CLASS, "seq": s, "key": s % KEYS}) + b"\n"
                    for s in range(seq, hi)
                )
                # Recorded before writing, so the reader never sees a reply
                # to a line it cannot name.  A seq counts as used even if the
                # kill stops it half-written: it is never sent again.
                self.sent.extend(range(seq, hi))
                self.sock.sendall(block)
                seq = hi
            self.finished.set()
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _read(self) -> None:
        i = 0
        try:
            with self.sock.makefile("rb") as rfile:
                for line in rfile:
                    if not line.endswith(b"\n"):
                        self.torn += 1  # cut short by the kill: no verdict
                        break
                    reply = orjson.loads(line)
                    seq = self.sent[i]
                    i += 1
                    if reply.get("ok") is True:
                        self.acked.append(seq)
                    else:
                        self.refused.append((seq, str(reply.get("error"))))
        except OSError:
            pass


@dataclass
class Stored:
    """What the store holds, read directly from the database."""

    seqs: list[int] = field(default_factory=list)
    key_of_id: dict[int, int] = field(default_factory=dict)
    uncommitted: int = 0
    suspect_uuids: list[str] = field(default_factory=list)
    suspect_classes: list[list[str]] = field(default_factory=list)
    case_events: dict[str, list[int]] = field(default_factory=dict)
    serd: dict[str, list[int]] = field(default_factory=dict)

    def ids_by_key(self) -> dict[int, set[int]]:
        out: dict[int, set[int]] = {k: set() for k in range(KEYS)}
        for eid, key in self.key_of_id.items():
            out[key].add(eid)
        return out

    def count_by_key(self) -> dict[int, int]:
        return {k: len(ids) for k, ids in self.ids_by_key().items()}


def read_store(db: Engine) -> Stored:
    """Read the error log, the fault log, the cases and the module's saved SERD engines."""
    st = Stored()
    with db.connect() as conn:
        for eid, payload, committed in conn.execute(
            text("SELECT id, payload, committed FROM errlog ORDER BY id")
        ):
            p = orjson.loads(payload)
            st.seqs.append(p["seq"])
            st.key_of_id[eid] = p["key"]
            st.uncommitted += not committed
        for u, payload in conn.execute(
            text("SELECT uuid, payload FROM fltlog WHERE class = 'list.suspect' ORDER BY id")
        ):
            st.suspect_uuids.append(u)
            st.suspect_classes.append([f["class"] for f in orjson.loads(payload)["fault-list"]])
        for u, eid in conn.execute(
            text("SELECT uuid, event_id FROM case_events ORDER BY uuid, event_id")
        ):
            st.case_events.setdefault(u, []).append(eid)
        for name, data in conn.execute(
            text("SELECT name, data FROM serd_engines WHERE module = :m"), {"m": MODULE}
        ):
            st.serd[name] = [e[0] for e in orjson.loads(data)["events"]]
    return st


def engine_counts(fmd: FmdProcess) -> dict[str, int]:
    """The live SERD engine counts of the crash-test module (fmadm's view)."""
    return {e["name"]: e["count"] for e in fmd.adm("serd", module=MODULE)}


def expected_engine_counts(st: Stored) -> dict[str, int]:
    out = {}
    for key, n in st.count_by_key().items():
        if n:
            out[f"count.{key}"] = n
            out[f"fire.{key}"] = n % FIRE_EVERY
    return out


def run_crash_rounds(fmd: FmdProcess, db: Engine, *, rounds: int, seed: int) -> None:
    """Stream, kill, restart ``rounds`` times; check the store after each restart."""
    rng = random.Random(seed)
    acked: set[int] = set()
    replayed: list[int] = []
    next_seq = 0
    fmd.start()
    for rnd in range(rounds):
        delay = rng.uniform(0.2, 1.5)
        stream = Stream(fmd.paths.xprt_socket, next_seq).start()
        time.sleep(delay)
        assert not stream.finished.is_set(), "the stream ended before the kill"
        fmd.kill()
        stream.join()
        where = f"seed {seed}, round {rnd}, killed after {delay:.2f} s"
        assert stream.refused == [], f"{where}: refused {stream.refused[:3]}"
        acked.update(stream.acked)
        next_seq = stream.next_seq

        fmd.start()
        fmd.quiesce()
        replayed.append(fmd.adm("stats")["dispatch"]["replayed"])
        st = read_store(db)
        assert sorted(acked - set(st.seqs)) == [], f"{where}: acknowledged seqs lost"
        assert [s for s, c in Counter(st.seqs).items() if c > 1] == [], (
            f"{where}: seqs stored twice"
        )
        assert engine_counts(fmd) == expected_engine_counts(st), where

    fmd.quiesce()
    assert fmd.stop() == 0
    st = read_store(db)
    stored = set(st.seqs)
    # Without acknowledged events and kills that left work to replay, the
    # checks below would prove nothing.
    assert len(acked) >= 1000, f"only {len(acked)} events acknowledged in {rounds} rounds"
    assert any(replayed), f"no kill left events to replay: {replayed}"

    # (a) every acknowledged seq is stored, and no seq twice.
    assert sorted(acked - stored) == []
    assert len(st.seqs) == len(stored)
    # (b) a clean stop leaves nothing to replay.
    assert st.uncommitted == 0
    # (c) one list.suspect per 5 events of a key, each case for one key only.
    assert len(st.suspect_uuids) == len(set(st.suspect_uuids))
    assert all(classes == ["fault.test.crash"] for classes in st.suspect_classes)
    per_key: Counter[int] = Counter()
    in_cases: list[int] = []
    for u in st.suspect_uuids:
        events = st.case_events.get(u, [])
        assert len(events) == FIRE_EVERY, f"case {u} holds {events}"
        keys = {st.key_of_id[e] for e in events}
        assert len(keys) == 1, f"case {u} mixes keys {keys}"
        per_key[keys.pop()] += 1
        in_cases += events
    assert len(in_cases) == len(set(in_cases)), "an event was diagnosed in two cases"
    counts = st.count_by_key()
    assert {k: per_key[k] for k in range(KEYS)} == {k: n // FIRE_EVERY for k, n in counts.items()}
    # (d) the checkpointed engines hold exactly the stored events, each once.
    by_key = st.ids_by_key()
    for key in range(KEYS):
        held = st.serd.get(f"count.{key}", [])
        assert len(held) == counts[key], f"count.{key}"
        assert set(held) == by_key[key], f"count.{key} holds other events"
        assert len(st.serd.get(f"fire.{key}", [])) == counts[key] % FIRE_EVERY, f"fire.{key}"


def sqlite_reader(fmd: FmdProcess) -> Engine:
    return create_engine(f"sqlite:///{fmd.paths.db_file}", poolclass=NullPool)


def test_sigkill_loses_and_duplicates_nothing(root: Path, fmd_factory: list[FmdProcess]) -> None:
    """SIGKILL mid-stream (6 rounds, SQLite) loses no acknowledged ereport and counts each once."""
    fmd = FmdProcess(root, plugins=["crashtest"])
    fmd_factory.append(fmd)
    db = sqlite_reader(fmd)
    try:
        run_crash_rounds(fmd, db, rounds=6, seed=SEED)
    finally:
        db.dispose()


class PgSchema(NamedTuple):
    name: str
    url: str


@pytest.fixture
def pg_schema() -> Iterator[PgSchema]:
    """A fresh PostgreSQL schema for one test, named in the URL's search_path; dropped after."""
    with pg_schema_url() as url:
        name = make_url(url).query["options"].split("=", 1)[1]
        yield PgSchema(str(name), url)


@pytest.mark.postgres
def test_sigkill_loses_and_duplicates_nothing_postgres(
    pg_schema: PgSchema, root: Path, fmd_factory: list[FmdProcess]
) -> None:
    """SIGKILL mid-stream (3 rounds, PostgreSQL) loses no acknowledged ereport, counts each once."""
    # pg_schema comes first so that its schema is dropped after the daemon stopped.
    fmd = FmdProcess(root, plugins=["crashtest"], props={"store.url": pg_schema.url})
    fmd_factory.append(fmd)
    db = create_engine(pg_schema.url, poolclass=NullPool)
    try:
        run_crash_rounds(fmd, db, rounds=3, seed=SEED + 1)
        # The daemon kept its tables in the test's own schema (the URL's search_path).
        with db.connect() as conn:
            found = (
                conn.execute(
                    text(
                        "SELECT table_name FROM information_schema.tables "
                        "WHERE table_schema = :s AND table_name IN ('errlog', 'checkpoints') "
                        "ORDER BY table_name"
                    ),
                    {"s": pg_schema.name},
                )
                .scalars()
                .all()
            )
        assert found == ["checkpoints", "errlog"]
    finally:
        db.dispose()
