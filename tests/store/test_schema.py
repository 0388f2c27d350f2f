"""Opening a store: migrations, backend settings, unreachable databases."""

from __future__ import annotations

import socket
import sqlite3
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from tests.store.conftest import Clock, push
from trainops.errors import StoreError
from trainops.store import Store
from trainops.store.engine import VERSION_TABLE, parse_url
from trainops.store.tables import Base


def versions(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.scalars(text(f"SELECT version_num FROM {VERSION_TABLE}")))
    finally:
        engine.dispose()


def test_migrate_twice_is_a_no_op(url: str, clock: Clock) -> None:
    with Store.open(url, clock=clock) as store:
        store.add_event(push())
        store.migrate()
        store.migrate()
        assert [e.delivery_id for e in store.list_events()] == ["d-1"]
    with Store.open(url, clock=clock) as again:
        assert len(again.list_events()) == 1
    assert versions(url) == ["0002"]


def test_a_database_from_a_newer_trainops_is_refused(store: Store, url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    finally:
        engine.dispose()
    with pytest.raises(StoreError, match="9999"):
        store.migrate()


def test_concurrent_first_migrations_agree(url: str) -> None:
    """Replicas starting together on an empty database: one builds it, the others wait."""
    stores = [Store(url) for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def start(store: Store) -> None:
        barrier.wait()
        try:
            store.migrate()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    assert errors == []
    assert versions(url) == ["0002"]


def test_migrations_build_exactly_the_models(store: Store, url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "version_table": VERSION_TABLE}
            )
            assert compare_metadata(context, Base.metadata) == []
            names = set(inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert names == {"events", "runs", "reports", VERSION_TABLE}


def test_sqlite_runs_in_wal_with_foreign_keys(tmp_path: Path) -> None:
    db = tmp_path / "deep" / "er" / "trainops.db"
    with Store.open(f"sqlite:///{db}") as store:
        assert store.backend == "sqlite"
        engine = store._engine
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 15000
    with sqlite3.connect(db) as raw:  # WAL is a property of the file
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_urls() -> None:
    assert parse_url("postgresql://u:pw@db/trainops").drivername == "postgresql+psycopg"
    assert parse_url("postgres://db/trainops").drivername == "postgresql+psycopg"
    with pytest.raises(StoreError, match="in-memory"):
        Store("sqlite://")
    with pytest.raises(StoreError, match="only sqlite and postgresql"):
        Store("mysql://db/x")
    with pytest.raises(StoreError, match="not a database URL") as info:
        Store("not a url with secret-pw")
    assert "secret-pw" not in str(info.value)


def test_ping_answers_on_a_live_store(store: Store) -> None:
    store.ping()


def test_ping_raises_on_an_unreachable_sqlite(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    store = Store(f"sqlite:///{tmp_path / 'a-file' / 'trainops.db'}")
    with pytest.raises(StoreError, match="reaching store") as info:
        store.ping()
    assert info.value.__cause__ is not None
    with pytest.raises(StoreError):
        store.migrate()


def test_ping_raises_on_an_unreachable_postgres() -> None:
    pytest.importorskip("psycopg")
    # Bound but never listening: connections to it are refused.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        store = Store(f"postgresql://postgres:hunter2@127.0.0.1:{port}/trainops")
        with pytest.raises(StoreError, match="reaching store") as info:
            store.ping()
        assert "hunter2" not in str(info.value)
        with pytest.raises(StoreError, match="migrating store"):
            Store.open(f"postgresql://postgres@127.0.0.1:{port}/trainops")
