"""A PostgreSQL schema of a test's own, for the tests that also run on PostgreSQL.

``FMD_TEST_PG_URL`` names the server (CI sets it for the local one); without it
the PostgreSQL variants are skipped.  Each test gets a fresh schema, reached
through ``search_path`` in the URL, and drops it afterwards, so concurrent runs
never see each other's tables.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

PG_URL = os.environ.get("FMD_TEST_PG_URL", "")


@contextmanager
def pg_schema_url() -> Iterator[str]:
    """The URL of a new, empty schema (skips the test when no server is configured)."""
    if not PG_URL:
        pytest.skip("FMD_TEST_PG_URL is not set")
    name = f"fmdtest_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL, poolclass=NullPool)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={name}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()
