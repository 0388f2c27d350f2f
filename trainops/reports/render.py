"""Rendering the living comment from a Jinja2 template a team may override.

Sandboxed, ``StrictUndefined`` (a typo in a template is an error, not an
empty string), no autoescape (it is Markdown) but every user-supplied string
goes through a filter that keeps it inside its table cell or code block: a
stage's log cannot close our fence, add rows or mention people. The result
is capped to the forge's comment size, with the full detail linked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, FileSystemLoader, PackageLoader, StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from trainops.errors import TrainopsError

COMMENT_TEMPLATE = "comment.md.j2"
LIMITS = {"github": 65_536, "gitlab": 1_000_000, "git": 1_000_000}
"""The most characters a comment may have on each forge (GitHub: 65,536)."""


class ReportError(TrainopsError):
    """A report template is broken."""


def _cell(value: Any) -> str:
    text = " ".join(str(value).split())
    return text.replace("|", "\\|").replace("<", "&lt;").replace("@", "@\u200b")


def _code(value: Any) -> str:
    text = str(value).rstrip("\n")
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _num(value: Any) -> str:
    number = float(value)
    return f"{number:.4g}" if abs(number) < 1e5 else f"{number:,.0f}"


def _delta(value: Any) -> str:
    number = float(value)
    if abs(number) < 1e-12:
        return "±0"
    arrow = "▲" if number > 0 else "▼"
    return f"{number:+.4g} {arrow}"


class CommentRenderer:
    def __init__(self, templates_dir: Path | None = None) -> None:
        loaders: list[Any] = []
        if templates_dir is not None:
            loaders.append(FileSystemLoader(str(templates_dir)))
        loaders.append(PackageLoader("trainops.reports", "templates"))
        self.env = SandboxedEnvironment(
            loader=ChoiceLoader(loaders),
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            trim_blocks=False,
        )
        self.env.filters.update(cell=_cell, code=_code, num=_num, delta=_delta)

    def render(self, context: Mapping[str, Any], *, forge: str, full_url: str) -> str:
        try:
            body = self.env.get_template(COMMENT_TEMPLATE).render(**context)
        except TemplateError as exc:
            raise ReportError(f"rendering {COMMENT_TEMPLATE}: {exc}") from exc
        body = re.sub(r"\n{3,}", "\n\n", body).strip() + "\n"
        return cap(body, LIMITS.get(forge, 65_536), full_url)


def cap(body: str, limit: int, full_url: str) -> str:
    """``body`` cut to ``limit`` characters at a line, with a link to the rest."""
    if len(body) <= limit:
        return body
    note = f"\n\n… cut to fit the forge's limit; the full report: {full_url}\n"
    cut = body[: limit - len(note) - 200]
    cut = cut[: cut.rfind("\n")] if "\n" in cut else cut
    if cut.count("```") % 2:  # never leave a code block open
        cut += "\n```"
    return cut + note
