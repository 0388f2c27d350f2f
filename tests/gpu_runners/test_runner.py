"""The local runner on real git repos and processes, with a fake GPU list."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.conftest import MakeRepo, commit_files, dvc, write_files
from tests.fakes.nvml import FakeGpuProbe, fake_devices
from trainops.config import Settings
from trainops.gpu_runners.runner import LocalRunner
from trainops.models import RunResult, RunStatus, StageResult, StageStatus
from trainops.orchestrator import plan_target, resolve_target
from trainops.protocols import SilentObserver


class Recorder(SilentObserver):
    """Keeps what the runner told it, with timestamps."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, str, str]] = []
        self._lock = threading.Lock()

    def _add(self, kind: str, stage: str, text: str = "") -> None:
        with self._lock:
            self.events.append((time.monotonic(), kind, stage, text))

    def stage_waiting(self, stage: str, reason: str) -> None:
        self._add("waiting", stage, reason)

    def stage_started(self, stage: str, attempt: int, gpus: tuple[str, ...]) -> None:
        self._add("started", stage, ",".join(gpus))

    def stage_log(self, stage: str, line: str) -> None:
        self._add("log", stage, line)

    def stage_finished(self, result: StageResult) -> None:
        self._add("finished", stage=result.name, text=result.status.value)

    def times(self, kind: str) -> dict[str, float]:
        return {stage: t for t, k, stage, _ in self.events if k == kind}


def run(
    settings: Settings,
    repo: Path,
    *,
    probe: FakeGpuProbe | None = None,
    use_cache: bool = True,
    observer: Recorder | None = None,
    cancel: threading.Event | None = None,
) -> RunResult:
    _spec, plan = plan_target(resolve_target(repo, None))
    runner = LocalRunner(settings, probe=probe or FakeGpuProbe())
    return runner.execute(
        plan,
        run_id=f"run-{time.monotonic_ns()}",
        use_cache=use_cache,
        observer=observer or Recorder(),
        cancel=cancel or threading.Event(),
    )


