"""``unlearn-audit --version``: the tool's version, the libraries' versions and the devices, read without
importing torch or transformers."""

from __future__ import annotations

import pytest


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
