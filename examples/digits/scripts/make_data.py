"""Write data/raw/digits.csv from scikit-learn's bundled digits (no download).

Run once when the example becomes a repository (``trainops demo`` does it);
the CSV is then tracked by DVC (``data/raw.dvc``), not by git, as real
training data would be.
"""

from __future__ import annotations

import csv
from pathlib import Path

from sklearn.datasets import load_digits

OUT = Path(__file__).resolve().parent.parent / "data" / "raw" / "digits.csv"


def main() -> None:
    digits = load_digits()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    n_pixels = digits.data.shape[1]
    with OUT.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*(f"pixel_{i}" for i in range(n_pixels)), "label"])
        for pixels, label in zip(digits.data, digits.target, strict=True):
            writer.writerow([*(int(p) for p in pixels), int(label)])
    print(f"wrote {len(digits.target)} images of {n_pixels} pixels to {OUT}")


if __name__ == "__main__":
    main()
