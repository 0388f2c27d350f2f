"""The ``trainops`` command. Heavy modules are imported inside commands: ``--help`` stays fast.

Exit codes: 0 success; 1 the pipeline failed (a stage failed, data missing);
2 invalid input (pipeline file, ref, settings); 3 trainops itself broke;
130 cancelled.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from trainops.config import QUIET_ENV
from trainops.errors import TrainopsError

if TYPE_CHECKING:
    from trainops.config import Settings
    from trainops.models import RunResult

app = typer.Typer(
    name="trainops",
    help="GitOps CI/CD for machine learning on GPUs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_Handler = Callable[[int, FrameType | None], Any] | int | None

EXIT_FAILED, EXIT_INVALID, EXIT_ERRORED, EXIT_CANCELLED = 1, 2, 3, 130

PathArg = Annotated[Path, typer.Argument(help="The repository (or a directory inside it).")]
RefOpt = Annotated[
    str | None, typer.Option("--ref", help="Commit, branch or tag to use (default: HEAD).")
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="A trainops.toml (default: ./trainops.toml).")
]


def _err(message: str) -> None:
    typer.echo(message, err=True)


def _fail(code: int, message: str) -> NoReturn:
    _err(message)
    raise typer.Exit(code)


def _settings(config: Path | None) -> Settings:
    from trainops.config import Settings
    from trainops.errors import ConfigError

    if config is not None and not config.is_file():
        _fail(EXIT_INVALID, f"config file {str(config)!r} does not exist")
    try:
        return Settings.load(config)
    except ConfigError as exc:
        _fail(EXIT_INVALID, f"invalid settings: {exc}")


def _handle(exc: Exception) -> NoReturn:
    from trainops.errors import ConfigError, GitError, SpecError, TrainopsError

    if isinstance(exc, SpecError):
        for problem in exc.problems:
            _err(str(problem))
        raise typer.Exit(EXIT_INVALID) from exc
    if isinstance(exc, GitError | ConfigError):
        _fail(EXIT_INVALID, f"error: {exc}")
    if isinstance(exc, TrainopsError):
        _fail(EXIT_ERRORED, f"error: {exc}")
    raise exc


@app.command()
def validate(
    path: Annotated[
        Path, typer.Argument(help="A pipeline file or the directory holding it.")
    ] = Path("."),
) -> None:
    """Check trainops.yaml (and the dvc.yaml it imports) on disk; exit 2 if invalid."""
    from trainops.errors import SpecError
    from trainops.pipelines.loader import load_spec_dir

    root = path.parent if path.is_file() else path
    if not root.is_dir():
        _fail(EXIT_INVALID, f"{str(path)!r} does not exist")
    try:
        spec = load_spec_dir(root)
    except SpecError as exc:
        _handle(exc)
    gpus = sum(s.gpus for s in spec.stages)
    typer.echo(
        f"{', '.join(spec.sources)}: valid — pipeline {spec.name!r}, {len(spec.stages)} stage(s)"
        f", {gpus} GPU(s) requested, {len(spec.gate)} gate rule(s)"
    )


@app.command()
def schema() -> None:
    """Print the JSON Schema of trainops.yaml (for editor completion)."""
    from trainops.pipelines.schema import schema_json

    typer.echo(schema_json(), nl=False)


@app.command()
def plan(path: PathArg = Path("."), ref: RefOpt = None, config: ConfigOpt = None) -> None:
    """Show the stages of the pipeline at a commit and which of them are cached."""
    from trainops.cache import StageCache
    from trainops.console import plan_table
    from trainops.errors import TrainopsError
    from trainops.orchestrator import plan_target, resolve_target

    settings = _settings(config)
    try:
        target = resolve_target(path, ref)
        _spec, the_plan = plan_target(target, memo_dir=settings.memo_dir)
    except TrainopsError as exc:
        _handle(exc)
    cache = StageCache(settings.cache_dir)
    cached = {}
    for stage in the_plan.stages:
        entry = cache.lookup(stage.cache_key) if stage.cache else None
        cached[stage.name] = entry.run_id if entry else None
    typer.echo(f"{the_plan.pipeline} @ {the_plan.commit[:12]} ({target.ref})")
    typer.echo(plan_table(the_plan, cached))
    to_run = sum(1 for v in cached.values() if v is None)
    typer.echo(f"\n{to_run} stage(s) would run, {len(cached) - to_run} cached")


@app.command()
def render(
    path: PathArg = Path("."),
    ref: RefOpt = None,
    backend: Annotated[str, typer.Option(help="What to render for: argo.")] = "argo",
    run_id: Annotated[str, typer.Option(help="The run id the workflow is named after.")] = "manual",
    config: ConfigOpt = None,
) -> None:
    """Print exactly the manifest a cluster run of the pipeline would submit."""
    from trainops.manifests.argo import RunLabels, render_workflow, to_yaml
    from trainops.orchestrator import plan_target, resolve_target

    if backend != "argo":
        _fail(EXIT_INVALID, f"unknown backend {backend!r}; trainops renders for: argo")
    settings = _settings(config)
    try:
        target = resolve_target(path, ref)
        _spec, the_plan = plan_target(target, memo_dir=settings.memo_dir)
        workflow = render_workflow(
            the_plan,
            settings.argo,
            run=RunLabels(run_id=run_id, repo=target.source),
            run_key=run_id,
        )
    except TrainopsError as exc:
        _handle(exc)
    typer.echo(to_yaml(workflow), nl=False)


@app.command()
def run(
    path: PathArg = Path("."),
    ref: RefOpt = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Run every stage.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Run the pipeline at a commit on this machine's GPUs (or CPU)."""
    settings = _settings(config)
    result = _run(settings, path, ref, use_cache=not no_cache, quiet=as_json)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    raise typer.Exit(_exit_code(result))


