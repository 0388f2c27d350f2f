"""The stage cache: complete entries only, outputs restored byte for byte."""

from __future__ import annotations

import os
from pathlib import Path

from trainops.cache import StageCache


def save(cache: StageCache, ws: Path, key: str = "k" * 64) -> None:
    cache.save(
        key,
        ws,
        ["model", "metrics.json"],
        stage="train",
        run_id="r1",
        commit="c" * 40,
        created_at=1.0,
        duration_s=2.5,
        metrics={"accuracy": 0.9},
        gpu_seconds=5.0,
    )


def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "model" / "sub").mkdir(parents=True)
    (ws / "model" / "weights.bin").write_bytes(os.urandom(4096))
    (ws / "model" / "sub" / "config.json").write_text('{"a": 1}')
    (ws / "model" / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(ws / "model" / "run.sh", 0o755)
    (ws / "metrics.json").write_text('{"accuracy": 0.9}')
    return ws


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_round_trip(tmp_path: Path) -> None:
    cache = StageCache(tmp_path / "cache")
    ws = workspace(tmp_path)
    assert cache.lookup("k" * 64) is None
    save(cache, ws)
    entry = cache.lookup("k" * 64)
    assert entry is not None
    assert (entry.stage, entry.run_id, dict(entry.metrics)) == ("train", "r1", {"accuracy": 0.9})
    dest = tmp_path / "dest"
    cache.restore(entry, dest)
    assert tree(dest) == tree(ws)
    assert os.stat(dest / "model" / "run.sh").st_mode & 0o777 == 0o755


def test_restore_replaces_stale_outputs_and_can_select(tmp_path: Path) -> None:
    cache = StageCache(tmp_path / "cache")
    ws = workspace(tmp_path)
    save(cache, ws)
    entry = cache.lookup("k" * 64)
    assert entry is not None
    dest = tmp_path / "dest"
    (dest / "model").mkdir(parents=True)
    (dest / "model" / "stale.txt").write_text("old")
    cache.restore(entry, dest, ["model"])
    assert not (dest / "model" / "stale.txt").exists()
    assert not (dest / "metrics.json").exists()
    assert (dest / "model" / "weights.bin").read_bytes() == (
        ws / "model" / "weights.bin"
    ).read_bytes()


def test_writing_a_restored_file_does_not_corrupt_the_cache(tmp_path: Path) -> None:
    cache = StageCache(tmp_path / "cache")
    ws = workspace(tmp_path)
    save(cache, ws)
    entry = cache.lookup("k" * 64)
    assert entry is not None
    dest = tmp_path / "dest"
    cache.restore(entry, dest)
    (dest / "metrics.json").write_text("overwritten")
    again = tmp_path / "again"
    cache.restore(entry, again)
    assert (again / "metrics.json").read_text() == '{"accuracy": 0.9}'


def test_an_entry_missing_objects_is_a_miss(tmp_path: Path) -> None:
    cache = StageCache(tmp_path / "cache")
    save(cache, workspace(tmp_path))
    victim = next((tmp_path / "cache" / "objects").rglob("*"))
    while victim.is_dir():
        victim = next(victim.iterdir())
    victim.unlink()
    assert cache.lookup("k" * 64) is None


def test_identical_content_is_stored_once(tmp_path: Path) -> None:
    cache = StageCache(tmp_path / "cache")
    ws = workspace(tmp_path)
    save(cache, ws, "a" * 64)
    save(cache, ws, "b" * 64)
    objects = [p for p in (tmp_path / "cache" / "objects").rglob("*") if p.is_file()]
    assert len(objects) == 4


def test_annotate_records_the_mlflow_run(tmp_path: Path) -> None:
    cache = StageCache(tmp_path / "cache")
    save(cache, workspace(tmp_path))
    cache.annotate("k" * 64, mlflow_run_id="abc")
    entry = cache.lookup("k" * 64)
    assert entry is not None and entry.mlflow_run_id == "abc"


def test_a_corrupt_entry_is_a_miss(tmp_path: Path) -> None:
    cache = StageCache(tmp_path / "cache")
    save(cache, workspace(tmp_path))
    entry_file = next((tmp_path / "cache" / "entries").rglob("*.json"))
    entry_file.write_text("{not json")
    assert cache.lookup("k" * 64) is None
