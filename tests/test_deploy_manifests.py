"""The Kustomize base for deploying trainops parses, references only what exists,
keeps secrets as references, and limits RBAC to its namespace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

BASE = Path(__file__).resolve().parents[1] / "deploy" / "base"


def documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    docs = []
    for resource in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((BASE / resource).read_text()) if d]
    return docs


def test_every_resource_parses_and_names_itself() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents()}
    assert ("Deployment", "trainops") in kinds and ("Role", "trainops") in kinds
    assert ("ConfigMap", "trainops-gpu-pools") in kinds


def test_rbac_is_namespaced_and_minimal() -> None:
    roles = [d for d in documents() if d["kind"] in ("Role", "ClusterRole")]
    assert all(d["kind"] == "Role" for d in roles)
    service = next(d for d in roles if d["metadata"]["name"] == "trainops")
    groups = {g for rule in service["rules"] for g in rule["apiGroups"]}
    assert groups == {"argoproj.io", ""}
    assert not any("*" in rule["verbs"] or "*" in rule["resources"] for rule in service["rules"])


def test_secrets_are_references_only() -> None:
    deployment = next(d for d in documents() if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    secret_like = [e for e in container["env"] if "SECRET" in e["name"] or "TOKEN" in e["name"]]
    assert secret_like and all("secretKeyRef" in e["valueFrom"] for e in secret_like)
    config = next(d for d in documents() if d["metadata"]["name"] == "trainops-config")
    assert not any("SECRET" in k or "TOKEN" in k for k in config["data"])
