"""The report outbox: what forges should show, kept until they show it.

A run's reports (commit statuses, the merge request's living comment) are
written here first, in the same store as the run, and delivered by a loop
that survives forge outages: a failed delivery is retried with backoff, a
newer state replaces an undelivered older one, and nothing about a report
can fail or lose the run itself.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from trainops.errors import StoreError
from trainops.store.records import ReportRecord
from trainops.store.tables import ReportRow


class OutboxMixin:
    """Report methods of ``Store`` (which provides ``_session``, ``_clock`` and ``backend``)."""

    _clock: Callable[[], float]

    @property
    def backend(self) -> str:
        raise NotImplementedError  # pragma: no cover - provided by Store

    def _session(self, what: str, *, write: bool = False) -> AbstractContextManager[Session]:
        raise NotImplementedError  # pragma: no cover - provided by Store

    def put_report(
        self,
        target: str,
        *,
        kind: str,
        forge: str,
        repo: str,
        sha: str | None,
        mr_number: int | None,
        desired: dict[str, Any],
    ) -> None:
        """Set the desired state of ``target``; a no-op when it is what is desired already."""
        values = {
            "target": target,
            "kind": kind,
            "forge": forge,
            "repo": repo,
            "sha": sha,
            "mr_number": mr_number,
            "desired": desired,
            "delivered": None,
            "version": 1,
            "delivered_version": 0,
            "attempts": 0,
            "next_attempt_at": self._clock(),
            "last_error": None,
        }
        insert = pg_insert if self.backend == "postgresql" else sqlite_insert
        with self._session(f"queueing report {target}", write=True) as session:
            row = session.scalars(select(ReportRow).where(ReportRow.target == target)).first()
            if row is None:
                session.execute(insert(ReportRow).values(**values).on_conflict_do_nothing())
                row = session.scalars(select(ReportRow).where(ReportRow.target == target)).one()
                if row.desired == desired:
                    return
            if row.desired == desired:
                return
            row.desired = desired
            row.version += 1
            row.attempts = 0
            row.next_attempt_at = self._clock()

    def claim_report(self, owner: str, lease_s: float) -> ReportRecord | None:
        """A report with an undelivered version whose retry time has come, now ours."""
        at = self._clock()
        with self._session("claiming a report", write=True) as session:
            row = session.scalars(
                select(ReportRow)
                .where(
                    ReportRow.version > ReportRow.delivered_version,
                    ReportRow.next_attempt_at <= at,
                    or_(ReportRow.lease_expires.is_(None), ReportRow.lease_expires < at),
                )
                .order_by(ReportRow.next_attempt_at, ReportRow.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).first()
            if row is None:
                return None
            row.lease_owner = owner
            row.lease_expires = at + lease_s
            return row.record()

    def report_delivered(self, target: str, version: int, delivered: dict[str, Any]) -> None:
        """``version`` is on the forge now (a newer one may be waiting already)."""
        with self._session(f"recording delivery of {target}", write=True) as session:
            row = self._report(session, target)
            row.delivered_version = max(row.delivered_version, version)
            row.delivered = delivered
            row.attempts = 0
            row.last_error = None
            row.lease_owner = row.lease_expires = None

    def report_failed(self, target: str, error: str, retry_in_s: float | None) -> None:
        """Delivery failed: try again in ``retry_in_s``, or (None) give this version up."""
        with self._session(f"recording failed delivery of {target}", write=True) as session:
            row = self._report(session, target)
            row.attempts += 1
            row.last_error = error
            row.lease_owner = row.lease_expires = None
            if retry_in_s is None:
                row.delivered_version = row.version  # dead letter: keep the error, stop trying
            else:
                row.next_attempt_at = self._clock() + retry_in_s

    def get_report(self, target: str) -> ReportRecord | None:
        with self._session(f"reading report {target}") as session:
            row = session.scalars(select(ReportRow).where(ReportRow.target == target)).first()
            return None if row is None else row.record()

    def pending_reports(self) -> int:
        """Reports with an undelivered version (for health and tests)."""
        with self._session("counting reports") as session:
            rows = session.scalars(
                select(ReportRow.id).where(and_(ReportRow.version > ReportRow.delivered_version))
            )
            return len(list(rows))

    @staticmethod
    def _report(session: Session, target: str) -> ReportRow:
        row = session.scalars(select(ReportRow).where(ReportRow.target == target)).first()
        if row is None:
            raise StoreError(f"report {target}: no such report")
        return row
