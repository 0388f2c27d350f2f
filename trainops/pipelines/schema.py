"""The JSON Schema of trainops.yaml, generated from the raw models.

A committed copy (``trainops/pipelines/trainops.schema.json``) lets editors
complete the file; a test keeps it equal to what this module generates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainops.pipelines.raw import RawPipeline

SCHEMA_FILE = Path(__file__).with_name("trainops.schema.json")


def schema() -> dict[str, Any]:
    generated = RawPipeline.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **generated}


def schema_json() -> str:
    return json.dumps(schema(), indent=2, sort_keys=True) + "\n"
