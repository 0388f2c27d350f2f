"""Registered model versions in the MLflow Model Registry, found by alias.

A version's ``source`` is the run's *concrete* artifact URI
(``<run artifact_uri>/model``, a ``file://`` or ``s3://`` URI), not
``runs:/<id>/model``: the SQL registry stores a ``runs:/`` source verbatim
and ``get_model_version_download_uri`` then hands it back unchanged, which
KServe cannot read. Versions registered elsewhere with MLflow 3's
``mlflow.register_model`` have ``source = models:/m-<id>`` (an internal
logged-model URI) and a concrete ``storage_location``, which is what
``get_model_version_download_uri`` returns; a remaining ``runs:/`` download
URI is resolved through the run's artifact URI here.

Environments are aliases (``staging``, ``prod``), never stages: stages are
deprecated since MLflow 2.9. As in ``tracking/mlflow.py``, every call goes
through an explicit ``MlflowClient(tracking_uri)`` and ``mlflow`` is only
imported inside methods.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from trainops.errors import TrackingError
from trainops.tracking.mlflow import TAG_RUN_ID, _redact

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

__all__ = ["ModelRegistry", "ModelVersionRef"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelVersionRef:
    """One registered model version, as serving needs it."""

    name: str
    version: str
    run_id: str | None
    """The MLflow run that produced it (None for a version registered without one)."""
    source: str
    """What MLflow recorded as the version's source (with MLflow 3 maybe ``models:/m-...``)."""
    download_uri: str
    """Where the model files are: a concrete URI for KServe's ``storageUri``."""
    tags: dict[str, str] = field(default_factory=dict)


def _literal(value: str, what: str) -> str:
    """``value`` quoted for an MLflow filter string (which has no escapes)."""
    for quote in ("'", '"'):
        if quote not in value:
            return f"{quote}{value}{quote}"
    raise TrackingError(f"{what} {value!r} holds both kinds of quote; MLflow cannot search for it")


