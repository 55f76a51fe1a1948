"""Where fmdump reads records from: the live store and the rotated log archives.

An archive is an SQLite file written by :func:`fmd.store.rotate.rotate_log`
(``<log>.N`` in the log directory); its ``log_header`` row says which log it
holds.  Archives are opened read-only.  A damaged archive is still opened when
its name says which log it holds (``errlog.3``): fmdump then reads what it can
of it and reports the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, inspect, select
from sqlalchemy.exc import SQLAlchemyError

from fmd.errors import StoreCorrupt, StoreError
from fmd.store.engine import create_store_engine
from fmd.store.rotate import LABELS, archive_metadata
from fmd.store.tolerant import is_corruption, reason

_LOG_OF_LABEL = {label: log for log, label in LABELS.items()}
_ARCHIVE_NAME = re.compile(rf"({'|'.join(LABELS)})\.[0-9]+")


@dataclass
class Source:
    """The live store or one archive file."""

    name: str
    engine: Engine
    sqlite: bool
    live: bool
    logs: tuple[str, ...]
    # Why the archive's header could not be read, when it was opened by its name.
    damaged: str | None = None


def open_archive(path: Path) -> Source:
    """An archive written by :func:`fmd.store.rotate.rotate_log`; StoreError if it is
    not one, StoreCorrupt if it is too damaged to tell which log it holds."""
    if not path.is_file():
        raise StoreError(f"{path}: no such log file")
    engine = create_store_engine(f"sqlite:///{path}", readonly=True)
    named = _ARCHIVE_NAME.fullmatch(path.name)
    damaged: str | None = None
    try:
        if "log_header" not in inspect(engine).get_table_names():
            raise StoreError(f"{path} is not an fmd log archive (no log_header table)")
        _, _, header = archive_metadata("errlog")
        with engine.connect() as conn:
            label = conn.execute(select(header.c.label)).scalar()
    except SQLAlchemyError as exc:
        if not is_corruption(exc):
            engine.dispose()
            raise StoreError(f"{path} is not an fmd log archive: {reason(exc)}") from exc
        if named is None:
            engine.dispose()
            raise StoreCorrupt(f"cannot be read: {reason(exc)}") from exc
        damaged = f"its header cannot be read ({reason(exc)}); reading it as its name says"
        label = LABELS[named.group(1)]
    except BaseException:
        engine.dispose()
        raise
    log = _LOG_OF_LABEL.get(str(label))
    if log is None:
        engine.dispose()
        raise StoreError(f"{path}: unknown log label {label!r}")
    return Source(str(path), engine, True, False, (log,), damaged)


def archives(log_dir: Path, log_name: str) -> list[Path]:
    """The rotated archives of a log, highest number (oldest) first."""
    found = []
    for p in log_dir.glob(f"{log_name}.*"):
        suffix = p.name[len(log_name) + 1 :]
        if suffix.isdigit():
            found.append((int(suffix), p))
    return [p for _, p in sorted(found, reverse=True)]
