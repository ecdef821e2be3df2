"""The front door: help, ``--version``, ``schemes`` and ``schema`` answer without importing torch or
transformers, whose imports alone take seconds on a CPU machine. Each command runs in a fresh
interpreter, as from a shell, which then says which of the two it imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import typer

from unlearn_audit.cli import app

HEAVY = ("torch", "transformers")
COMMANDS = sorted(typer.main.get_command(app).commands)
CHILD = """
import json, sys
from unlearn_audit.cli import main
try:
    main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "heavy": sorted(m for m in %r if m in sys.modules)}, f)
""" % (HEAVY,)


def run_fresh(args: list[str], tmp_path, **env) -> tuple[dict, subprocess.CompletedProcess]:
    """``args`` run by the command line in a new interpreter: its exit code and the heavy modules it imported."""
    report = tmp_path / "imported.json"
    done = subprocess.run([sys.executable, "-c", CHILD, str(report), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})
    assert report.exists(), done.stderr
    return json.loads(report.read_text()), done


def test_every_command_is_checked():
    assert {"attest", "audit", "demo", "diff", "quantize", "remediate", "report", "schema", "schemes", "unlearn", "verify"} <= set(COMMANDS)


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["schemes"], ["schema"], *[[c, "--help"] for c in COMMANDS]],
                         ids=lambda a: " ".join(a))
def test_the_front_door_imports_neither_torch_nor_transformers(args, tmp_path):
    result, done = run_fresh(args, tmp_path)
    assert result["code"] in (0, None), done.stderr
    assert done.stdout.strip()
    assert result["heavy"] == [], f"{' '.join(args)} imported {result['heavy']}"


def test_a_misspelt_fast_dtypes_is_still_refused_first_and_cheaply(tmp_path):
    result, done = run_fresh(["schemes"], tmp_path, UNLEARN_AUDIT_FAST_DTYPES="bf16")
    assert result == {"code": 2, "heavy": []}
    assert done.stderr.strip().splitlines() == [
        "unlearn-audit: error: UNLEARN_AUDIT_FAST_DTYPES='bf16': unknown dtype 'bf16'; "
        "give bfloat16, float16, both separated by a comma, or none"]
    assert done.stdout == ""


def test_version_names_the_tool_the_libraries_and_the_devices(monkeypatch, capsys):
    from importlib import metadata

    import unlearn_audit
    from unlearn_audit.cli import main
    from unlearn_audit.machine import cpu_model, usable_cpus

    real = metadata.version

    def version(dist: str) -> str:
        if dist == "bitsandbytes":
            raise metadata.PackageNotFoundError(dist)
        return real(dist)

    monkeypatch.setattr(metadata, "version", version)
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:4] == [f"unlearn-audit {unlearn_audit.__version__}", f"torch {real('torch')}",
                       f"transformers {real('transformers')}", "bitsandbytes not installed"]
    assert len(out) == 5 and out[4].startswith(f"devices: cpu ({cpu_model()}, {usable_cpus()} usable CPUs); ")


def test_the_gpus_come_from_the_driver_and_a_cpu_build_of_torch_sees_none(monkeypatch, tmp_path):
    from unlearn_audit import machine, versions

    for bus, model in (("0000:17:00.0", "NVIDIA H200"), ("0000:65:00.0", "NVIDIA A100-SXM4-80GB")):
        (tmp_path / bus).mkdir()
        (tmp_path / bus / "information").write_text(f"Model: \t\t {model}\nIRQ:   \t\t 32\nBus Type: \t PCIe\n")
    assert machine.nvidia_gpus(tmp_path) == ["NVIDIA H200", "NVIDIA A100-SXM4-80GB"]
    assert machine.nvidia_gpus(tmp_path / "absent") == []

    torch_version = {"torch": "2.13.0+cpu"}
    monkeypatch.setattr(versions, "installed_version", torch_version.get)
    monkeypatch.setattr(machine, "nvidia_gpus", lambda: ["NVIDIA H200"])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    cpu = f"cpu ({machine.cpu_model()}, {machine.usable_cpus()} usable CPUs); "
    assert machine.devices_seen() == cpu + "no GPU: torch 2.13.0+cpu is a CPU-only build"
    torch_version["torch"] = "2.13.0"
    assert machine.devices_seen() == cpu + "cuda: NVIDIA H200"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert machine.devices_seen() == cpu + "cuda: NVIDIA H200 (CUDA_VISIBLE_DEVICES=1)"
    monkeypatch.setattr(machine, "nvidia_gpus", lambda: [])
    assert machine.devices_seen() == cpu + "no GPU: the NVIDIA driver lists none"
    del torch_version["torch"]
    assert machine.devices_seen() == cpu + "no GPU: torch is not installed"


def test_a_command_that_loads_a_model_still_quiets_transformers(tmp_path, capsys):
    import logging

    from transformers.utils import logging as hf_logging

    from conftest import one_line_error, run

    hf_logging.set_verbosity_warning()
    one_line_error(*run(["quantize", tmp_path, "--scheme", "bogus", "--out", tmp_path / "q"], capsys), "unknown scheme 'bogus'")
    assert hf_logging.get_verbosity() == logging.ERROR
