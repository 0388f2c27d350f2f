"""Split data/raw/digits.csv into data/prepared/{train,test}.csv.

Each row gets an ``id`` (its row number in the raw file) so evaluation can
report per-example predictions that stay comparable between runs. The
stratified split is plain numpy: importing scikit-learn costs over a second,
and this stage runs on every data change.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

RAW = Path("data/raw/digits.csv")
OUT = Path("data/prepared")


def split(
    rows: np.ndarray, labels: np.ndarray, *, test_size: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split that puts the same share of every digit in the test set."""
    rng = np.random.default_rng(seed)
    test_mask = np.zeros(len(rows), dtype=bool)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        test_mask[members[: round(len(members) * test_size)]] = True
    return rows[~test_mask], rows[test_mask]


def main() -> None:
    params = yaml.safe_load(Path("params.yaml").read_text())["prepare"]
    with RAW.open() as f:
        header = f.readline().strip().split(",")
    table = np.loadtxt(RAW, delimiter=",", skiprows=1, dtype=np.int64)
    print(f"read {len(table)} rows from {RAW}")

    labels = table[:, -1]
    rows = np.hstack([np.arange(len(table)).reshape(-1, 1), table])
    train, test = split(rows, labels, test_size=params["test_size"], seed=params["seed"])
    OUT.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", train), ("test", test)):
        path = OUT / f"{name}.csv"
        np.savetxt(
            path, part, delimiter=",", fmt="%d", header=",".join(["id", *header]), comments=""
        )
        print(f"wrote {len(part)} rows to {path}")


if __name__ == "__main__":
    main()
