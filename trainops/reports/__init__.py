"""Reporting back: commit statuses and one living merge-request comment per run."""