def _run(
    settings: Settings, path: Path, ref: str | None, *, use_cache: bool, quiet: bool
) -> RunResult:
    from trainops.console import TerminalObserver, run_summary
    from trainops.errors import TrainopsError
    from trainops.gpu_runners.runner import LocalRunner
    from trainops.orchestrator import plan_target, resolve_target, run_plan

    observer = TerminalObserver()
    try:
        target = resolve_target(path, ref)
        if ref is None and target.repo.is_dirty():
            _err(
                f"note: uncommitted changes are not part of the run; trainops runs "
                f"commit {target.commit[:12]}"
            )
        spec, the_plan = plan_target(target, memo_dir=settings.memo_dir)
    except TrainopsError as exc:
        _handle(exc)
    observer.set_stages([s.name for s in the_plan.stages])
    where = f" ({target.branch})" if target.branch else ""
    _err(f"trainops · {the_plan.pipeline} @ {the_plan.commit[:12]}{where}")
    cancel = threading.Event()
    previous = _on_signals(cancel)
    try:
        result = run_plan(
            settings,
            spec,
            the_plan,
            executor=LocalRunner(settings),
            observer=observer,
            cancel=cancel,
            use_cache=use_cache,
            branch=target.branch,
        )
    except TrainopsError as exc:
        _handle(exc)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not quiet:
        typer.echo("\n" + run_summary(result))
    return result


