"""Fit a scaled logistic regression on data/prepared/train.csv; save it to model/.

``model/`` is a directory (the model plus a small description) because that
is what gets promoted: serving reads ``model.joblib`` and ``meta.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import joblib
import numpy as np
import sklearn
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

TRAIN = Path("data/prepared/train.csv")
OUT = Path("model")


def main() -> None:
    params = yaml.safe_load(Path("params.yaml").read_text())["train"]
    rows = np.loadtxt(TRAIN, delimiter=",", skiprows=1, dtype=np.int64)
    x, y = rows[:, 1:-1], rows[:, -1]
    print(f"training on {len(y)} examples, {x.shape[1]} features, params {params}")

    model = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=params["C"], max_iter=params["max_iter"], random_state=params["seed"]),
    )
    started = time.perf_counter()
    model.fit(x.astype(np.float64), y)
    print(f"fitted in {time.perf_counter() - started:.2f}s")
    print(f"train accuracy {model.score(x.astype(np.float64), y):.4f}")

    OUT.mkdir(exist_ok=True)
    joblib.dump(model, OUT / "model.joblib")
    meta = {
        "framework": "sklearn",
        "sklearn_version": sklearn.__version__,
        "n_features": int(x.shape[1]),
        "classes": [int(c) for c in model.classes_],
        "params": params,
    }
    (OUT / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"saved model to {OUT}/")


if __name__ == "__main__":
    main()
