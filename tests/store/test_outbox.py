"""The report outbox: newest desired state wins, delivery retried, nothing lost on restart."""

from __future__ import annotations

from pathlib import Path

from trainops.store import Store

CLOCK = [1000.0]


def store(tmp_path: Path) -> Store:
    return Store.open(f"sqlite:///{tmp_path / 's.db'}", clock=lambda: CLOCK[0])


def put(s: Store, body: str, target: str = "comment:github:acme/digits!7") -> None:
    s.put_report(
        target,
        kind="comment",
        forge="github",
        repo="acme/digits",
        sha="a" * 40,
        mr_number=7,
        desired={"key": "run", "body": body},
    )


def test_newest_state_is_delivered_once(tmp_path: Path) -> None:
    s = store(tmp_path)
    put(s, "queued")
    put(s, "running")
    put(s, "running")  # unchanged: no new version
    claimed = s.claim_report("w", 60)
    assert claimed is not None and claimed.desired["body"] == "running" and claimed.version == 2
    assert s.claim_report("w2", 60) is None  # leased
    s.report_delivered(claimed.target, claimed.version, claimed.desired)
    assert s.claim_report("w", 60) is None and s.pending_reports() == 0
    put(s, "succeeded")
    again = s.claim_report("w", 60)
    assert again is not None and again.delivered == {"key": "run", "body": "running"}


def test_a_newer_state_during_delivery_is_not_lost(tmp_path: Path) -> None:
    s = store(tmp_path)
    put(s, "running")
    claimed = s.claim_report("w", 60)
    assert claimed is not None
    put(s, "succeeded")  # arrives while "running" is on its way
    s.report_delivered(claimed.target, claimed.version, claimed.desired)
    CLOCK[0] += 61
    nxt = s.claim_report("w", 60)
    assert nxt is not None and nxt.desired["body"] == "succeeded"


def test_failures_back_off_and_can_be_given_up(tmp_path: Path) -> None:
    s = store(tmp_path)
    put(s, "x")
    claimed = s.claim_report("w", 60)
    assert claimed is not None
    s.report_failed(claimed.target, "HTTP 503", 30)
    assert s.claim_report("w", 60) is None  # not due yet
    CLOCK[0] += 31
    retry = s.claim_report("w", 60)
    assert retry is not None and retry.attempts == 1 and retry.last_error == "HTTP 503"
    s.report_failed(retry.target, "HTTP 404", None)
    assert s.pending_reports() == 0
    record = s.get_report(retry.target)
    assert record is not None and record.last_error == "HTTP 404"


def test_a_dead_deliverers_lease_expires(tmp_path: Path) -> None:
    s = store(tmp_path)
    put(s, "x")
    assert s.claim_report("dead", 10) is not None
    CLOCK[0] += 11
    assert s.claim_report("alive", 10) is not None
