"""What this process may run on: CPUs, threads, accelerators, and which dtypes they compute fast.

Every compute dtype the tool chooses by itself (``audit --dtype auto``, the demo's fine-tuning and audits,
``--train-dtype bfloat16`` unlearning, the benchmarks) asks ``computes_fast``. A CPU without bfloat16
instructions (AVX2-only AMD EPYC, older Intel) runs a bfloat16 matmul through a conversion path that
measured 41x slower than float32 on this project's own AVX2 machine, so there the fast choice is float32.
The answer and the CPU it came from are recorded in every report (``hardware``).
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path

#: Overrides the CPU's answer, for tests and for users who measured otherwise: a comma-separated list of
#: the dtypes to treat as fast on the CPU (``bfloat16``, ``float16``); empty or ``none`` for neither.
FAST_DTYPES_ENV = "UNLEARN_AUDIT_FAST_DTYPES"
LOW_PRECISION = ("bfloat16", "float16")


def usable_cpus() -> int:
    """CPUs this process may run on (a container or ``taskset`` may allow fewer than the machine has):
    more torch threads than cores makes OpenMP spin and can slow training by orders of magnitude."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name as ``lscpu`` shows it (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_capability() -> str:
    """The vector instruction set torch's CPU kernels were dispatched to (``AVX2``, ``AVX512``, ...)."""
    import torch

    return torch.backends.cpu.get_cpu_capability()


def _name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _cpu_native(name: str) -> bool:
    """By instruction set: bfloat16 needs AVX512-BF16 or AMX on x86 (plain AVX512 converts every element,
    and AVX2 has no bfloat16 arithmetic at all); float16 needs AVX512-FP16 or AMX-FP16. Elsewhere (ARM),
    oneDNN's own check, which asks for the BF16/FP16 extensions."""
    import torch

    x86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
    if name == "bfloat16":
        if x86:
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if x86:
        return bool(torch.cpu._is_amx_fp16_supported() or torch.ops.mkldnn._is_mkldnn_fp16_supported())
    return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())


def computes_fast(dtype, device: str = "cpu") -> bool:
    """Does ``device`` compute ``dtype`` at least as fast as float32? float32 always does. On CUDA,
    bfloat16 needs native support (Ampere or later, ``torch.cuda.is_bf16_supported``), float16 runs on
    every GPU this tool supports. On the CPU, the instruction set decides (``_cpu_native``), unless
    ``UNLEARN_AUDIT_FAST_DTYPES`` says otherwise."""
    import torch

    name = _name(dtype)
    if name not in LOW_PRECISION:
        return True
    where = torch.device(device)
    if where.type == "cuda":
        if name == "float16":
            return True
        if where.index is None:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        with torch.cuda.device(where.index):  # cuda:N asks GPU N, which may be another generation than GPU 0
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    kind = where.type
    if kind != "cpu":
        return False
    forced = forced_fast_dtypes()
    if forced is not None:
        return name in forced
    return _cpu_native(name)


def forced_fast_dtypes() -> frozenset[str] | None:
    """``UNLEARN_AUDIT_FAST_DTYPES`` parsed, or None when it is not set. A name it does not know is bad
    input, not a silent "nothing is fast": the command line checks it before any work (``cli/main.py``)."""
    value = os.environ.get(FAST_DTYPES_ENV)
    if value is None:
        return None
    names = {t.strip() for t in value.split(",")} - {"", "none"}
    unknown = sorted(names - set(LOW_PRECISION))
    if unknown:
        from .errors import InputError

        raise InputError(f"{FAST_DTYPES_ENV}={value!r}: unknown dtype {unknown[0]!r}; "
                         "give bfloat16, float16, both separated by a comma, or none")
    return frozenset(names)


def fast_or_float32(dtype, device: str = "cpu") -> str:
    """``dtype`` where ``device`` computes it fast, else float32 (the exact path)."""
    name = _name(dtype)
    return name if computes_fast(name, device) else "float32"


def hardware() -> dict:
    import torch

    return {"machine": platform.machine(), "processor": platform.processor() or None, "cpus": usable_cpus(),
            "cpu_model": cpu_model(), "cpu_capability": cpu_capability(),
            "fast_dtypes": {d: computes_fast(d, "cpu") for d in LOW_PRECISION},
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def nvidia_gpus(root: Path = Path("/proc/driver/nvidia/gpus")) -> list[str]:
    """The NVIDIA GPUs the kernel driver lists (``/proc/driver/nvidia/gpus/*/information``), read without
    importing torch or starting CUDA; empty without an NVIDIA driver, and off Linux."""
    names = []
    for info in sorted(root.glob("*/information")):
        try:
            lines = info.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        names += [line.split(":", 1)[1].strip() for line in lines if line.startswith("Model:")]
    return names


def devices_seen() -> str:
    """The devices ``--device`` chooses from, told without importing torch (two seconds on a CPU machine,
    which ``--version`` should not cost): the CPU, then the GPUs. A torch build whose version says ``+cpu``
    sees no GPU; otherwise the GPUs are those the NVIDIA driver lists, which is what a CUDA build of torch
    sees unless ``CUDA_VISIBLE_DEVICES`` hides some (shown when set) or the driver is too old for it."""
    from .versions import installed_version

    cpu = f"cpu ({cpu_model()}, {usable_cpus()} usable CPUs)"
    version = installed_version("torch")
    if version is None:
        return f"{cpu}; no GPU: torch is not installed"
    if version.partition("+")[2].startswith("cpu"):
        return f"{cpu}; no GPU: torch {version} is a CPU-only build"
    gpus = nvidia_gpus()
    if not gpus:
        return f"{cpu}; no GPU: the NVIDIA driver lists none"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return f"{cpu}; cuda: {', '.join(gpus)}" + (f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else "")


def describe_cpu() -> str:
    """One line for benchmark output and logs: ``AMD EPYC (torch CPU capability AVX2, bfloat16 slow)``."""
    fast = [d for d in LOW_PRECISION if computes_fast(d, "cpu")]
    return (f"{cpu_model()} (torch CPU capability {cpu_capability()}, "
            f"{' and '.join(fast) + ' fast' if fast else 'bfloat16 and float16 slow'}, {usable_cpus()} usable CPUs)")
