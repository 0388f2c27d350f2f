"""Process-level tests: ``trainops serve`` as a real process, real git pushes and hooks."""
