"""The stage cache: outputs and metrics of earlier executions, keyed by cache key.

Shared by every run on this host (and, later, by cluster runs through a
remote object store): a hit skips the stage and costs no GPU second.
"""

from trainops.cache.store import CacheEntry, StageCache

__all__ = ["CacheEntry", "StageCache"]