def alive(pid: int) -> bool:
    """Running, not a zombie (a killed orphan may wait to be reaped by init)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def stage(result: RunResult, name: str) -> StageResult:
    return next(s for s in result.stages if s.name == name)


def pipeline(stages: str) -> dict[str, str]:
    return {"trainops.yaml": "version: 1\nname: t\nstages:\n" + stages, "seed.txt": "1\n"}


def test_independent_stages_run_in_parallel(settings: Settings, make_repo: MakeRepo) -> None:
    repo = make_repo(
        pipeline(
            "  a: {cmd: 'sleep 1 && echo a > a.txt', deps: [seed.txt], outs: [a.txt]}\n"
            "  b: {cmd: 'sleep 1 && echo b > b.txt', deps: [seed.txt], outs: [b.txt]}\n"
            "  c: {cmd: 'cat a.txt b.txt > c.txt', deps: [a.txt, b.txt], outs: [c.txt]}\n"
        )
    )
    settings.runner.cpu_slots = 2
    rec = Recorder()
    t0 = time.monotonic()
    result = run(settings, repo, observer=rec)
    elapsed = time.monotonic() - t0
    assert result.status is RunStatus.SUCCEEDED, result
    started, finished = rec.times("started"), rec.times("finished")
    assert abs(started["a"] - started["b"]) < 0.5
    assert started["c"] >= max(finished["a"], finished["b"])
    assert elapsed < 1.9


def test_cpu_slots_limit_parallelism(settings: Settings, make_repo: MakeRepo) -> None:
    repo = make_repo(
        pipeline(
            "  a: {cmd: 'sleep 0.5', deps: [seed.txt], resources: {cpu: 2}}\n"
            "  b: {cmd: 'sleep 0.5', deps: [seed.txt], resources: {cpu: 2}}\n"
        )
    )
    settings.runner.cpu_slots = 2
    rec = Recorder()
    assert run(settings, repo, observer=rec).status is RunStatus.SUCCEEDED
    started, finished = rec.times("started"), rec.times("finished")
    first, second = sorted(started, key=started.__getitem__)
    assert started[second] >= finished[first] - 0.05


def test_a_failing_stage_stops_its_dependants_only(settings: Settings, make_repo: MakeRepo) -> None:
    repo = make_repo(
        pipeline(
            "  bad: {cmd: 'echo preparing; echo boom >&2; exit 3', deps: [seed.txt], outs: [x]}\n"
            "  after: {cmd: 'cat x', deps: [x]}\n"
            "  other: {cmd: 'echo fine > o.txt', deps: [seed.txt], outs: [o.txt]}\n"
        )
    )
    result = run(settings, repo)
    assert result.status is RunStatus.FAILED
    bad = stage(result, "bad")
    assert (bad.status, bad.exit_code, bad.reason) == (StageStatus.FAILED, 3, "exit code 3")
    assert "boom" in bad.log_tail and "preparing" in bad.log_tail
    assert bad.log_path is not None and "boom" in Path(bad.log_path).read_text()
    assert result.failed_stage == bad
    after = stage(result, "after")
    assert (after.status, after.reason) == (StageStatus.SKIPPED, "upstream stage 'bad' failed")
    assert stage(result, "other").status is StageStatus.SUCCEEDED


def test_timeout_kills_the_whole_process_group(
    settings: Settings, make_repo: MakeRepo, tmp_path: Path
) -> None:
    pidfile = tmp_path / "grandchild.pid"
    repo = make_repo(
        pipeline(
            f"  slow:\n    cmd: 'sh -c \"sleep 30\" & echo $! > {pidfile}; wait'\n"
            "    deps: [seed.txt]\n    timeout: 1\n"
        )
    )
    t0 = time.monotonic()
    result = run(settings, repo)
    assert time.monotonic() - t0 < 4
    slow = stage(result, "slow")
    assert (slow.status, slow.reason) == (StageStatus.FAILED, "timed out after 1s")
    assert not alive(int(pidfile.read_text()))


def test_cancel_stops_running_and_pending_stages(settings: Settings, make_repo: MakeRepo) -> None:
    repo = make_repo(
        pipeline(
            "  long: {cmd: 'sleep 30', deps: [seed.txt], outs: [never]}\n"
            "  next: {cmd: 'true', deps: [never]}\n"
        )
    )
    cancel = threading.Event()
    rec = Recorder()

    def cancel_when_started() -> None:
        while "long" not in rec.times("started"):
            time.sleep(0.02)
        time.sleep(0.2)
        cancel.set()

    threading.Thread(target=cancel_when_started, daemon=True).start()
    t0 = time.monotonic()
    result = run(settings, repo, observer=rec, cancel=cancel)
    assert time.monotonic() - t0 < 5
    assert result.status is RunStatus.CANCELLED
    assert stage(result, "long").status is StageStatus.CANCELLED
    assert stage(result, "next").status is StageStatus.SKIPPED


def test_retries_rerun_a_failed_stage(
    settings: Settings, make_repo: MakeRepo, tmp_path: Path
) -> None:
    counter = tmp_path / "count"
    repo = make_repo(
        pipeline(
            f"  flaky:\n    cmd: 'echo x >> {counter}; test $(wc -l < {counter}) -ge 2'\n"
            "    deps: [seed.txt]\n    retries: 2\n"
        )
    )
    flaky = stage(run(settings, repo), "flaky")
    assert (flaky.status, flaky.attempts) == (StageStatus.SUCCEEDED, 2)


def test_missing_declared_output_fails_the_stage(settings: Settings, make_repo: MakeRepo) -> None:
    repo = make_repo(pipeline("  a: {cmd: 'true', deps: [seed.txt], outs: [model]}\n"))
    a = stage(run(settings, repo), "a")
    assert (a.status, a.reason) == (StageStatus.FAILED, "declared output 'model' was not produced")


def test_metrics_are_read_and_merged(settings: Settings, make_repo: MakeRepo) -> None:
    files = pipeline(
        "  ev: {cmd: 'cp m.src m.json', deps: [m.src], metrics: [m.json]}\n"
        "  ev2: {cmd: 'cp y.src m.yaml', deps: [y.src], metrics: [m.yaml]}\n"
    )
    files["m.src"] = '{"acc": 0.9, "nested": {"f1": 0.8}, "note": "x", "ok": true}'
    files["y.src"] = "loss: 0.25\n"
    result = run(settings, make_repo(files))
    assert dict(result.metrics) == {"acc": 0.9, "nested.f1": 0.8, "loss": 0.25}


def test_unreadable_metrics_fail_the_stage(settings: Settings, make_repo: MakeRepo) -> None:
    files = pipeline("  ev: {cmd: 'echo nope > m.json', deps: [seed.txt], metrics: [m.json]}\n")
    ev = stage(run(settings, make_repo(files)), "ev")
    assert ev.status is StageStatus.FAILED
    assert ev.reason is not None and "metrics file 'm.json' is not valid JSON" in ev.reason


def test_second_run_is_all_cache_hits_without_a_workspace(
    settings: Settings, make_repo: MakeRepo
) -> None:
    repo = make_repo(
        pipeline(
            "  a: {cmd: 'echo a > a.txt', deps: [seed.txt], outs: [a.txt]}\n"
            '  b: {cmd: \'cat a.txt > b.txt && echo "{\\"n\\": 1}" > m.json\', deps: [a.txt],'
            " outs: [b.txt], metrics: [m.json]}\n"
        )
    )
    first = run(settings, repo)
    assert [s.cached for s in first.stages] == [False, False]
    second = run(settings, repo)
    assert second.status is RunStatus.SUCCEEDED
    assert [s.cached for s in second.stages] == [True, True]
    assert second.executed == ()
    assert all(s.cached_from == first.run_id for s in second.stages)
    assert dict(second.metrics) == {"n": 1.0}
    third = run(settings, repo, use_cache=False)
    assert len(third.executed) == 2


def test_cached_upstream_outputs_are_restored_for_a_stage_that_runs(
    settings: Settings, make_repo: MakeRepo
) -> None:
    files = pipeline(
        "  a: {cmd: 'cat seed.txt > a.txt', deps: [seed.txt], outs: [a.txt]}\n"
        "  b: {cmd: 'cat a.txt check.txt > b.txt', deps: [a.txt, check.txt], outs: [b.txt]}\n"
    )
    repo = make_repo({**files, "check.txt": "v1\n"})
    run(settings, repo)
    commit_files(repo, {"check.txt": "v2\n"})
    result = run(settings, repo)
    assert [(s.name, s.cached) for s in result.stages] == [("a", True), ("b", False)]
    assert result.status is RunStatus.SUCCEEDED


def test_gpu_stages_get_exclusive_gpus(
    settings: Settings, make_repo: MakeRepo, tmp_path: Path
) -> None:
    seen = tmp_path / "seen"
    seen.mkdir()
    stages = "".join(
        f"  g{i}:\n    cmd: 'echo $CUDA_VISIBLE_DEVICES > {seen}/g{i}; sleep 0.6'\n"
        f"    deps: [seed.txt]\n    gpus: 1\n"
        for i in range(3)
    )
    stages += f"  cpu: {{cmd: 'echo \"[$CUDA_VISIBLE_DEVICES]\" > {seen}/cpu', deps: [seed.txt]}}\n"
    repo = make_repo(pipeline(stages))
    probe = FakeGpuProbe(fake_devices(2))
    settings.runner.cpu_slots = 8
    rec = Recorder()
    result = run(settings, repo, probe=probe, observer=rec)
    assert result.status is RunStatus.SUCCEEDED, result
    uuids = {d.uuid for d in probe.devices()}
    for i in range(3):
        assert (seen / f"g{i}").read_text().strip() in uuids
    assert (seen / "cpu").read_text().strip() == "[]"
    # never more than two GPU stages at once; the third one said it was waiting
    started, finished = rec.times("started"), rec.times("finished")
    order = sorted((f"g{i}" for i in range(3)), key=started.__getitem__)
    assert started[order[2]] >= min(finished[order[0]], finished[order[1]]) - 0.05
    waiting = [text for _, kind, _, text in rec.events if kind == "waiting"]
    assert waiting and "waiting for 1 GPU(s)" in waiting[0]
    for i in range(3):
        gpu = stage(result, f"g{i}").gpu
        assert gpu is not None and gpu.gpu_seconds >= 0.5
        assert gpu.energy_j is not None and gpu.energy_j > 0
        assert gpu.util_mean == 50.0


def test_two_runs_never_share_a_gpu(
    settings: Settings, make_repo: MakeRepo, tmp_path: Path
) -> None:
    log = tmp_path / "gpu.log"
    repo = make_repo(
        pipeline(
            f"  g:\n    cmd: 'echo start $(date +%s.%N) >> {log}; sleep 0.5; "
            f"echo end $(date +%s.%N) >> {log}'\n    deps: [seed.txt]\n    gpus: 1\n"
        )
    )
    probe = FakeGpuProbe(fake_devices(1))
    results: list[RunResult] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(run(settings, repo, probe=probe, use_cache=False))
        )
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert [r.status for r in results] == [RunStatus.SUCCEEDED] * 2
    marks = [line.split() for line in log.read_text().splitlines()]
    assert [m[0] for m in marks] == ["start", "end", "start", "end"]


def test_gpu_stage_without_gpus_fails_clearly(settings: Settings, make_repo: MakeRepo) -> None:
    repo = make_repo(
        pipeline(
            "  train: {cmd: 'true', deps: [seed.txt], gpus: 1}\n"
            "  cpu: {cmd: 'true', deps: [seed.txt]}\n"
        )
    )
    result = run(settings, repo, probe=FakeGpuProbe())
    train = stage(result, "train")
    assert train.status is StageStatus.FAILED and train.attempts == 0
    assert train.reason is not None and "no NVIDIA driver" in train.reason
    assert stage(result, "cpu").status is StageStatus.SUCCEEDED
    assert result.status is RunStatus.FAILED


def test_gpu_type_that_this_host_lacks_fails_clearly(
    settings: Settings, make_repo: MakeRepo
) -> None:
    repo = make_repo(
        pipeline("  t: {cmd: 'true', deps: [seed.txt], gpus: 1, gpu_type: NVIDIA-H100}\n")
    )
    t = stage(run(settings, repo, probe=FakeGpuProbe(fake_devices(2))), "t")
    assert t.status is StageStatus.FAILED
    assert t.reason is not None and "NVIDIA-H100" in t.reason


def test_stage_environment(
    settings: Settings, make_repo: MakeRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRAINOPS_SECRET_TOKEN", "hunter2")
    repo = make_repo(
        pipeline(
            "  e:\n    cmd: env > env.txt\n    deps: [seed.txt]\n    outs: [env.txt]\n"
            "    env: {LEARNING_RATE: 0.1}\n"
        )
    )
    result = run(settings, repo)
    assert result.status is RunStatus.SUCCEEDED
    from trainops.cache import StageCache

    _spec, plan = plan_target(resolve_target(repo, None))
    entry = StageCache(settings.cache_dir).lookup(plan.stage("e").cache_key)
    assert entry is not None
    out = settings.data_dir / "restored"
    StageCache(settings.cache_dir).restore(entry, out)
    env = dict(
        line.split("=", 1) for line in (out / "env.txt").read_text().splitlines() if "=" in line
    )
    assert env["LEARNING_RATE"] == "0.1"
    assert env["TRAINOPS_STAGE"] == "e" and env["TRAINOPS_COMMIT"] == plan.commit
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true" and env["DVC_NO_ANALYTICS"] == "1"
    assert "TRAINOPS_SECRET_TOKEN" not in env


def test_the_users_working_tree_is_untouched(settings: Settings, make_repo: MakeRepo) -> None:
    repo = make_repo(pipeline("  a: {cmd: 'echo out > a.txt', deps: [seed.txt], outs: [a.txt]}\n"))
    (repo / "seed.txt").write_text("uncommitted\n")
    assert run(settings, repo).status is RunStatus.SUCCEEDED
    assert not (repo / "a.txt").exists()
    assert (repo / "seed.txt").read_text() == "uncommitted\n"


def test_data_that_cannot_be_pulled_fails_the_run_clearly(
    settings: Settings, make_repo: MakeRepo
) -> None:
    repo = make_repo(
        pipeline(
            "  use: {cmd: 'ls data/raw > listing.txt', deps: [data/raw], outs: [listing.txt]}\n"
        )
    )
    dvc(repo, "init", "-q")
    write_files(repo, {"data/raw/a.csv": "x,y\n1,2\n"})
    dvc(repo, "add", "-q", "data/raw")
    commit_files(repo, {}, "track data without a remote")
    result = run(settings, repo)
    assert result.status is RunStatus.FAILED
    assert result.error is not None and "remote" in result.error
    assert stage(result, "use").status is StageStatus.SKIPPED
