"""The durable inbox of deliveries and queue of runs, shared by the service's threads.

Two rules carry the design:

* **Idempotent inserts.** A delivery is unique on (forge, delivery id), a
  run on its run key. Inserting is the check: a duplicate fails on the
  unique constraint, and we hand back the row that won. Checking first
  and inserting second would race between threads and replicas.
* **Claims under a lease.** A worker takes the next row inside one write
  transaction and stamps it with its name and an expiry. PostgreSQL:
  ``SELECT ... FOR UPDATE SKIP LOCKED``, so replicas claim different rows
  without waiting on each other. SQLite: the transaction is ``BEGIN
  IMMEDIATE`` (see ``engine``), so the whole claim holds the one write
  lock. A worker that dies stops renewing; once the lease expires the row
  is claimable again and ``attempts`` records that it was taken over.

Every method is synchronous and opens its own short transaction, so any
thread may call any method. Database trouble surfaces as ``StoreError``;
wrong arguments (an unknown status) as ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from types import TracebackType
from typing import Any, cast

from sqlalchemy import CursorResult, and_, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.dml import Update

from trainops.errors import StoreError
from trainops.models import Event, now
from trainops.store.engine import BEGIN_OPTION, make_engine, migrate, reason
from trainops.store.outbox import OutboxMixin
from trainops.store.records import (
    EVENT_FINAL,
    EVENT_PROCESSING,
    EVENT_RECEIVED,
    EVENT_STATUSES,
    RUN_CANCELLED,
    RUN_FINAL,
    RUN_QUEUED,
    RUN_RUNNING,
    RUN_STATUSES,
    RUN_SUPERSEDED,
    EventRecord,
    NewRun,
    RunRecord,
    check_status,
)
from trainops.store.tables import EventRow, RunRow

# The order in which queued runs are claimed; queue_position counts in the same order.
_CLAIM_ORDER = (RunRow.priority, RunRow.queued_at, RunRow.id)


class Store(OutboxMixin):
    """Events and runs in SQLite (a file URL) or PostgreSQL (``postgresql+psycopg://``).

    ``clock`` returns epoch seconds; tests pass their own to expire leases
    without sleeping. Leases compare against this clock, so replicas
    sharing a PostgreSQL store need roughly synchronised clocks (NTP).
    """

    def __init__(self, url: str, *, clock: Callable[[], float] = now) -> None:
        self._engine = make_engine(url)
        self._clock = clock
        self._reads = sessionmaker(self._engine, expire_on_commit=False)
        writer = self._engine.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
        self._writes = sessionmaker(writer, expire_on_commit=False)

    @classmethod
    def open(cls, url: str, *, clock: Callable[[], float] = now) -> Store:
        """A store whose schema is up to date."""
        store = cls(url, clock=clock)
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
        return store

    @property
    def url(self) -> str:
        """The database URL with any password masked, fit for logs."""
        return repr(self._engine.url)

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.dialect.name

    def migrate(self) -> None:
        migrate(self._engine)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def ping(self) -> None:
        """Raise StoreError unless the database answers (the readiness probe)."""
        with self._session(f"reaching store {self.url}") as session:
            session.execute(text("SELECT 1"))

    # -- events ------------------------------------------------------------------------

    def add_event(
        self, event: Event, *, status: str = EVENT_RECEIVED, note: str | None = None
    ) -> tuple[EventRecord, bool]:
        """Store a delivery once: ``(record, True)`` the first time, ``(existing, False)`` after."""
        check_status(status, EVENT_STATUSES, "event status")
        row = EventRow(
            forge=event.forge,
            delivery_id=event.delivery_id,
            kind=event.kind,
            repo=event.repo.full_name if event.repo else None,
            received_at=self._clock(),
            status=status,
            attempts=0,
            lease_owner=None,
            lease_expires=None,
            note=note,
            payload=event.to_json(),
        )
        what = f"storing {event.forge} delivery {event.delivery_id!r}"
        clash = self._insert(row, what)
        if clash is None:
            return row.record(), True
        with self._session(what) as session:
            found = session.scalars(
                select(EventRow).where(
                    EventRow.forge == event.forge, EventRow.delivery_id == event.delivery_id
                )
            ).one_or_none()
            if found is None:  # the clash was some other constraint
                raise StoreError(f"{what}: {reason(clash)}") from clash
            return found.record(), False

    def claim_event(self, owner: str, lease_s: float) -> EventRecord | None:
        """The oldest event to process (new, or its worker's lease ran out), now ours."""
        at = self._clock()
        with self._session("claiming an event", write=True) as session:
            row = session.scalars(
                select(EventRow)
                .where(
                    or_(
                        EventRow.status == EVENT_RECEIVED,
                        and_(EventRow.status == EVENT_PROCESSING, EventRow.lease_expires < at),
                    )
                )
                .order_by(EventRow.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).first()
            if row is None:
                return None
            row.status = EVENT_PROCESSING
            row.lease_owner = owner
            row.lease_expires = at + lease_s
            row.attempts += 1
            return row.record()

    def finish_event(self, event_id: int, status: str, note: str | None = None) -> None:
        """Record what processing decided; ``note=None`` keeps the note there was."""
        check_status(status, EVENT_FINAL, "final event status")
        with self._session(f"finishing event {event_id}", write=True) as session:
            row = session.get(EventRow, event_id)
            if row is None:
                raise StoreError(f"finishing event {event_id}: no such event")
            row.status = status
            row.lease_owner = row.lease_expires = None
            if note is not None:
                row.note = note

    def get_event(self, event_id: int) -> EventRecord | None:
        with self._session(f"reading event {event_id}") as session:
            row = session.get(EventRow, event_id)
            return None if row is None else row.record()

    def list_events(self, limit: int = 50) -> list[EventRecord]:
        """The newest ``limit`` events, newest first."""
        with self._session("listing events") as session:
            rows = session.scalars(select(EventRow).order_by(EventRow.id.desc()).limit(limit))
            return [row.record() for row in rows]

    # -- runs ----------------------------------------------------------------------------

    def create_run(self, new: NewRun) -> tuple[RunRecord, bool]:
        """Queue a run once per run key: ``(record, True)``, or ``(existing, False)``."""
        row = RunRow(
            **asdict(new),
            status=RUN_QUEUED,
            queued_at=self._clock(),
            started_at=None,
            finished_at=None,
            attempts=0,
            lease_owner=None,
            lease_expires=None,
            cancel_requested=False,
            superseded_by=None,
            result=None,
            error=None,
            progress=None,
        )
        what = f"queuing run {new.run_id} ({new.repo}@{new.commit[:12]})"
        clash = self._insert(row, what)
        if clash is None:
            return row.record(), True
        with self._session(what) as session:
            found = session.scalars(
                select(RunRow).where(RunRow.run_key == new.run_key)
            ).one_or_none()
            if found is None:  # a reused run id, or an event id that does not exist
                raise StoreError(f"{what}: {reason(clash)}") from clash
            return found.record(), False

    def claim_run(self, owner: str, lease_s: float) -> RunRecord | None:
        """The next run to execute, now ours, or None.

        A run whose worker died (running, lease expired) comes first: it
        already had its turn in the queue. Otherwise the first queued run
        by (priority, queued_at). Runs with ``cancel_requested`` are claimed
        too, so that someone finishes them as cancelled or superseded.
        """
        at = self._clock()
        with self._session("claiming a run", write=True) as session:
            row = session.scalars(
                select(RunRow)
                .where(RunRow.status == RUN_RUNNING, RunRow.lease_expires < at)
                .order_by(RunRow.lease_expires, RunRow.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).first()
            if row is None:
                row = session.scalars(
                    select(RunRow)
                    .where(RunRow.status == RUN_QUEUED)
                    .order_by(*_CLAIM_ORDER)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                ).first()
            if row is None:
                return None
            row.status = RUN_RUNNING
            if row.started_at is None:
                row.started_at = at
            row.lease_owner = owner
            row.lease_expires = at + lease_s
            row.attempts += 1
            return row.record()

    def renew_run_lease(self, run_id: str, owner: str, lease_s: float) -> bool:
        """Extend our lease; False when the run is no longer ours (taken over, finished)."""
        with self._session(f"renewing the lease of run {run_id}", write=True) as session:
            renew = (
                update(RunRow)
                .where(
                    RunRow.run_id == run_id,
                    RunRow.status == RUN_RUNNING,
                    RunRow.lease_owner == owner,
                )
                .values(lease_expires=self._clock() + lease_s)
            )
            return _rowcount(session, renew) == 1

    def finish_run(
        self, run_id: str, status: str, *, result: dict[str, Any] | None, error: str | None
    ) -> None:
        """Record the outcome; the lease is released."""
        check_status(status, RUN_FINAL, "final run status")
        what = f"finishing run {run_id} as {status}"
        with self._session(what, write=True) as session:
            row = _locked_run(session, run_id)
            if row is None:
                raise StoreError(f"{what}: no such run")
            row.status = status
            row.result = result
            row.error = error
            row.finished_at = self._clock()
            row.lease_owner = row.lease_expires = None

    def request_cancel(self, run_id: str) -> RunRecord | None:
        """Cancel a queued run now, or ask a running run's worker to stop it.

        Returns the run as it now stands (unchanged if already finished),
        or None if there is no such run.
        """
        with self._session(f"cancelling run {run_id}", write=True) as session:
            row = _locked_run(session, run_id)
            if row is None:
                return None
            if row.status == RUN_QUEUED:
                row.status = RUN_CANCELLED
                row.finished_at = self._clock()
            elif row.status == RUN_RUNNING:
                row.cancel_requested = True
            return row.record()

    def supersede(self, group_key: str, by_run_id: str) -> list[str]:
        """Retire the group's other unfinished runs in favour of ``by_run_id``.

        Queued runs become superseded at once; running ones get
        ``cancel_requested`` and ``superseded_by``, and their worker stops
        them and finishes them as superseded. Only runs created *before*
        ``by_run_id`` are touched, so two workers superseding each other's
        fresh runs at the same moment still leave the newest one standing.
        An unknown ``by_run_id`` (say ``""``: the merge request was closed)
        retires every unfinished run of the group. Returns the ids touched.
        """
        at = self._clock()
        what = f"superseding runs of {group_key!r} by {by_run_id or '(none)'}"
        with self._session(what, write=True) as session:
            newest = session.scalar(select(RunRow.id).where(RunRow.run_id == by_run_id))
            query = select(RunRow).where(
                RunRow.group_key == group_key,
                RunRow.run_id != by_run_id,
                RunRow.status.in_((RUN_QUEUED, RUN_RUNNING)),
            )
            if newest is not None:
                query = query.where(RunRow.id < newest)
            touched: list[str] = []
            for row in session.scalars(query.order_by(RunRow.id).with_for_update()):
                if row.status == RUN_QUEUED:
                    row.status = RUN_SUPERSEDED
                    row.finished_at = at
                elif row.cancel_requested and row.superseded_by is not None:
                    continue  # already being stopped in favour of an earlier run
                else:
                    row.cancel_requested = True
                row.superseded_by = by_run_id
                touched.append(row.run_id)
            return touched

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._session(f"reading run {run_id}") as session:
            row = session.scalars(select(RunRow).where(RunRow.run_id == run_id)).one_or_none()
            return None if row is None else row.record()

    def list_runs(
        self, limit: int = 50, *, repo: str | None = None, status: str | None = None
    ) -> list[RunRecord]:
        """The newest ``limit`` runs, newest first, optionally of one repo and/or status."""
        if status is not None:
            check_status(status, RUN_STATUSES, "run status")
        query = select(RunRow)
        if repo is not None:
            query = query.where(RunRow.repo == repo)
        if status is not None:
            query = query.where(RunRow.status == status)
        query = query.order_by(RunRow.queued_at.desc(), RunRow.id.desc()).limit(limit)
        with self._session("listing runs") as session:
            return [row.record() for row in session.scalars(query)]

    def queue_position(self, run_id: str) -> int | None:
        """1 for the run claimed next, 2 after it, ...; None unless the run is queued."""
        with self._session(f"placing run {run_id} in the queue") as session:
            row = session.scalars(select(RunRow).where(RunRow.run_id == run_id)).one_or_none()
            if row is None or row.status != RUN_QUEUED:
                return None
            ahead = or_(
                RunRow.priority < row.priority,
                and_(
                    RunRow.priority == row.priority,
                    or_(
                        RunRow.queued_at < row.queued_at,
                        and_(RunRow.queued_at == row.queued_at, RunRow.id < row.id),
                    ),
                ),
            )
            count = session.scalar(
                select(func.count()).select_from(RunRow).where(RunRow.status == RUN_QUEUED, ahead)
            )
            return (count or 0) + 1

    def update_run_progress(self, run_id: str, progress: dict[str, Any]) -> None:
        """Replace the run's progress blob (stages and their states, for the dashboard)."""
        what = f"recording progress of run {run_id}"
        with self._session(what, write=True) as session:
            replace = update(RunRow).where(RunRow.run_id == run_id).values(progress=progress)
            if _rowcount(session, replace) != 1:
                raise StoreError(f"{what}: no such run")

    # -- plumbing ------------------------------------------------------------------------

    @contextmanager
    def _session(self, what: str, *, write: bool = False) -> Iterator[Session]:
        """One transaction; commits on success, and database errors become StoreError."""
        maker = self._writes if write else self._reads
        try:
            with maker.begin() as session:
                yield session
        except SQLAlchemyError as exc:
            raise StoreError(f"{what}: {reason(exc)}") from exc

    def _insert(self, row: EventRow | RunRow, what: str) -> IntegrityError | None:
        """Insert ``row`` in its own transaction; the IntegrityError if a constraint refused it."""
        try:
            with self._writes.begin() as session:
                session.add(row)
        except IntegrityError as exc:
            return exc
        except SQLAlchemyError as exc:
            raise StoreError(f"{what}: {reason(exc)}") from exc
        return None


def _rowcount(session: Session, statement: Update) -> int:
    """Rows an UPDATE matched (the typed API returns a plain Result for ORM statements)."""
    result = cast(CursorResult[Any], session.execute(statement))
    return result.rowcount


def _locked_run(session: Session, run_id: str) -> RunRow | None:
    """The run, locked until commit on PostgreSQL (SQLite's write lock covers it already)."""
    query = select(RunRow).where(RunRow.run_id == run_id).with_for_update()
    return session.scalars(query).one_or_none()