class ModelRegistry:
    """Registers run outputs as model versions and moves environment aliases."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self._client_: MlflowClient | None = None

    def __repr__(self) -> str:
        return f"ModelRegistry({_redact(self.tracking_uri)!r})"

    # -- public ----------------------------------------------------------------

    def register(
        self,
        name: str,
        *,
        run_id: str,
        artifact_path: str = "model",
        tags: Mapping[str, str],
    ) -> ModelVersionRef:
        """Register ``<run artifacts>/<artifact_path>`` of MLflow run ``run_id`` as a version.

        Idempotent: if a version of ``name`` already carries the same
        ``trainops.run_id`` tag (or, without that tag, comes from the same
        MLflow run and path), it is returned and nothing is created. Two
        concurrent calls may both create one; the later one is then deleted
        and the earlier returned.
        """
        from mlflow.exceptions import MlflowException

        doing = f"registering run {run_id} as model {name!r} in {_redact(self.tracking_uri)}"
        try:
            client = self._client()
            run = client.get_run(run_id)
            path = artifact_path.strip("/")
            source = f"{str(run.info.artifact_uri).rstrip('/')}/{path}"
            if not client.list_artifacts(run_id, path):
                raise TrackingError(f"{doing}: the run has no artifacts under {path!r}")
            existing = self._find(client, name, run_id, source, tags)
            if existing is not None:
                return self._ref(client, existing)
            self._ensure_registered_model(client, name)
            created = client.create_model_version(
                name, source, run_id=run_id, tags=dict(tags), await_creation_for=0
            )
            first = self._find(client, name, run_id, source, tags)
            if first is not None and str(first.version) != str(created.version):
                log.info("model %s: version %s duplicates %s", name, created.version, first.version)
                client.delete_model_version(name, str(created.version))
                return self._ref(client, first)
            return self._ref(client, client.get_model_version(name, str(created.version)))
        except MlflowException as exc:
            raise TrackingError(f"{doing}: {exc}") from exc

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``alias`` (an environment) of model ``name`` at ``version``."""
        from mlflow.exceptions import MlflowException

        try:
            self._client().set_registered_model_alias(name, alias, str(version))
        except MlflowException as exc:
            raise TrackingError(
                f"setting alias {alias!r} of model {name!r} to version {version} in "
                f"{_redact(self.tracking_uri)}: {exc}"
            ) from exc

    def alias_version(self, name: str, alias: str) -> ModelVersionRef | None:
        """The version ``alias`` points at; None if the alias or the model does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            client = self._client()
            try:
                version = client.get_model_version_by_alias(name, alias)
            except MlflowException as exc:
                # An unknown alias is INVALID_PARAMETER_VALUE, an unknown model
                # RESOURCE_DOES_NOT_EXIST; anything else is a real failure.
                if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE") and (
                    "not found" in exc.message
                ):
                    return None
                raise
            return self._ref(client, version)
        except MlflowException as exc:
            raise TrackingError(
                f"reading alias {alias!r} of model {name!r} in {_redact(self.tracking_uri)}: {exc}"
            ) from exc

    def get(self, name: str, version: str) -> ModelVersionRef:
        """Version ``version`` of model ``name``; TrackingError if there is none."""
        from mlflow.exceptions import MlflowException

        try:
            client = self._client()
            return self._ref(client, client.get_model_version(name, str(version)))
        except MlflowException as exc:
            raise TrackingError(
                f"reading version {version} of model {name!r} in "
                f"{_redact(self.tracking_uri)}: {exc}"
            ) from exc

    def run_metrics(self, run_id: str) -> dict[str, float]:
        """The metrics of an MLflow run (e.g. the one behind the model served now)."""
        from mlflow.exceptions import MlflowException

        try:
            return dict(self._client().get_run(run_id).data.metrics)
        except MlflowException as exc:
            raise TrackingError(
                f"reading metrics of run {run_id} in {_redact(self.tracking_uri)}: {exc}"
            ) from exc

    # -- internals ---------------------------------------------------------------

    def _client(self) -> MlflowClient:
        if self._client_ is None:
            from mlflow.tracking import MlflowClient

            logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
            self._client_ = MlflowClient(self.tracking_uri)
        return self._client_

    @staticmethod
    def _ensure_registered_model(client: MlflowClient, name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            client.get_registered_model(name)
            return
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
        try:
            client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # created meanwhile: fine
                raise

    @staticmethod
    def _find(
        client: MlflowClient, name: str, run_id: str, source: str, tags: Mapping[str, str]
    ) -> ModelVersion | None:
        """The earliest version of ``name`` registered for the same trainops run (or MLflow run)."""
        model = f"name = {_literal(name, 'model name')}"
        key = tags.get(TAG_RUN_ID)
        if key is not None:
            query = f"{model} and tags.`{TAG_RUN_ID}` = {_literal(key, 'run id')}"
        else:
            query = f"{model} and run_id = {_literal(run_id, 'MLflow run id')}"
        found = client.search_model_versions(query, order_by=["version_number ASC"])
        for version in found:
            if key is not None or version.source == source:
                return version
        return None

    @staticmethod
    def _ref(client: MlflowClient, version: ModelVersion) -> ModelVersionRef:
        name, number = str(version.name), str(version.version)
        uri = str(client.get_model_version_download_uri(name, number))
        if uri.startswith("runs:/"):
            run, _, path = uri.removeprefix("runs:/").partition("/")
            uri = f"{str(client.get_run(run).info.artifact_uri).rstrip('/')}/{path}".rstrip("/")
        return ModelVersionRef(
            name=name,
            version=number,
            run_id=str(version.run_id) if version.run_id else None,
            source=str(version.source),
            download_uri=uri,
            tags={str(k): str(v) for k, v in (version.tags or {}).items()},
        )
