"""The package's __all__ is exactly its public names."""

from __future__ import annotations

import trainops


def test_all_lists_the_public_names() -> None:
    public = {n for n in vars(trainops) if not n.startswith("_") or n == "__version__"}
    modules = {n for n in public if type(getattr(trainops, n)).__name__ == "module"}
    assert set(trainops.__all__) == public - modules
    assert trainops.__version__
