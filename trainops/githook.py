"""The post-receive hook that makes a plain git server (or a bare repo on disk) a trigger.

``install(bare_repo, url, token)`` writes ``hooks/post-receive``: a small
standard-library Python script that posts the pushed refs to
``/webhooks/git`` with a bearer token read from ``hooks/trainops.token``
(mode 0600, so the token is not in the script, nor in any process list).
Everything it embeds goes in as a JSON literal, never pasted as code.
A push never fails because trainops is down: the hook says so and exits 0
(a post-receive hook cannot refuse a push anyway).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from trainops.errors import ConfigError

MARKER = "# trainops post-receive hook"

_SCRIPT = """#!/usr/bin/env python3
{marker} (installed by `trainops hook install`; reinstall to change it)
import json, os, subprocess, sys, urllib.request, uuid

URL = {url}
CLONE_URL = {clone_url}  # how the service fetches this repository; None: its path here
TIMEOUT_S = 5


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "trainops.token")) as f:
        token = f.read().strip()
    repo_dir = os.path.abspath(os.environ.get("GIT_DIR", "."))
    head = subprocess.run(["git", "symbolic-ref", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip() or None
    refs = []
    for line in sys.stdin:
        parts = line.split()
        # Only branches and tags can start runs (trainops' own notes pushes land here too).
        if len(parts) == 3 and parts[2].startswith(("refs/heads/", "refs/tags/")):
            refs.append({{"before": parts[0], "after": parts[1], "ref": parts[2]}})
    if not refs:
        return
    name = os.path.basename(repo_dir)
    body = {{
        "delivery_id": str(uuid.uuid4()),
        "repo": {{"name": name[:-4] if name.endswith(".git") else name, "path": repo_dir,
                 "url": CLONE_URL or repo_dir, "default_branch": head}},
        "pusher": os.environ.get("GL_USERNAME") or os.environ.get("USER") or "unknown",
        "refs": refs,
    }}
    request = urllib.request.Request(
        URL, data=json.dumps(body).encode(), method="POST",
        headers={{"Content-Type": "application/json", "Authorization": "Bearer " + token}})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            answer = json.loads(response.read() or b"{{}}")
        print("trainops: " + answer.get("status", "sent") + " (" + URL + ")", file=sys.stderr)
    except Exception as exc:  # the push succeeded; only the notification did not
        print("trainops: could not notify " + URL + ": " + str(exc), file=sys.stderr)


main()
"""


def install(
    bare_repo: Path, url: str, token: str, *, clone_url: str | None = None, force: bool = False
) -> Path:
    """Write the hook and its token file into ``bare_repo``; returns the hook's path.

    ``clone_url`` is how the service fetches the repository (ssh or https on a
    real server); by default the repository's own path, for a service on the
    same machine.
    """
    git_dir = bare_repo / ".git" if (bare_repo / ".git").is_dir() else bare_repo
    if not (git_dir / "HEAD").is_file():
        raise ConfigError(f"installing the hook: {str(bare_repo)!r} is not a git repository")
    if not token:
        raise ConfigError(
            "installing the hook: no token; set TRAINOPS_GITHOOK__WEBHOOK_SECRET (the service "
            "verifies every delivery with it)"
        )
    hooks = git_dir / "hooks"
    hooks.mkdir(exist_ok=True)
    hook = hooks / "post-receive"
    if hook.exists() and MARKER not in hook.read_text(errors="replace") and not force:
        raise ConfigError(
            f"installing the hook: {hook} exists and is not trainops'; move it aside or use --force"
        )
    token_file = hooks / "trainops.token"
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(token_file, 0o600)
    hook.write_text(_SCRIPT.format(marker=MARKER, url=_literal(url), clone_url=_literal(clone_url)))
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return hook


def _literal(value: str | None) -> str:
    """A Python literal for ``value``: JSON's string syntax is Python's, escapes included."""
    return "None" if value is None else json.dumps(value)
