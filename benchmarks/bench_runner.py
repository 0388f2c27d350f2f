"""Runner overhead of ``trainops run`` against a bare subprocess chain and ``dvc repro``.

Builds, in a temporary directory, a git repository with DVC initialised and a
``dvc.yaml`` of 10 chained stages (stage i runs ``cat out(i-1).txt step.txt >
out(i).txt``), commits it, and measures with several repetitions each:

- bare: the 10 commands one after another with ``subprocess.run(cmd, shell=True)``;
- trainops cold: ``trainops run --no-cache`` (the CLI as a subprocess) and the
  same in-process (``plan_target`` + ``run_plan`` with a ``LocalRunner``);
- dvc repro cold: ``dvc repro --force``;
- trainops fully cached: ``trainops run`` with nothing changed (and, as after a
  push that touched nothing the stages read, at a new commit with the same tree);
- dvc repro no-op: ``dvc repro`` with everything up to date.

The cases run interleaved, one of each per round, so that a busy moment on
the machine hits all of them alike; medians and minima are reported. The
in-process run is taken apart (plan, workspace checkout, the commands,
scheduling and caching) from within the same run.

Then prints a table and the ratios against the goals of the issue:
≤ 50 ms per stage over the bare chain, and a fully cached re-run at least 3x
faster than a no-op ``dvc repro``. It is a measurement, not a test: a missed
goal is reported as MISS and the exit status is still 0 (only a benchmark
that cannot run, e.g. a failing command, exits non-zero).

Everything runs with ``DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true`` and
``SHELL=/bin/sh`` (DVC runs stage commands with ``$SHELL``; trainops and the
bare chain with ``/bin/sh``: so all three run the very same command line).
MLflow tracking is off (``TRAINOPS_TRACKING__ENABLED=false``) for the cold
runs: its cost is tracking, not runner overhead. A fully cached run skips
MLflow anyway; it is measured with tracking on as well, to show that.

Where ``PYTHONDONTWRITEBYTECODE`` is set, the processes measured get
``PYTHONPYCACHEPREFIX`` (in the temporary directory) instead: an editable
install would otherwise compile trainops' sources on every start, which an
installed wheel never does (``--no-bytecode-cache`` measures it as it is).

    .venv/bin/python benchmarks/bench_runner.py [--repeat N] [--keep] [--no-bytecode-cache]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trainops

if TYPE_CHECKING:
    from trainops.models import Plan
    from trainops.pipelines.spec import Spec

STAGES = 10
GOAL_OVERHEAD_MS = 50.0
GOAL_CACHED_SPEEDUP = 3.0
CHEAP_SAMPLES = 3
"""Samples per round of the cases that take a few milliseconds (bare chain, python start)."""

PY = sys.executable
_SCRIPT = Path(PY).parent / "trainops"
TRAINOPS = (
    [str(_SCRIPT)] if _SCRIPT.is_file() else [PY, "-c", "from trainops.cli import main; main()"]
)
DVC = [PY, "-m", "dvc"]


# -- the pipeline repository ----------------------------------------------------


def stage_cmds() -> list[str]:
    """The 10 commands, in order; stage 1 reads the committed input.txt."""
    cmds = []
    for i in range(1, STAGES + 1):
        src = "input.txt" if i == 1 else f"out{i - 1:02d}.txt"
        cmds.append(f"cat {src} step.txt > out{i:02d}.txt")
    return cmds


def dvc_yaml() -> str:
    lines = ["stages:"]
    for i, cmd in enumerate(stage_cmds(), start=1):
        src = "input.txt" if i == 1 else f"out{i - 1:02d}.txt"
        lines += [
            f"  s{i:02d}:",
            f"    cmd: {cmd}",
            f"    deps: [{src}, step.txt]",
            f"    outs: [out{i:02d}.txt]",
        ]
    return "\n".join(lines) + "\n"


def make_env(base: Path, *, bytecode_cache: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINOPS_", "MLFLOW_"))}
    if bytecode_cache and env.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
        # Without .pyc files an editable install recompiles its sources on every
        # start (~30 ms for trainops); an installed wheel never does. Keep them in
        # the temporary directory rather than next to the sources.
        env["PYTHONPYCACHEPREFIX"] = str(base / "pycache")
    env.update(
        DVC_NO_ANALYTICS="1",
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="1",
        SHELL="/bin/sh",
        DVC_SITE_CACHE_DIR=str(base / "dvc-site-cache"),
        GIT_AUTHOR_NAME="bench",
        GIT_AUTHOR_EMAIL="bench@example.invalid",
        GIT_COMMITTER_NAME="bench",
        GIT_COMMITTER_EMAIL="bench@example.invalid",
        GIT_CONFIG_NOSYSTEM="1",
        TRAINOPS_HOME=str(base / "trainops-home"),
        TRAINOPS_TRACKING__ENABLED="false",
    )
    return env


def sh(args: Sequence[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(
            f"benchmark broken: {' '.join(args)} (in {cwd}) exited {proc.returncode}\n"
            f"{proc.stdout}{proc.stderr}"
        )
    return proc


def make_repo(path: Path, env: dict[str, str]) -> None:
    path.mkdir(parents=True)
    sh(["git", "init", "-q", "-b", "main"], path, env)
    (path / "input.txt").write_text("seed\n")
    (path / "step.txt").write_text("step\n")
    (path / "dvc.yaml").write_text(dvc_yaml())
    sh([*DVC, "init", "-q"], path, env)
    sh(["git", "add", "-A"], path, env)
    sh(["git", "commit", "-q", "-m", "10-stage pipeline"], path, env)


# -- timing ---------------------------------------------------------------------


@dataclass
class Series:
    label: str
    samples: list[float] = field(default_factory=list)

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_bare(ws: Path, env: dict[str, str]) -> None:
    for cmd in stage_cmds():
        subprocess.run(cmd, shell=True, cwd=ws, env=env, check=True)


def trainops_cli(repo: Path, env: dict[str, str], *, no_cache: bool, expect_cached: int) -> None:
    args = [*TRAINOPS, "run", str(repo), "--json", *(["--no-cache"] if no_cache else [])]
    proc = sh(args, repo.parent, env)
    check_result(json.loads(proc.stdout), expect_cached)


def check_result(result: dict[str, object], expect_cached: int) -> None:
    stages = result["stages"]
    assert isinstance(stages, list)
    cached = sum(1 for s in stages if s["cached"])
    if result["status"] != "succeeded" or len(stages) != STAGES or cached != expect_cached:
        sys.exit(f"benchmark broken: unexpected trainops result {json.dumps(result, indent=2)}")


def dvc_repro(ws: Path, env: dict[str, str], *, force: bool) -> None:
    proc = sh([*DVC, "repro", *(["--force"] if force else [])], ws, env)
    ran = proc.stdout.count("Running stage")
    if ran != (STAGES if force else 0):
        sys.exit(f"benchmark broken: dvc repro ran {ran} stage(s)\n{proc.stdout}{proc.stderr}")


@dataclass(frozen=True)
class Phases:
    """One in-process run, taken apart (seconds)."""

    total: float
    plan: float
    checkout: float
    commands: float


class _TimedPool:
    """The runner's WorkspacePool, timing ``acquire`` (the checkout) within a real run."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.seconds = 0.0

    def acquire(self, source: Any, commit: str) -> Any:
        t0 = time.perf_counter()
        try:
            return self.pool.acquire(source, commit)
        finally:
            self.seconds += time.perf_counter() - t0


