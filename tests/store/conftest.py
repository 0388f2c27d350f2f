"""Stores on both backends: SQLite files in tmp_path, and a throwaway PostgreSQL.

The PostgreSQL cluster is real: ``initdb`` and ``pg_ctl`` from the installed
server binaries, started once per session on a free port, listening on
127.0.0.1 only, torn down at the end. ``initdb`` refuses to run as root, so
as root the cluster belongs to the ``postgres`` user (``runuser``). Every
test gets a schema of its own, first on its connections' search path.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from trainops.models import Event, MergeRequestRef, RepoRef
from trainops.store import NewRun, Store

PG_BIN = Path(os.environ.get("TRAINOPS_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
T0 = 1_700_000_000.0


class Clock:
    """A clock the test moves by hand: leases expire without sleeping."""

    def __init__(self, at: float = T0) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at

    def tick(self, seconds: float = 1.0) -> float:
        self.at += seconds
        return self.at


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_cluster_owner() -> tuple[list[str], int | None]:
    """The command prefix (and uid) under which initdb will agree to run."""
    if os.geteuid() != 0:
        return [], None
    if shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL as postgres")
    try:
        return ["runuser", "-u", "postgres", "--"], pwd.getpwnam("postgres").pw_uid
    except KeyError:
        pytest.skip("running as root and there is no postgres user to own the cluster")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """``postgresql+psycopg://postgres@127.0.0.1:PORT`` of a fresh cluster (no database)."""
    if not (PG_BIN / "initdb").is_file():
        pytest.skip(f"PostgreSQL server binaries not found in {PG_BIN} (apt: postgresql-15)")
    pytest.importorskip("psycopg", reason="psycopg 3 is needed for the PostgreSQL store")
    prefix, uid = _as_cluster_owner()
    # Not under pytest's tmp dir: that is private to the current user, and the
    # cluster's owner must reach it. mkdtemp makes it 0700; then it is handed over.
    root = Path(tempfile.mkdtemp(prefix="trainops-pg-"))
    data = root / "data"
    if uid is not None:
        os.chown(root, uid, -1)
    port = _free_port()

    def run(*args: str) -> None:
        done = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            log = root / "server.log"
            tail = log.read_text()[-2000:] if log.is_file() else ""
            raise RuntimeError(f"{args[0]} exited {done.returncode}: {done.stderr}\n{tail}")

    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl, log = str(PG_BIN / "pg_ctl"), str(root / "server.log")
    try:
        run(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-N")
        run(pg_ctl, "-D", str(data), "-l", log, "-o", options, "-w", "start")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        try:
            run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_database(postgres_server: str) -> str:
    """One database for the session; tests get a schema each (CREATE DATABASE costs ~0.2 s)."""
    import psycopg

    with psycopg.connect(_libpq(postgres_server, "postgres"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE trainops_tests")
    return f"{postgres_server}/trainops_tests"


def _libpq(url: str, database: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://") + f"/{database}"


def _new_schema(database_url: str) -> str:
    """A URL whose connections see only a fresh, empty schema (first on the search path)."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    server, database = database_url.rsplit("/", 1)
    with psycopg.connect(_libpq(server, database), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    return f"{database_url}?options=-csearch_path%3D{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'trainops.db'}"
    database: str = request.getfixturevalue("postgres_database")
    return _new_schema(database)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(url: str, clock: Clock) -> Iterator[Store]:
    with Store.open(url, clock=clock) as opened:
        yield opened


def push(delivery_id: str = "d-1", *, repo: str = "acme/digits", sha: str = "a" * 40) -> Event:
    return Event(
        forge="github",
        delivery_id=delivery_id,
        kind="push",
        repo=RepoRef("github", repo, f"https://github.example/{repo}.git", "main"),
        ref="refs/heads/main",
        before="0" * 40,
        after=sha,
        author="ada",
        changed_paths=("train.py", "data/raw.dvc"),
        head_message="train longer",
    )


def merge_request(delivery_id: str = "d-mr", number: int = 7) -> Event:
    return Event(
        forge="gitlab",
        delivery_id=delivery_id,
        kind="merge_request",
        repo=RepoRef("gitlab", "acme/digits", "https://gitlab.example/acme/digits.git"),
        action="update",
        after="b" * 40,
        merge_request=MergeRequestRef(
            number=number,
            action="update",
            title="Wider model ✓",
            url=f"https://gitlab.example/acme/digits/-/merge_requests/{number}",
            source_branch="wide",
            target_branch="main",
            head_sha="b" * 40,
            is_fork=True,
            source_clone_url="https://gitlab.example/eve/digits.git",
            draft=True,
        ),
        author_association=None,
    )


def new_run(
    run_id: str,
    *,
    key: str | None = None,
    group: str | None = "github:acme/digits:main",
    priority: int = 0,
    repo: str = "acme/digits",
    event_id: int | None = None,
) -> NewRun:
    return NewRun(
        run_id=run_id,
        run_key=key or f"key-{run_id}",
        event_id=event_id,
        forge="github",
        repo=repo,
        clone_url=f"https://github.example/{repo}.git",
        commit="c" * 40,
        ref="refs/heads/main",
        branch="main",
        mr_number=None,
        trigger="push",
        group_key=group,
        priority=priority,
    )
