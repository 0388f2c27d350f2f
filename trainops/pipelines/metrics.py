"""Metrics files as DVC writes them (JSON or YAML, nested) → flat numeric metrics."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def parse_metrics(text: str, file: str) -> dict[str, float]:
    """Flatten ``{"eval": {"acc": 0.9}}`` to ``{"eval.acc": 0.9}``; numbers only.

    Raises ValueError naming the file when it is neither JSON nor YAML.
    """
    import yaml  # here, not at the top: a cached run never parses metrics

    try:
        data: Any = json.loads(text) if file.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if file.endswith(".json") else "YAML"
        raise ValueError(f"metrics file {file!r} is not valid {kind}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ValueError(f"metrics file {file!r} must hold a mapping of names to numbers")
    return _flatten(data, "")


def _flatten(node: Mapping[str, Any], prefix: str) -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat
