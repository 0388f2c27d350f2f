"""Score model/ on data/prepared/test.csv: metrics.json and predictions.csv.

``metrics.json`` is what the gate reads (``accuracy``, ``f1_macro``);
``predictions.csv`` keeps one row per test example (id, label, predicted)
so two runs can be compared example by example, not only on averages.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import joblib
import numpy as np
from sklearn.metrics import accuracy_score, f1_score

TEST = Path("data/prepared/test.csv")


def main() -> None:
    model = joblib.load(Path("model/model.joblib"))
    rows = np.loadtxt(TEST, delimiter=",", skiprows=1, dtype=np.int64)
    ids, x, y = rows[:, 0], rows[:, 1:-1], rows[:, -1]
    predicted = model.predict(x.astype(np.float64))
    print(f"evaluated {len(y)} test examples")

    metrics = {
        "accuracy": round(float(accuracy_score(y, predicted)), 6),
        "f1_macro": round(float(f1_score(y, predicted, average="macro")), 6),
    }
    Path("metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"accuracy {metrics['accuracy']:.4f}  f1_macro {metrics['f1_macro']:.4f}")

    with Path("predictions.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "label", "predicted"])
        writer.writerows(zip(ids.tolist(), y.tolist(), predicted.tolist(), strict=True))
    print(f"wrote {len(y)} predictions to predictions.csv")


if __name__ == "__main__":
    main()
