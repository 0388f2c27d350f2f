"""The repository's pipeline: ``trainops.yaml`` (+ ``dvc.yaml``) at a commit → Spec → Plan."""
