"""A PostgreSQL store that goes away and comes back: clients are told while it is
gone, module state is held (no module fails), and everything resumes by itself.

The test starts a private PostgreSQL server on a port of its own (it stops it), so
the machine's shared server is never touched; it is skipped, with the reason, where
PostgreSQL's server programs or its user are missing."""

from __future__ import annotations

import glob
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fmdproc import FmdProcess

pytestmark = pytest.mark.e2e


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivatePostgres:
    """A throw-away PostgreSQL cluster run as the ``postgres`` user."""

    def __init__(self, base: Path) -> None:
        initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            pytest.skip("PostgreSQL's initdb and pg_ctl are not installed")
        try:
            self.user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("there is no postgres user to run a private server as")
        self.initdb, self.pg_ctl = initdb, pg_ctl
        self.dir = base / "pgdata"
        self.port = _free_port()
        base.chmod(0o755)
        self.dir.mkdir()
        shutil.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        self._run([self.initdb, "-D", str(self.dir), "-A", "trust", "-U", "postgres"])

    def _run(self, args: list[str]) -> None:
        done = subprocess.run(
            args,
            user=self.user.pw_uid,
            group=self.user.pw_gid,
            capture_output=True,
            text=True,
            timeout=120,
            cwd="/",
        )
        if done.returncode != 0:
            pytest.skip(f"cannot run a private PostgreSQL: {done.stderr.strip()[:200]}")

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        # -l: the server must not keep the pipes of pg_ctl's output open.
        log = str(self.dir / "server.log")
        self._run([self.pg_ctl, "-D", str(self.dir), "-l", log, "-o", opts, "-w", "start"])

    def stop(self) -> None:
        self._run([self.pg_ctl, "-D", str(self.dir), "-m", "immediate", "-w", "stop"])

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    # Not under pytest's tmp_path: its parents are closed to the postgres user.
    base = Path(tempfile.mkdtemp(prefix="fmd-pg-"))
    try:
        pg = PrivatePostgres(base)
        pg.start()
        try:
            yield pg
        finally:
            subprocess.run(
                [pg.pg_ctl, "-D", str(pg.dir), "-m", "immediate", "stop"],
                user=pg.user.pw_uid,
                capture_output=True,
                timeout=60,
                cwd="/",
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


ICACHE_CE = "0x9400000000000101"


def icache(t: int) -> dict[str, object]:
    return {"mca": {"cpu": 13, "bank": 1, "status": ICACHE_CE, "time": 1_700_000_000 + t}}


def test_database_outage_is_survived(
    root: Path, postgres: PrivatePostgres, fmd_factory: list[FmdProcess]
) -> None:
    """While the database is down every event is answered with an error saying so and
    no module fails; once it is back ingest resumes by itself, the held module state is
    written, and no acknowledged event is lost."""
    conf = root / "etc" / "fmd" / "fmd.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(f"setprop store.url {postgres.url}\n")  # fmdump reads it too
    fmd = FmdProcess(root, props={"platform": "sim"})
    fmd_factory.append(fmd)
    fmd.start()
    before = fmd.send_lines([icache(h * 3600) for h in range(2)])
    assert [r["ok"] for r in before] == [True, True]
    fmd.quiesce()

    postgres.stop()
    refused = fmd.send_lines([icache(2 * 3600)])
    assert refused[0]["ok"] is False
    assert "not stored" in refused[0]["error"]
    assert {m["status"] for m in fmd.adm("config")["modules"]} == {"active"}

    postgres.start()
    deadline = time.monotonic() + 60
    while True:
        [reply] = fmd.send_lines([icache(3 * 3600)])
        if reply["ok"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert reply["ok"] is True
    fmd.send_lines([icache(4 * 3600)])
    fmd.quiesce()
    assert {m["status"] for m in fmd.adm("config")["modules"]} == {"active"}
    assert len(fmd.errlog_json()) == 4
    suspects = [e for e in fmd.fltlog_json() if e["class"] == "list.suspect"]
    assert [s["fault-list"][0]["location"] for s in suspects] == ["CPU 3"]
