"""Where fmdump reads records from: the live store and the rotated log archives.

An archive is an SQLite file written by :func:`fmd.store.rotate.rotate_log`
(``<log>.N`` in the log directory); its ``log_header`` row says which log it
holds.  Archives are opened read-only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, inspect, select
from sqlalchemy.exc import SQLAlchemyError

from fmd.errors import StoreError
from fmd.store.engine import create_store_engine
from fmd.store.rotate import LABELS, archive_metadata

_LOG_OF_LABEL = {label: log for log, label in LABELS.items()}


@dataclass
class Source:
    """The live store or one archive file."""

    name: str
    engine: Engine
    sqlite: bool
    live: bool
    logs: tuple[str, ...]


def open_archive(path: Path) -> Source:
    """An archive written by :func:`fmd.store.rotate.rotate_log`; StoreError if it is not one."""
    if not path.is_file():
        raise StoreError(f"{path}: no such log file")
    engine = create_store_engine(f"sqlite:///{path}", readonly=True)
    try:
        if "log_header" not in inspect(engine).get_table_names():
            raise StoreError(f"{path} is not an fmd log archive (no log_header table)")
        _, _, header = archive_metadata("errlog")
        with engine.connect() as conn:
            label = conn.execute(select(header.c.label)).scalar()
    except SQLAlchemyError as exc:
        engine.dispose()
        raise StoreError(f"{path} is not an fmd log archive: {exc}") from exc
    except BaseException:
        engine.dispose()
        raise
    log = _LOG_OF_LABEL.get(str(label))
    if log is None:
        engine.dispose()
        raise StoreError(f"{path}: unknown log label {label!r}")
    return Source(str(path), engine, True, False, (log,))


def archives(log_dir: Path, log_name: str) -> list[Path]:
    """The rotated archives of a log, highest number (oldest) first."""
    found = []
    for p in log_dir.glob(f"{log_name}.*"):
        suffix = p.name[len(log_name) + 1 :]
        if suffix.isdigit():
            found.append((int(suffix), p))
    return [p for _, p in sorted(found, reverse=True)]