class InProcess:
    """``trainops run`` without the CLI: the orchestrator and a LocalRunner in this process."""

    def __init__(self, repo: Path, home: Path) -> None:
        from trainops.config import Settings
        from trainops.gpu_runners.runner import LocalRunner

        self.repo = repo
        self.settings = Settings.load(environ={}, home=home, tracking={"enabled": False})
        self.runner = LocalRunner(self.settings)
        self.pool = _TimedPool(self.runner.workspaces)
        self.runner.workspaces = self.pool  # type: ignore[assignment]

    def plan(self) -> tuple[Spec, Plan]:
        from trainops.orchestrator import plan_target, resolve_target

        target = resolve_target(self.repo, None)
        return plan_target(target, memo_dir=self.settings.memo_dir)  # as the CLI does

    def run(self, *, use_cache: bool, expect_cached: int) -> Phases:
        """Plan and run, as ``trainops run`` does after parsing its arguments."""
        from trainops.orchestrator import run_plan
        from trainops.protocols import SilentObserver

        self.pool.seconds = 0.0
        t0 = time.perf_counter()
        spec, plan = self.plan()
        planned = time.perf_counter()
        result = run_plan(
            self.settings,
            spec,
            plan,
            executor=self.runner,
            observer=SilentObserver(),
            cancel=threading.Event(),
            use_cache=use_cache,
        )
        end = time.perf_counter()
        check_result(result.to_json(), expect_cached)
        return Phases(
            total=end - t0,
            plan=planned - t0,
            checkout=self.pool.seconds,
            commands=sum(s.duration_s for s in result.stages),
        )


