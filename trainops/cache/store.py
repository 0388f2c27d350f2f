"""A content-addressed store of stage outputs with one JSON entry per cache key.

Layout under the cache dir::

    entries/<k[:2]>/<key>.json     what a successful execution produced
    objects/<h[:2]>/<sha256>       file contents, deduplicated across stages and runs

Entries and objects are written to a temporary name and renamed into place,
so a crash never leaves a half-written entry that a later run would trust.
An entry counts only while every object it names is present.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trainops.errors import CacheError

_CHUNK = 1 << 20


@dataclass(frozen=True)
class OutputFile:
    path: str
    """Relative to the output's root (``""`` when the output is itself a file)."""
    sha256: str
    mode: int


@dataclass(frozen=True)
class CacheEntry:
    key: str
    stage: str
    run_id: str
    commit: str
    created_at: float
    duration_s: float
    outputs: Mapping[str, tuple[OutputFile, ...]]
    """Repo-relative output path → its files (a file output has one, with path "")."""
    metrics: Mapping[str, float] = field(default_factory=dict)
    gpu_seconds: float = 0.0
    mlflow_run_id: str | None = None


class StageCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _entry_path(self, key: str) -> Path:
        return self.root / "entries" / key[:2] / f"{key}.json"

    def _object_path(self, digest: str) -> Path:
        return self.root / "objects" / digest[:2] / digest

    def lookup(self, key: str) -> CacheEntry | None:
        """The entry for ``key`` if it and all its objects are present."""
        path = self._entry_path(key)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # unreadable entry: treat as a miss; it is rewritten on success
        entry = _entry_from_json(data)
        for files in entry.outputs.values():
            if not all(self._object_path(f.sha256).is_file() for f in files):
                return None
        return entry

    def save(
        self,
        key: str,
        workspace: Path,
        paths: Iterable[str],
        *,
        stage: str,
        run_id: str,
        commit: str,
        created_at: float,
        duration_s: float,
        metrics: Mapping[str, float],
        gpu_seconds: float,
    ) -> CacheEntry:
        """Store the stage's outputs from ``workspace`` and record the entry."""
        outputs: dict[str, tuple[OutputFile, ...]] = {}
        try:
            for rel in paths:
                outputs[rel] = tuple(self._store_output(workspace / rel))
            entry = CacheEntry(
                key=key,
                stage=stage,
                run_id=run_id,
                commit=commit,
                created_at=created_at,
                duration_s=duration_s,
                outputs=outputs,
                metrics=dict(metrics),
                gpu_seconds=gpu_seconds,
            )
            self._write_entry(entry)
        except OSError as exc:
            raise CacheError(f"caching outputs of stage {stage!r}: {exc}") from exc
        return entry

    def annotate(self, key: str, *, mlflow_run_id: str) -> None:
        """Remember which MLflow run recorded the execution behind ``key``."""
        entry = self.lookup(key)
        if entry is not None and entry.mlflow_run_id is None:
            data = asdict(entry)
            data["mlflow_run_id"] = mlflow_run_id
            with contextlib.suppress(OSError):
                self._write_entry(_entry_from_json(data))

    def restore(self, entry: CacheEntry, dest: Path, paths: Iterable[str] | None = None) -> None:
        """Write ``entry``'s outputs (all, or those in ``paths``) under ``dest``."""
        wanted = set(entry.outputs) if paths is None else set(paths) & set(entry.outputs)
        try:
            for rel in sorted(wanted):
                target = dest / rel
                _remove(target)
                for f in entry.outputs[rel]:
                    out = target / f.path if f.path else target
                    out.parent.mkdir(parents=True, exist_ok=True)
                    _clone(self._object_path(f.sha256), out)
                    os.chmod(out, f.mode)
        except OSError as exc:
            raise CacheError(f"restoring outputs of stage {entry.stage!r}: {exc}") from exc

    def _store_output(self, path: Path) -> list[OutputFile]:
        if path.is_file():
            return [OutputFile("", self._store_file(path), _mode(path))]
        if path.is_dir():
            files = []
            for root, dirs, names in os.walk(path):
                dirs.sort()
                for name in sorted(names):
                    f = Path(root) / name
                    rel = f.relative_to(path).as_posix()
                    files.append(OutputFile(rel, self._store_file(f), _mode(f)))
            return files
        raise FileNotFoundError(f"output {str(path)!r} does not exist")

    def _store_file(self, path: Path) -> str:
        objects = self.root / "objects"
        objects.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=objects, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out, path.open("rb") as src:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            final = self._object_path(digest.hexdigest())
            if final.exists():
                os.unlink(tmp)
            else:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return digest.hexdigest()

    def _write_entry(self, entry: CacheEntry) -> None:
        path = self._entry_path(entry.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(entry), out, sort_keys=True)
        os.replace(tmp, path)


def _entry_from_json(data: Mapping[str, Any]) -> CacheEntry:
    outputs = {
        path: tuple(OutputFile(**f) for f in files) for path, files in data["outputs"].items()
    }
    return CacheEntry(**{**data, "outputs": outputs})


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _clone(src: Path, dst: Path) -> None:
    """Copy, sharing blocks where the filesystem can (reflink) — never a hard link,
    since a stage writing into a restored file would corrupt the cache."""
    try:
        import fcntl

        with src.open("rb") as s, dst.open("wb") as d:
            fcntl.ioctl(d.fileno(), 0x40049409, s.fileno())  # FICLONE
        return
    except OSError:
        pass
    shutil.copyfile(src, dst)
