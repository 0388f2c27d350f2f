"""The schema: one row per webhook delivery, one row per run.

This is the model the code reads and writes; the migrations under
``migrations/versions/`` are the history that builds it, written out by
hand so an old migration never changes when this module does. A test
compares the two (``alembic`` autogenerate must find no difference).

Constraint names follow one naming convention so they are the same on
SQLite and PostgreSQL, and later migrations can drop them by name.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from trainops.errors import StoreError
from trainops.models import Event
from trainops.store.records import EventRecord, ReportRecord, RunRecord

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite makes only an INTEGER PRIMARY KEY an auto-incrementing rowid alias.
ID_TYPE = BigInteger().with_variant(Integer(), "sqlite")
# none_as_null: Python None is SQL NULL ("no result yet"), not the JSON value null.
JSON_TYPE = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class EventRow(Base):
    """A delivery as received; ``payload`` is ``Event.to_json()``."""

    __tablename__ = "events"
    __table_args__ = (
        # The forge's delivery id (GitHub X-GitHub-Delivery, GitLab Idempotency-Key)
        # is unchanged on redelivery: this constraint is what makes ingestion idempotent.
        UniqueConstraint("forge", "delivery_id"),
        Index(None, "status", "id"),  # claim: oldest claimable first
        Index(None, "repo"),
    )

    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True, autoincrement=True)
    forge: Mapped[str] = mapped_column(String(32))
    delivery_id: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))
    repo: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[float] = mapped_column(Double)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires: Mapped[float | None] = mapped_column(Double)
    note: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON_TYPE)

    def record(self) -> EventRecord:
        try:
            event = Event.from_json(self.payload)
        except (TypeError, ValueError) as exc:  # a payload from an older Event shape
            raise StoreError(f"event {self.id}: stored payload does not fit Event: {exc}") from exc
        return EventRecord(
            id=self.id,
            forge=self.forge,
            delivery_id=self.delivery_id,
            kind=self.kind,
            repo=self.repo,
            received_at=self.received_at,
            status=self.status,
            attempts=self.attempts,
            note=self.note,
            event=event,
        )


class RunRow(Base):
    """A run: what to build (from ``NewRun``) and where it stands."""

    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("run_id"),
        # hash(repo, sha, spec, trigger): one run however often the event arrives.
        UniqueConstraint("run_key"),
        Index(None, "status", "priority", "queued_at", "id"),  # claim order
        Index(None, "group_key", "status"),  # supersede
        Index(None, "repo", "queued_at"),  # list by repo, newest first
        Index(None, "queued_at"),  # list, newest first
        Index(None, "event_id"),
    )

    # A surrogate key: ties on (priority, queued_at) break by insertion order.
    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(64))
    run_key: Mapped[str] = mapped_column(String(255))
    event_id: Mapped[int | None] = mapped_column(
        ID_TYPE, ForeignKey("events.id", ondelete="SET NULL")
    )
    forge: Mapped[str] = mapped_column(String(32))
    repo: Mapped[str] = mapped_column(Text)
    clone_url: Mapped[str] = mapped_column(Text)
    commit: Mapped[str] = mapped_column(String(64))
    ref: Mapped[str | None] = mapped_column(Text)
    branch: Mapped[str | None] = mapped_column(Text)
    mr_number: Mapped[int | None] = mapped_column(Integer)
    trigger: Mapped[str] = mapped_column(String(64))
    group_key: Mapped[str | None] = mapped_column(Text)
    priority: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    queued_at: Mapped[float] = mapped_column(Double)
    started_at: Mapped[float | None] = mapped_column(Double)
    finished_at: Mapped[float | None] = mapped_column(Double)
    attempts: Mapped[int] = mapped_column(Integer)
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires: Mapped[float | None] = mapped_column(Double)
    cancel_requested: Mapped[bool] = mapped_column(Boolean)
    superseded_by: Mapped[str | None] = mapped_column(String(64))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON_TYPE)
    error: Mapped[str | None] = mapped_column(Text)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON_TYPE)

    def record(self) -> RunRecord:
        return RunRecord(**{name: getattr(self, name) for name in _RUN_FIELDS})


_RUN_FIELDS = tuple(f.name for f in fields(RunRecord))


class ReportRow(Base):
    """The outbox of reports to forges: desired state per target, and what was delivered."""

    __tablename__ = "reports"
    __table_args__ = (
        UniqueConstraint("target"),
        Index(None, "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True, autoincrement=True)
    target: Mapped[str] = mapped_column(String(512))
    kind: Mapped[str] = mapped_column(String(16))
    forge: Mapped[str] = mapped_column(String(32))
    repo: Mapped[str] = mapped_column(Text)
    sha: Mapped[str | None] = mapped_column(String(64))
    mr_number: Mapped[int | None] = mapped_column(Integer)
    desired: Mapped[dict[str, Any]] = mapped_column(JSON_TYPE)
    delivered: Mapped[dict[str, Any] | None] = mapped_column(JSON_TYPE)
    version: Mapped[int] = mapped_column(Integer)
    delivered_version: Mapped[int] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[float] = mapped_column(Double)
    last_error: Mapped[str | None] = mapped_column(Text)
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires: Mapped[float | None] = mapped_column(Double)

    def record(self) -> ReportRecord:
        return ReportRecord(
            target=self.target,
            kind=self.kind,
            forge=self.forge,
            repo=self.repo,
            sha=self.sha,
            mr_number=self.mr_number,
            desired=self.desired,
            delivered=self.delivered,
            version=self.version,
            attempts=self.attempts,
            last_error=self.last_error,
        )