# -- the benchmark ----------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="repetitions per case (default 7)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="honour PYTHONDONTWRITEBYTECODE if set (sources are then compiled on every start)",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    base = Path(tempfile.mkdtemp(prefix="trainops-bench-")).resolve()
    try:
        return bench(base, args.repeat, bytecode_cache=not args.no_bytecode_cache)
    finally:
        if args.keep:
            print(f"\nkept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def bench(base: Path, repeat: int, *, bytecode_cache: bool) -> int:
    env = make_env(base, bytecode_cache=bytecode_cache)
    env_tracking = {k: v for k, v in env.items() if k != "TRAINOPS_TRACKING__ENABLED"}
    # The in-process runner reads the same variables (child processes get QUIET_ENV anyway).
    os.environ.update({k: env[k] for k in ("DVC_NO_ANALYTICS", "MLFLOW_DISABLE_TELEMETRY")})

    repo = base / "pipeline"
    make_repo(repo, env)
    bare_ws, dvc_ws = base / "bare-checkout", base / "dvc-checkout"
    sh(["git", "clone", "-q", str(repo), str(bare_ws)], base, env)
    sh(["git", "clone", "-q", str(repo), str(dvc_ws)], base, env)

    s = {
        name: Series(label)
        for name, label in [
            ("py", "python -c pass (interpreter start)"),
            ("imp", "python: import what `trainops run` imports"),
            ("bare", "bare: 10 × subprocess.run(cmd, shell=True)"),
            ("cli_first", "trainops run, first ever (mirror clone + worktree)"),
            ("cli_cold", "trainops run --no-cache (CLI)"),
            ("ip_cold", "  in-process plan + run_plan, no cache"),
            ("ip_plan", "    of which resolve + plan (git reads)"),
            ("ip_ws", "    of which workspace checkout (fixed per run)"),
            ("ip_cmds", "    of which the stage commands (run_process)"),
            ("ip_rest", "    of which scheduling + caching outputs"),
            ("dvc_cold", "dvc repro --force"),
            ("cli_cached", "trainops run, fully cached (CLI)"),
            ("cli_cached_trk", "trainops run, fully cached, tracking on (CLI)"),
            ("cli_cached_new", "trainops run, fully cached, new commit same tree"),
            ("ip_cached", "  in-process plan + run_plan, fully cached"),
            ("dvc_noop", "dvc repro, everything up to date"),
        ]
    }
    first = time.perf_counter()
    if "PYTHONPYCACHEPREFIX" in env:  # compile everything once, outside any measurement
        warm_env = {**env, "TRAINOPS_HOME": str(base / "trainops-home-warmup")}
        trainops_cli(repo, warm_env, no_cache=True, expect_cached=0)
        dvc_repro(dvc_ws, env, force=True)
    # First contact: trainops mirrors the repo and creates its workspace slot;
    # DVC creates its state db and site cache. Not part of the steady state.
    s["cli_first"].add(timed(lambda: trainops_cli(repo, env, no_cache=True, expect_cached=0)))
    dvc_repro(dvc_ws, env, force=True)
    inproc = InProcess(repo, base / "trainops-home-inprocess")
    inproc.run(use_cache=False, expect_cached=0)
    run_bare(bare_ws, env)

    imports = (
        "import trainops.cli, trainops.console, trainops.orchestrator, trainops.gpu_runners.runner"
    )
    # Interleaved rounds, so that a noisy moment on the machine hits every case alike.
    for _ in range(repeat):
        for _ in range(CHEAP_SAMPLES):  # cheap and noisy: more samples
            s["py"].add(timed(lambda: sh([PY, "-c", "pass"], base, env)))
            s["bare"].add(timed(lambda: run_bare(bare_ws, env)))
        s["imp"].add(timed(lambda: sh([PY, "-c", imports], base, env)))
        s["cli_cold"].add(timed(lambda: trainops_cli(repo, env, no_cache=True, expect_cached=0)))
        s["cli_cached"].add(
            timed(lambda: trainops_cli(repo, env, no_cache=False, expect_cached=STAGES))
        )
        s["cli_cached_trk"].add(
            timed(lambda: trainops_cli(repo, env_tracking, no_cache=False, expect_cached=STAGES))
        )
        s["dvc_cold"].add(timed(lambda: dvc_repro(dvc_ws, env, force=True)))
        s["dvc_noop"].add(timed(lambda: dvc_repro(dvc_ws, env, force=False)))
        phases = inproc.run(use_cache=False, expect_cached=0)
        s["ip_cold"].add(phases.total)
        s["ip_plan"].add(phases.plan)
        s["ip_ws"].add(phases.checkout)
        s["ip_cmds"].add(phases.commands)
        s["ip_rest"].add(phases.total - phases.plan - phases.checkout - phases.commands)
        s["ip_cached"].add(inproc.run(use_cache=True, expect_cached=STAGES).total)
        # A push that changes nothing the stages read (a README edit): a commit trainops
        # has not planned yet, every stage a cache hit. Later rounds run at this commit.
        sh(["git", "commit", "-q", "--allow-empty", "-m", "bump"], repo, env)
        s["cli_cached_new"].add(
            timed(lambda: trainops_cli(repo, env, no_cache=False, expect_cached=STAGES))
        )
        inproc.plan()  # like the CLI's, its next runs find this commit already planned
    elapsed = time.perf_counter() - first

    if "PYTHONPYCACHEPREFIX" in env:
        bytecode = "cached (PYTHONDONTWRITEBYTECODE overridden, .pyc under the temp dir)"
    elif env.get("PYTHONDONTWRITEBYTECODE"):
        bytecode = "NOT cached (PYTHONDONTWRITEBYTECODE): sources are compiled on every start"
    else:
        bytecode = "cached (__pycache__)"
    report(s, repeat, elapsed, bytecode)
    return 0


def report(s: dict[str, Series], repeat: int, elapsed: float, bytecode: str) -> None:
    ms = 1000.0
    print(
        f"trainops runner benchmark: {STAGES} chained stages (`cat a step.txt > b`), "
        f"{repeat} repetition(s), {elapsed:.0f} s"
    )
    print(f"trainops {trainops.__version__} from {Path(trainops.__file__).parent}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}; bytecode {bytecode}\n"
    )
    width = max(len(x.label) for x in s.values())
    print(f"{'case':<{width}}  {'median':>9}  {'min':>9}  {'median/stage':>12}")
    for name, series in s.items():
        column = ""
        if name in ("bare", "cli_cold", "ip_cold", "dvc_cold", "dvc_noop"):
            column = f"{series.median * ms / STAGES:9.1f} ms"
        print(
            f"{series.label:<{width}}  {series.median * ms:6.0f} ms  {series.min * ms:6.0f} ms"
            f"  {column:>12}"
        )

    def med(name: str) -> float:
        return s[name].median * ms

    def per_stage(total_ms: float) -> str:
        return f"{total_ms / STAGES:6.1f} ms/stage"

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    bare = med("bare")
    over_cli = (med("cli_cold") - bare) / STAGES
    over_cli_min = (s["cli_cold"].min - s["bare"].min) * ms / STAGES
    fixed_ip = med("ip_plan") + med("ip_ws")
    speedup = s["dvc_noop"].median / s["cli_cached"].median
    speedup_min = s["dvc_noop"].min / s["cli_cached"].min
    speedup_new = s["dvc_noop"].median / s["cli_cached_new"].median

    print("\ngoals (medians; from the minima in brackets)")
    print(
        f"  (trainops run --no-cache − bare) / {STAGES}: {over_cli:6.1f} ms/stage "
        f"[{over_cli_min:.1f}]   goal ≤ {GOAL_OVERHEAD_MS:.0f} ms   "
        f"{verdict(over_cli <= GOAL_OVERHEAD_MS)}"
    )
    print(
        f"  no-op dvc repro / fully cached trainops run: {speedup:5.2f}x [{speedup_min:.2f}x]"
        f"   goal ≥ {GOAL_CACHED_SPEEDUP:.0f}x   {verdict(speedup >= GOAL_CACHED_SPEEDUP)}"
    )
    print("\nwhere the overhead of a cold run goes (medians)")
    print(f"  in-process run over bare:            {per_stage(med('ip_cold') - bare)}")
    print(
        f"    fixed per run, spread over {STAGES}:     {per_stage(fixed_ip)}"
        f"  (resolve + plan {med('ip_plan'):.0f} ms, workspace checkout {med('ip_ws'):.0f} ms)"
    )
    print(
        f"    run_process vs subprocess.run:     {per_stage(med('ip_cmds') - bare)}"
        "  (new session, log file, reader and waiter threads)"
    )
    print(f"    scheduling + caching outputs:      {per_stage(med('ip_rest'))}")
    print(
        f"  interpreter + imports, spread over {STAGES}: {per_stage(med('imp'))}"
        f"  (python start alone {med('py'):.0f} ms)"
    )
    print("\nother ratios (medians)")
    print(f"  no-op dvc repro / fully cached trainops run at a new commit: {speedup_new:5.2f}x")
    print(
        f"  trainops run --no-cache / dvc repro --force: {med('cli_cold') / med('dvc_cold'):5.2f}"
    )
    print(f"  dvc repro --force over bare: {per_stage(med('dvc_cold') - bare)}")


if __name__ == "__main__":
    sys.exit(main())
