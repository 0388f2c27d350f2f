"""Experiment tracking: what a pipeline run produced, recorded in MLflow.

This is the only package that imports ``mlflow``, and it does so lazily
(inside functions), because importing mlflow costs over a second and
``trainops --help`` or ``trainops render`` must not pay it.
"""

from trainops.tracking.mlflow import MlflowTracker, mlflow_key

__all__ = ["MlflowTracker", "mlflow_key"]
