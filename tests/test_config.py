"""Settings: defaults < trainops.toml < TRAINOPS_* < code, strict about keys and types."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainops.config import Settings, child_env
from trainops.errors import ConfigError


def test_defaults_live_under_one_data_dir(tmp_path: Path) -> None:
    s = Settings.load(environ={}, home=tmp_path / "h")
    assert s.data_dir == (tmp_path / "h").resolve()
    assert s.tracking_uri() == f"sqlite:///{s.data_dir / 'mlflow.db'}"
    assert s.artifact_root().startswith("file://") and s.artifact_root().endswith("/mlartifacts")
    for sub in (s.cache_dir, s.runs_dir, s.locks_dir, s.workspaces_dir, s.memo_dir):
        assert sub.parent == s.data_dir


def test_file_then_environment_then_overrides(tmp_path: Path) -> None:
    config = tmp_path / "trainops.toml"
    config.write_text(
        'home = "/from/file"\n[runner]\ncpu_slots = 3\nmax_parallel = 2\n'
        "[tracking]\nenabled = false\n"
    )
    env = {"TRAINOPS_RUNNER__CPU_SLOTS": "6", "TRAINOPS_TRACKING__EXPERIMENT": "exp"}
    s = Settings.load(config, environ=env, runner={"max_parallel": 5})
    assert s.home == Path("/from/file")
    assert (s.runner.cpu_slots, s.runner.max_parallel) == (6.0, 5)
    assert (s.tracking.enabled, s.tracking.experiment) == (False, "exp")


def test_mlflow_tracking_uri_is_honoured() -> None:
    s = Settings.load(environ={"MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    assert s.tracking_uri() == "http://mlflow:5000"
    s = Settings.load(
        environ={"MLFLOW_TRACKING_URI": "http://a", "TRAINOPS_MLFLOW_TRACKING_URI": "http://b"}
    )
    assert s.tracking_uri() == "http://b"


def test_unrelated_environment_variables_are_ignored() -> None:
    s = Settings.load(environ={"TRAINOPS_SOMETHING_ELSE": "x", "TRAINOPS_HOME": "/h"})
    assert s.home == Path("/h")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hoem = 'x'\n", "unknown setting 'hoem'"),
        ("[runner]\ncpu_slot = 2\n", "runner: unknown setting 'cpu_slot'"),
        ("[runner]\nmax_parallel = 'many'\n", "runner.max_parallel: 'many' is not a valid int"),
        ("[tracking]\nenabled = 'perhaps'\n", "tracking.enabled: 'perhaps' is not a valid bool"),
        ("runner = 3\n", "runner: expected a section of settings"),
        ("[runner\n", "reading settings from"),
    ],
)
def test_bad_settings_say_which_key(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "trainops.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings.load(config, environ={})


def test_bad_environment_value_is_an_error() -> None:
    with pytest.raises(ConfigError, match="runner.kill_grace_s"):
        Settings.load(environ={"TRAINOPS_RUNNER__KILL_GRACE_S": "soon"})


def test_child_env_hides_trainops_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINOPS_FORGE_TOKEN", "secret")
    env = child_env({"A": "1"})
    assert "TRAINOPS_FORGE_TOKEN" not in env
    assert env["A"] == "1" and env["DVC_NO_ANALYTICS"] == "1"
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