def _on_signals(cancel: threading.Event) -> dict[signal.Signals, _Handler]:
    """First Ctrl-C cancels the run (stages are killed cleanly); a second one aborts."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        _err("cancelling: stopping running stages (Ctrl-C again to abort)")
        cancel.set()

    previous: dict[signal.Signals, _Handler] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    return previous


def _exit_code(result: RunResult) -> int:
    from trainops.models import RunStatus

    return {
        RunStatus.SUCCEEDED: 0,
        RunStatus.FAILED: EXIT_FAILED,
        RunStatus.ERRORED: EXIT_ERRORED,
        RunStatus.CANCELLED: EXIT_CANCELLED,
    }[result.status]


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (service.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (service.port).")] = None,
    worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="Also work the queue in this process.")
    ] = True,
    config: ConfigOpt = None,
) -> None:
    """Run the webhook service and its worker (GitHub, GitLab, git hook → runs)."""
    settings = _settings(config)
    if not worker:
        settings.service.worker = False
    if host:
        settings.service.host = host
    if port:
        settings.service.port = port
    from trainops.service.serve import serve_forever

    try:
        serve_forever(settings)
    except TrainopsError as exc:
        _handle(exc)


@app.command()
def promote(
    model: Annotated[str, typer.Option(help="Registered model name.")],
    version: Annotated[str, typer.Option(help="Model version to serve (older: a rollback).")],
    env: Annotated[str, typer.Option("--env", help="Environment, e.g. staging or prod.")],
    deploy: Annotated[
        str | None, typer.Option(help="Deployment repository (deploy.<name> in settings).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Promote (or roll back to) an explicit model version: alias + deploy-repo change."""
    from trainops.forges.registry import ForgeRegistry
    from trainops.promotion.promoter import Promoter
    from trainops.tracking.registry import ModelRegistry

    settings = _settings(config)
    try:
        found = ModelRegistry(settings.tracking_uri()).get(model, version)
        outcome = Promoter(settings, ForgeRegistry(settings)).promote_version(
            found, env, deploy=deploy
        )
    except TrainopsError as exc:
        _handle(exc)
    _print_promotion(outcome.to_json())


def _print_promotion(p: dict[str, Any]) -> None:
    where = p["pull_request"] or f"branch {p['branch']}"
    state = "proposed" if p["changed"] else "already proposed"
    ff = " and fast-forwarded" if p["fast_forwarded"] else ""
    typer.echo(
        f"{p['model']} v{p['version']} → {p['environment']}: {state}{ff} ({where}); "
        f"{p['manifest']}; MLflow alias {p['environment']!r} → v{p['version']}"
    )


hook_app = typer.Typer(help="The post-receive hook for plain git servers.", no_args_is_help=True)
app.add_typer(hook_app, name="hook")


