"""The reporter: turns a run's changes into outbox entries, and delivers them.

``run_changed(run_id)`` computes what the forge should show — the commit's
statuses, and the merge request's one living comment (built from the
*newest* run of that merge request, so a late update of a superseded run
never overwrites the current one) — and writes it to the store's outbox.
``deliver_once()`` sends the newest undelivered state of one target;
failures are retried with exponential backoff (transient ones for as long
as it takes, others a few times), and never touch the run.

In plain-git mode there are no merge requests: the report of each commit
goes into its git note.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from trainops.config import Settings
from trainops.errors import ForgeError, TrainopsError
from trainops.forges.registry import ForgeRegistry
from trainops.models import CommitState, CommitStatus
from trainops.reports.baseline import find_baseline
from trainops.reports.render import CommentRenderer
from trainops.reports.view import comment_context, run_url, statuses
from trainops.store import ReportRecord, RunRecord, Store

log = logging.getLogger(__name__)

COMMENT_KEY = "run"
MAX_PERMANENT_FAILURES = 3
BACKOFF_BASE_S = 2.0
BACKOFF_CAP_S = 600.0


class Reporter:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        registry: ForgeRegistry,
        *,
        renderer: CommentRenderer | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self.renderer = renderer or CommentRenderer(settings.reports.templates_dir)
        self._secrets = [s for s in settings.secrets() if len(s) >= 4]

    # -- what to show --------------------------------------------------------------

    def run_changed(self, run_id: str) -> None:
        """Queue the run's current state for its forge (no-op where reporting is off)."""
        run = self.store.get_run(run_id)
        if run is None or not self.settings.reports.enabled:
            return
        if not self.registry.configured(run.forge):
            return
        repo = run.clone_url if run.forge == "git" else run.repo
        service = self.settings.service_url()
        desired = {
            s.context: {"state": s.state.value, "description": s.description, "url": s.url}
            for s in statuses(run, service)
        }
        self.store.put_report(
            f"status:{run.forge}:{run.repo}@{run.commit}",
            kind="statuses",
            forge=run.forge,
            repo=repo,
            sha=run.commit,
            mr_number=run.mr_number,
            desired={"statuses": desired},
        )
        if run.mr_number is not None or run.forge == "git":
            self._comment(run, repo)

    def _comment(self, run: RunRecord, repo: str) -> None:
        newest, superseded = self._newest_in_group(run)
        baseline = find_baseline(self.store, newest)
        context = comment_context(
            newest,
            pipeline=_pipeline(newest),
            baseline=baseline,
            service_url=self.settings.service_url(),
            superseded=superseded,
        )
        url = run_url(self.settings.service_url(), newest.run_id)
        body = self._redact(self.renderer.render(context, forge=run.forge, full_url=url))
        where = f"!{run.mr_number}" if run.mr_number is not None else f"@{run.commit}"
        self.store.put_report(
            f"comment:{run.forge}:{run.repo}{where}",
            kind="comment",
            forge=run.forge,
            repo=repo,
            sha=run.commit,
            mr_number=run.mr_number,
            desired={"key": COMMENT_KEY, "body": body},
        )

    def _newest_in_group(self, run: RunRecord) -> tuple[RunRecord, list[RunRecord]]:
        if run.mr_number is None or run.group_key is None:
            return run, []
        group = [
            r for r in self.store.list_runs(200, repo=run.repo) if r.group_key == run.group_key
        ]
        group.sort(key=lambda r: r.queued_at)
        newest = group[-1] if group else run
        return newest, [r for r in group if r.status == "superseded" and r is not newest]

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "••••••")
        return text

    # -- delivering ------------------------------------------------------------------

    def deliver_once(self, owner: str) -> bool:
        """Deliver one pending report; False when there was none due."""
        record = self.store.claim_report(owner, lease_s=120.0)
        if record is None:
            return False
        try:
            delivered = self._deliver(record)
        except ForgeError as exc:
            self._failed(record, exc)
        except TrainopsError as exc:
            self.store.report_failed(record.target, str(exc), None)
            log.error("report %s cannot be delivered: %s", record.target, exc)
        else:
            self.store.report_delivered(record.target, record.version, delivered)
        return True

    def _deliver(self, record: ReportRecord) -> dict[str, Any]:
        forge = self.registry.get(record.forge)
        if record.kind == "statuses":
            previous = (record.delivered or {}).get("statuses", {})
            wanted: dict[str, dict[str, Any]] = record.desired["statuses"]
            assert record.sha is not None
            for context, status in wanted.items():
                if previous.get(context) != status:
                    forge.set_status(
                        record.repo,
                        record.sha,
                        CommitStatus(
                            context,
                            CommitState(status["state"]),
                            status["description"],
                            status["url"],
                        ),
                    )
            return {"statuses": wanted}
        number = record.mr_number if record.mr_number is not None else 0
        forge.upsert_comment(
            record.repo, number, record.desired["key"], record.desired["body"], sha=record.sha
        )
        return dict(record.desired)

    def _failed(self, record: ReportRecord, exc: ForgeError) -> None:
        attempts = record.attempts + 1
        if not exc.transient and attempts >= MAX_PERMANENT_FAILURES:
            log.error("giving up on report %s: %s", record.target, exc)
            self.store.report_failed(record.target, str(exc), None)
            return
        delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempts - 1))
        delay *= random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not security
        log.warning("report %s: %s; retrying in %.0fs", record.target, exc, delay)
        self.store.report_failed(record.target, str(exc), delay)


def _pipeline(run: RunRecord) -> str:
    for source in (run.result, run.progress):
        if source and source.get("pipeline"):
            return str(source["pipeline"])
    return run.repo.rsplit("/", 1)[-1]
