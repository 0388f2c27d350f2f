"""Reading the pipeline files, at a commit or from a directory on disk.

At a commit everything comes out of git's object database (``git cat-file``),
so nobody's working tree is read or touched and the spec is exactly the
committed one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from trainops.errors import Problem, SpecError
from trainops.git import GitRepo
from trainops.pipelines.spec import DVC_FILE, TRAINOPS_FILE, Spec
from trainops.pipelines.validate import build_spec
from trainops.pipelines.yamlsource import YamlDocument, parse_yaml

Reader = Callable[[Iterable[str]], dict[str, bytes | None]]


def load_spec(read: Reader, *, default_name: str) -> Spec:
    """The Spec from whatever ``read`` returns for the pipeline files."""
    files = read([TRAINOPS_FILE, DVC_FILE])
    trainops = _doc(files[TRAINOPS_FILE], TRAINOPS_FILE)
    dvc_path: str | None = DVC_FILE
    if trainops is not None and isinstance(trainops.data, dict):
        choice = trainops.data.get("dvc_yaml", True)
        if choice is False:
            dvc_path = None
        elif isinstance(choice, str):
            dvc_path = choice.strip().lstrip("./") or DVC_FILE
    dvc = None
    if dvc_path is not None:
        content = files[dvc_path] if dvc_path in files else read([dvc_path])[dvc_path]
        dvc = _doc(content, dvc_path)
        if dvc is None and dvc_path != DVC_FILE and trainops is not None:
            line = trainops.line_of(("dvc_yaml",))
            raise SpecError(
                [Problem(TRAINOPS_FILE, line, f"dvc_yaml: {dvc_path!r} does not exist")]
            )
    if trainops is None and dvc is None:
        raise SpecError(
            [
                Problem(
                    TRAINOPS_FILE,
                    None,
                    "no trainops.yaml or dvc.yaml found; write one "
                    "(`trainops schema` prints the format)",
                )
            ]
        )
    return build_spec(trainops, dvc, default_name=default_name)


def _doc(content: bytes | None, file: str) -> YamlDocument | None:
    if content is None:
        return None
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError([Problem(file, None, "the file is not UTF-8 text")]) from exc
    return parse_yaml(text, file)


def load_spec_at(repo: GitRepo, commit: str, *, name: str | None = None) -> Spec:
    """The Spec committed at ``commit`` (a full sha)."""
    return load_spec(
        lambda paths: repo.read_files(commit, paths), default_name=name or repo.path.name
    )


def load_spec_dir(root: Path) -> Spec:
    """The Spec from the files on disk under ``root`` (for `trainops validate`)."""

    def read(paths: Iterable[str]) -> dict[str, bytes | None]:
        out: dict[str, bytes | None] = {}
        for p in paths:
            f = root / p
            out[p] = f.read_bytes() if f.is_file() else None
        return out

    return load_spec(read, default_name=root.resolve().name)
