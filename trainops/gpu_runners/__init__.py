"""The embedded local runner's low-level pieces: GPUs, processes, workspaces, data.

Each module does one job and knows nothing of plans or runs; the scheduler
composes them. Only ``_nvml`` talks to the NVIDIA driver, and only lazily,
so a host without GPUs pays nothing for this package.
"""
