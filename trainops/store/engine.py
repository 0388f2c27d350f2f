"""Engines for the two backends, and migrating them.

SQLite (the embedded default) needs care that PostgreSQL does not:

* WAL, so readers never block the one writer; ``synchronous=NORMAL`` is
  durable across application crashes in WAL mode; foreign keys are off by
  default in SQLite and are turned on per connection.
* Python's ``sqlite3`` (before 3.12's ``autocommit``) opens transactions
  late and on its own terms: not for SELECT or DDL. We switch that off and
  emit BEGIN ourselves, so every transaction is real, DDL included.
* Writers begin with ``BEGIN IMMEDIATE``: they take the write lock up
  front, and a second writer waits out the busy timeout. A deferred
  transaction that reads and then writes can instead fail at once with
  "database is locked" (the busy handler cannot help a reader that must
  upgrade while another writer commits), which is what a claim does.

PostgreSQL is reached through psycopg 3. A bare ``postgresql://`` (or
Heroku-style ``postgres://``) URL is read as ``postgresql+psycopg``:
SQLAlchemy 2.0 would otherwise look for psycopg2 (2.1 defaults to psycopg).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from trainops.errors import StoreError

MIGRATIONS: Final = Path(__file__).with_name("migrations")
VERSION_TABLE: Final = "trainops_alembic_version"
"""Not alembic's default name, so a database shared with MLflow (also alembic) is safe."""

BUSY_TIMEOUT_S: Final = 15.0
"""How long a SQLite writer waits for another's lock before giving up."""
PG_CONNECT_TIMEOUT_S: Final = 5
"""So a readiness probe against an unreachable server answers instead of hanging."""
_MIGRATE_LOCK: Final = 0x74726E6F7073  # "trnops": one advisory lock id for migrations
_ALEMBIC_LOCK = threading.Lock()
"""Alembic's ``context`` and ``op`` are process-global proxies: one migration at a time."""

BEGIN_OPTION: Final = "trainops_sqlite_begin"
"""Execution option naming SQLite's BEGIN mode: ``DEFERRED`` (reads) or ``IMMEDIATE``."""


def parse_url(url: str) -> URL:
    """The URL to give SQLAlchemy, or StoreError if trainops cannot store there."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        # Not echoed: a URL may carry a password.
        raise StoreError("the store URL is not a database URL") from exc
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        # Each pooled connection would see its own empty database.
        raise StoreError("the store needs a SQLite file, not an in-memory database")
    if backend not in ("sqlite", "postgresql"):
        raise StoreError(f"store URL {parsed!r}: only sqlite and postgresql are supported")
    return parsed


def make_engine(url: str) -> Engine:
    """An engine with our per-backend settings; connects lazily."""
    parsed = parse_url(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            engine = create_engine(parsed, connect_args={"timeout": BUSY_TIMEOUT_S})
            event.listen(engine, "connect", _sqlite_connect)
            event.listen(engine, "begin", _sqlite_begin)
        else:
            engine = create_engine(
                parsed,
                pool_pre_ping=True,  # survive a server restart between requests
                connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S},
            )
    except (ImportError, SQLAlchemyError) as exc:
        raise StoreError(f"opening store {parsed!r}: {exc}") from exc
    return engine


def sqlite_path(engine: Engine) -> Path | None:
    if engine.dialect.name != "sqlite" or not engine.url.database:
        return None
    return Path(engine.url.database)


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we emit BEGIN (see _sqlite_begin)
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _enable_wal(cursor: Any) -> None:
    """Switch the file to WAL (a lasting property of the file) if it is not yet.

    Switching needs the file to itself, and SQLite answers "database is
    locked" at once instead of calling the busy handler, so connections
    racing on a brand-new file (replicas starting together) retry here.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _sqlite_begin(connection: Connection) -> None:
    mode = connection.get_execution_options().get(BEGIN_OPTION, "DEFERRED")
    if mode not in ("DEFERRED", "IMMEDIATE"):
        raise ValueError(f"unknown SQLite BEGIN mode {mode!r}")
    connection.exec_driver_sql(f"BEGIN {mode}")


def migrate(engine: Engine) -> None:
    """Upgrade the schema to the newest migration; a no-op when it is there.

    Safe when several processes start at once: every migrator first takes
    one lock (SQLite: the write lock, by BEGIN IMMEDIATE; PostgreSQL: an
    advisory transaction lock), then reads the version. The winner creates
    the tables; the others wait, find the head revision and do nothing.
    Everything runs in that one transaction, so a failed migration leaves
    no half-built schema behind (both backends have transactional DDL).
    """
    # Alembic is only needed here; importing it costs ~0.2 s, so not at module load.
    from alembic import command
    from alembic.config import Config
    from alembic.util import CommandError

    path = sqlite_path(engine)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"creating the directory of store {str(path)!r}: {exc}") from exc
    config = Config()
    # Config values go through ConfigParser interpolation: a '%' in the path must be doubled.
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    writer = engine.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
    try:
        with _ALEMBIC_LOCK, writer.connect() as connection, connection.begin():
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATE_LOCK}
                )
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except SQLAlchemyError as exc:
        raise StoreError(f"migrating store {engine.url!r}: {reason(exc)}") from exc
    except CommandError as exc:  # e.g. the database was migrated by a newer trainops
        raise StoreError(f"migrating store {engine.url!r}: {exc}") from exc


def reason(exc: SQLAlchemyError) -> str:
    """The database's own words, first line only.

    SQLAlchemy's message appends the statement and its parameters, which
    can hold a whole webhook payload; logs and HTTP errors should not.
    """
    orig = getattr(exc, "orig", None)
    words = str(orig if orig is not None else exc).strip()
    return words.splitlines()[0] if words else type(exc).__name__