@hook_app.command("install")
def hook_install(
    bare_repo: Annotated[Path, typer.Argument(help="The (bare) repository people push to.")],
    url: Annotated[
        str | None, typer.Option(help="The service's base URL (default: service.public_url).")
    ] = None,
    clone_url: Annotated[
        str | None,
        typer.Option(help="How the service fetches the repo (default: its path on this host)."),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Replace a post-receive hook that isn't ours.")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Install the hook: every push to BARE_REPO then triggers trainops."""
    from trainops import githook

    settings = _settings(config)
    secret = settings.githook.webhook_secret
    base = (url or settings.service_url()).rstrip("/")
    try:
        hook = githook.install(
            bare_repo.resolve(),
            f"{base}/webhooks/git",
            secret.reveal() if secret else "",
            clone_url=clone_url,
            force=force,
        )
    except TrainopsError as exc:
        _handle(exc)
    typer.echo(f"installed {hook}: pushes notify {base}/webhooks/git")


@app.command()
def demo(
    workdir: Annotated[
        Path | None, typer.Option("--dir", help="Where the demo repos live (default: data dir).")
    ] = None,
    exit_at_end: Annotated[
        bool, typer.Option("--exit", help="Stop the service once the run is through.")
    ] = False,
    port: Annotated[
        int | None, typer.Option(help="Port for the service (0: any free one).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """The whole loop on embedded defaults: serve, push to a bare repo, watch the run."""
    from trainops.service.serve import BackgroundServer

    settings = _settings(config)
    if port is not None:
        settings.service.port = port
    base = (workdir or settings.data_dir / "demo").resolve()
    work, bare = base / "digits", base / "origin" / "digits.git"
    _demo_repo(base, work)
    _demo_secret(settings, base)
    _demo_deploy_repo(settings, base / "deploy.git")
    # The example's stages call `python`: make it the interpreter trainops runs on,
    # which has the example's requirements (scikit-learn) installed.
    bin_dir = str(Path(sys.executable).parent)
    os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])
    try:
        server = BackgroundServer(settings).start()
    except TrainopsError as exc:
        _handle(exc)
    try:
        result = _demo_push(settings, server.url, work, bare)
        server.drain_reports()
        _err(f"report in git notes: git -C {bare} log --notes=trainops -1")
        if exit_at_end:
            raise typer.Exit(_exit_code(result))
        _err(
            f"\ntrainops is serving at {server.url} (API: {server.url}/docs). Push to {bare} "
            "to run again; Ctrl-C stops."
        )
        while True:
            time.sleep(3600)
    finally:
        server.stop()


def _demo_repo(base: Path, work: Path) -> None:
    from trainops.demo import make_demo_repo

    if (work / ".git").is_dir():
        return
    example = Path(__file__).resolve().parent.parent / "examples" / "digits"
    if not example.is_dir():
        _fail(EXIT_ERRORED, f"the example is missing: {example} (run from a source checkout)")
    _err(f"creating the demo repository {work} (git + DVC, data on a local remote)")
    work.mkdir(parents=True, exist_ok=True)
    try:
        make_demo_repo(example, work, base / "dvc-remote")
    except TrainopsError as exc:
        _handle(exc)


def _demo_deploy_repo(settings: Settings, bare: Path) -> None:
    """The example's ``promote.deploy: local``: a bare deployment repo (GitOps target)."""
    from trainops.config import DeployRepoSettings
    from trainops.demo import ensure_deploy_repo

    if "local" not in settings.deploy:
        try:
            ensure_deploy_repo(bare)
        except TrainopsError as exc:
            _handle(exc)
        settings.deploy["local"] = DeployRepoSettings(url=str(bare), forge="git")


def _demo_secret(settings: Settings, base: Path) -> None:
    """The git hook's token: configured, or made once for the demo (mode 0600)."""
    from trainops.config import Secret

    if settings.githook.webhook_secret:
        return
    token_file = base / "githook.secret"
    if not token_file.is_file():
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    settings.githook.webhook_secret = Secret(token_file.read_text().strip())


def _demo_push(settings: Settings, url: str, work: Path, bare: Path) -> RunResult:
    from trainops import demo, githook
    from trainops.console import run_summary
    from trainops.models import result_from_json

    secret = settings.githook.webhook_secret
    assert secret is not None
    try:
        demo.ensure_origin(work, bare)
        githook.install(bare, f"{url}/webhooks/git", secret.reveal())
        commit = demo.new_demo_commit(work, bare)
        _err(f"service at {url}; pushing {commit[:12]} to {bare}")
        for line in demo.push(work).splitlines():
            _err(f"  remote: {line}")
    except TrainopsError as exc:
        _handle(exc)
    shown: dict[str, str] = {}

    def show(run: dict[str, Any]) -> None:
        if "run" not in shown:
            shown["run"] = run["id"]
            _err(f"run {run['id']} ({run['trigger']} to {run['branch']})")
        for stage in run["stages"]:
            status = stage.get("status") or "pending"
            if status != "pending" and shown.get(stage["name"]) != status:
                shown[stage["name"]] = status
                note = " (cached)" if stage.get("cached") else ""
                _err(f"  {stage['name']:<12} {status}{note}")

    final = demo.follow_run(url, commit, on_change=show)
    if final.get("error") and not final["stages"]:
        _fail(EXIT_FAILED, f"run {final['id']} {final['status']}: {final['error']}")
    store_result = _get_result(settings, final["id"])
    result = result_from_json(store_result)
    typer.echo("\n" + run_summary(result))
    promotion = final.get("promotion") or {}
    for p in promotion.get("promotions", []):
        _print_promotion(p)
    if promotion.get("error"):
        _err(f"promotion: {promotion['error']}")
    promotion = store_result.get("promotion") or {}
    for p in promotion.get("promotions", []):
        _print_promotion(p)
    if promotion.get("error"):
        _err(f"promotion: {promotion['error']}")
    if result.mlflow_run_id:
        _err(f"browse it: .venv/bin/mlflow ui --backend-store-uri {settings.tracking_uri()}")
    return result


def _get_result(settings: Settings, run_id: str) -> dict[str, Any]:
    path = settings.runs_dir / run_id / "result.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def main() -> None:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    try:
        app()
    except KeyboardInterrupt:
        _err("aborted")
        sys.exit(EXIT_CANCELLED)
