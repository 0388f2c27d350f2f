"""YAML that remembers where every key came from, so errors can name the line.

PyYAML's composer keeps a mark on each node; we build plain Python values
from the node tree ourselves and record ``path → line`` on the way. Duplicate
keys, which PyYAML would silently overwrite, are reported instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from trainops.errors import Problem, SpecError

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class YamlDocument:
    """A parsed YAML file: its value and the line (1-based) of every path in it."""

    file: str
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)

    def line_of(self, path: Path_) -> int | None:
        """The line of ``path``, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None

    def problem(self, path: Path_, reason: str) -> Problem:
        return Problem(self.file, self.line_of(path), reason)


def parse_yaml(text: str | bytes, file: str) -> YamlDocument:
    """Parse one YAML document; SpecError with the line on any syntax problem."""
    # libyaml's parser where available: the same node tree and marks, ~10x faster.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        node = loader.get_single_node()
        lines: dict[Path_, int] = {}
        problems: list[Problem] = []
        data = _build(loader, node, (), lines, problems, file) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        reason = f"invalid YAML: {exc.problem or exc.context}"
        raise SpecError([Problem(file, line, reason)]) from exc
    except yaml.YAMLError as exc:
        raise SpecError([Problem(file, None, f"invalid YAML: {exc}")]) from exc
    finally:
        loader.dispose()
    if problems:
        raise SpecError(problems)
    return YamlDocument(file, data, lines)


def _build(
    loader: Any,
    node: yaml.Node,
    path: Path_,
    lines: dict[Path_, int],
    problems: list[Problem],
    file: str,
) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves `<<: *anchor` merges
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) or key is None:
                problems.append(Problem(file, key_node.start_mark.line + 1, "keys must be scalars"))
                continue
            if key in out:
                problems.append(
                    Problem(file, key_node.start_mark.line + 1, f"duplicate key {key!r}")
                )
                continue
            child = (*path, str(key) if not isinstance(key, str) else key)
            lines[child] = key_node.start_mark.line + 1
            out[key] = _build(loader, value_node, child, lines, problems, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(loader, item, (*path, i), lines, problems, file)
            for i, item in enumerate(node.value)
        ]
    return loader.construct_object(node, deep=True)
