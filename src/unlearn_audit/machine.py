"""What this process may run on: CPUs, threads and accelerators (recorded in every report)."""

from __future__ import annotations

import os
import platform


def usable_cpus() -> int:
    """CPUs this process may run on (a container or ``taskset`` may allow fewer than the machine has):
    more torch threads than cores makes OpenMP spin and can slow training by orders of magnitude."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def hardware() -> dict:
    import torch

    return {"machine": platform.machine(), "processor": platform.processor() or None, "cpus": usable_cpus(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
