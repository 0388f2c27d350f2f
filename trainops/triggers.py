"""Which events become runs: the trigger policy, as pure functions of values.

Two steps, because the second needs the pipeline file at the event's commit:

1. ``screen(event)`` — what can be decided from the event alone: pings,
   deleted branches, closed merge requests, ``[skip ci]``, and forks (whose
   code never runs without a maintainer's approval: secure by default);
2. ``decide(event, triggers)`` — the repository's ``triggers`` section:
   branch patterns, merge requests, tags, changed paths.

A run is then keyed by (repository, commit, pipeline, trigger), so the same
event delivered twice, or two events for the same commit and trigger, make
one run; ``group_key`` names the line of work a newer run supersedes (a
branch, a merge request).
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from dataclasses import dataclass

from trainops.models import Event, EventKind
from trainops.pipelines.spec import TriggerSpec

SKIP_MARKERS = re.compile(r"\[(skip ci|ci skip|skip trainops|trainops skip)\]", re.IGNORECASE)

# Lower runs first: what lands on the default branch is what gets promoted.
PRIORITY_DEFAULT_BRANCH, PRIORITY_TAG, PRIORITY_BRANCH, PRIORITY_MERGE_REQUEST = 0, 1, 2, 3


@dataclass(frozen=True)
class Ignore:
    reason: str


@dataclass(frozen=True)
class RunRequest:
    """An event the policy accepted, with where it runs in the queue."""

    trigger: str  # push | tag | merge_request
    commit: str
    ref: str
    branch: str | None
    mr_number: int | None
    group_key: str
    priority: int


@dataclass(frozen=True)
class CloseGroup:
    """A merge request was closed or merged: its queued and running work can stop."""

    group_key: str
    reason: str


Screened = Ignore | CloseGroup | None


def group_key(event: Event) -> str:
    repo = event.repo.full_name if event.repo else "?"
    if event.merge_request is not None:
        return f"{event.forge}:{repo}!{event.merge_request.number}"
    return f"{event.forge}:{repo}@{event.ref}"


def screen(event: Event) -> Screened:
    """Decide what the event alone can decide; None: read the pipeline and ``decide``."""
    if event.kind == EventKind.PING:
        return Ignore("ping")
    if event.kind == EventKind.COMMENT:
        return Ignore("comment commands are not acted on yet")
    if event.repo is None:
        return Ignore("no repository in the event")
    mr = event.merge_request
    if event.kind == EventKind.MERGE_REQUEST and mr is not None:
        if mr.action in ("closed", "merged"):
            return CloseGroup(group_key(event), f"merge request !{mr.number} {mr.action}")
        if mr.action not in ("opened", "reopened", "synchronize"):
            return Ignore(f"merge request action {mr.action!r} brings no new code")
        if mr.is_fork:
            return Ignore(
                f"merge request !{mr.number} comes from a fork: its code runs only after a "
                "maintainer approves it"
            )
        if mr.draft:
            return Ignore(f"merge request !{mr.number} is a draft")
    elif event.kind not in (EventKind.PUSH, EventKind.TAG):
        return Ignore(f"{event.kind} events do not start runs")
    if event.deleted or not event.after or set(event.after) == {"0"}:
        return Ignore(f"{event.ref} was deleted")
    if event.head_message and SKIP_MARKERS.search(event.head_message):
        return Ignore("the commit message asks to skip CI")
    return None


def decide(event: Event, triggers: TriggerSpec) -> RunRequest | Ignore:
    """Apply the repository's ``triggers`` to an event that passed ``screen``."""
    assert event.repo is not None and event.after
    key = group_key(event)
    mr = event.merge_request
    if event.kind == EventKind.MERGE_REQUEST and mr is not None:
        if not triggers.merge_requests:
            return Ignore("triggers.merge_requests is false")
        return RunRequest(
            "merge_request",
            mr.head_sha or event.after,
            f"refs/merge/{mr.number}",
            mr.source_branch,
            mr.number,
            key,
            PRIORITY_MERGE_REQUEST,
        )
    ref = event.ref or ""
    if event.kind == EventKind.TAG:
        if not triggers.tags:
            return Ignore(f"tag {event.tag} (triggers.tags is false)")
        return RunRequest("tag", event.after, ref, None, None, key, PRIORITY_TAG)
    branch = event.branch
    if branch is None:
        return Ignore(f"{ref} is not a branch")
    default = event.repo.default_branch
    patterns = triggers.branches if triggers.branches is not None else (default or "main",)
    if not any(fnmatch.fnmatchcase(branch, p) for p in patterns):
        return Ignore(f"branch {branch!r} matches no triggers.branches ({', '.join(patterns)})")
    paths, changed = triggers.paths, event.changed_paths
    if (
        paths is not None
        and changed is not None
        and not any(_path_matches(p, paths) for p in changed)
    ):
        return Ignore("no changed path matches triggers.paths")
    priority = PRIORITY_DEFAULT_BRANCH if branch == default else PRIORITY_BRANCH
    return RunRequest("push", event.after, ref, branch, None, key, priority)


def _path_matches(path: str, patterns: tuple[str, ...]) -> bool:
    for pattern in patterns:
        if fnmatch.fnmatchcase(path, pattern):
            return True
        if not any(c in pattern for c in "*?[") and (
            path == pattern.rstrip("/") or path.startswith(pattern.rstrip("/") + "/")
        ):
            return True
    return False


def run_key(event: Event, request: RunRequest, spec_digest: str) -> str:
    """One run per (repository, commit, pipeline, trigger)."""
    repo = event.repo.full_name if event.repo else "?"
    text = "\n".join([event.forge, repo, request.commit, spec_digest, request.group_key])
    return hashlib.sha256(text.encode()).hexdigest()
