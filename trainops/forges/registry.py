"""Which Forge serves an event's forge: built from settings on first use, then kept.

``get`` raises ForgeNotConfigured for a forge without credentials (Atlantis'
null client, minus the stubs); ``configured`` lets callers skip reporting
there instead of queueing reports nobody can deliver.
"""

from __future__ import annotations

import threading

from trainops.config import Settings
from trainops.errors import ForgeNotConfigured
from trainops.protocols import Forge


class ForgeRegistry:
    def __init__(self, settings: Settings, *, forges: dict[str, Forge] | None = None) -> None:
        self.settings = settings
        self._forges: dict[str, Forge] = dict(forges or {})
        self._lock = threading.Lock()

    def configured(self, name: str) -> bool:
        if name in self._forges or name == "git":
            return True
        forge = {"github": self.settings.github, "gitlab": self.settings.gitlab}.get(name)
        return forge is not None and bool(forge.token or (forge.app_id and forge.private_key))

    def get(self, name: str) -> Forge:
        with self._lock:
            if name not in self._forges:
                self._forges[name] = self._build(name)
            return self._forges[name]

    def _build(self, name: str) -> Forge:
        if not self.configured(name):
            raise ForgeNotConfigured(
                f"reporting to {name}: no credentials; set TRAINOPS_{name.upper()}__TOKEN"
            )
        if name == "github":
            from trainops.forges.github import GitHubForge

            return GitHubForge.from_settings(self.settings.github)
        if name == "gitlab":
            from trainops.forges.gitlab import GitLabForge

            return GitLabForge.from_settings(self.settings.gitlab)
        if name == "git":
            from trainops.forges.local import LocalForge

            return LocalForge(self.settings.data_dir / "notes")
        raise ForgeNotConfigured(f"reporting to {name}: trainops knows no such forge")
