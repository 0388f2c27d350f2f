"""One home per third-party client, and light imports where speed matters."""

from __future__ import annotations

import ast
import fnmatch
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "trainops"

# client library → the only modules allowed to import it
HOMES = {
    "pynvml": {"gpu_runners/_nvml.py"},
    "mlflow": {"tracking/*"},
    "dvc": {"gpu_runners/data.py"},
    "pydantic": {"pipelines/raw.py", "pipelines/validate.py"},
    "typer": {"cli.py"},
    "sqlalchemy": {"store/*"},
    "alembic": {"store/*"},
    "psycopg": set(),
    "jinja2": {"reports/render.py", "manifests/serving.py"},
    "fastapi": {"service/*"},
    "uvicorn": {"service/serve.py"},
    "github": {"forges/github.py"},
    "gitlab": {"forges/gitlab.py"},
    "kubernetes": {"executors/argo.py"},
}
# areas that must never reach the web service
NO_SERVICE = ("webhooks", "pipelines", "manifests", "gpu_runners")


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_third_party_clients_stay_in_their_home(path: Path) -> None:
    rel = path.relative_to(PACKAGE).as_posix()
    for name in imports(path):
        root = name.split(".")[0]
        if root in HOMES:
            allowed = any(fnmatch.fnmatch(rel, home) for home in HOMES[root])
            assert allowed, f"{rel} imports {name}; only {HOMES[root]} may"
        if rel.split("/")[0] in NO_SERVICE:
            assert root != "fastapi" and not name.startswith("trainops.service"), rel


def imported_by(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {m.split(".")[0] for m in out.stdout.split()}


def test_cli_and_a_cached_run_import_nothing_heavy() -> None:
    loaded = imported_by(
        "import trainops.cli, trainops.orchestrator, trainops.gpu_runners.runner, "
        "trainops.pipelines.memo, trainops.pipelines.plan"
    )
    assert not loaded & {"mlflow", "dvc", "pynvml", "pydantic", "sklearn", "numpy"}
