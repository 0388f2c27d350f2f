"""trainops: GitOps CI/CD for machine learning on GPUs."""

from trainops.errors import SpecError, TrainopsError
from trainops.models import Plan, PlannedStage, RunResult, RunStatus, StageResult, StageStatus

__version__ = "0.1.0"

__all__ = [
    "Plan",
    "PlannedStage",
    "RunResult",
    "RunStatus",
    "SpecError",
    "StageResult",
    "StageStatus",
    "TrainopsError",
    "__version__",
]
