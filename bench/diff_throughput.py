"""Throughput and memory of ``unlearn-audit diff``, which streams two checkpoints one tensor at a time.

    python bench/diff_throughput.py [--hidden 2048] [--layers 8] [--schemes rtn-int4,nf4,gguf-q4_0]

Builds a random Llama of the given size (no download), saves it and a slightly perturbed copy (one
small update per weight, like an unlearning step) as safetensors, then runs the same code path as the
``diff`` command and prints GB read per second and the peak resident memory next to the checkpoint
size: bounded memory means the peak stays far below two checkpoints' worth.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def _save(model: LlamaForCausalLM, path: Path) -> int:
    model.save_pretrained(path, safe_serialization=True)
    (path / "tokenizer_config.json").write_text("{}")
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--schemes", default="rtn-int4,nf4,gguf-q4_0")
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32000, hidden_size=args.hidden, intermediate_size=int(2.6875 * args.hidden),
                      num_hidden_layers=args.layers, num_attention_heads=16, num_key_value_heads=16)
    with tempfile.TemporaryDirectory() as tmp:
        model = LlamaForCausalLM(cfg)
        size = _save(model, Path(tmp) / "a")
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p).sign() * 1e-4)  # one AdamW-sized step on every weight
        _save(model, Path(tmp) / "b")
        del model
        # The diff runs in a child process so that its peak memory is its own, not the builder's.
        # The child reports its own peak from VmHWM (Linux): getrusage's maxrss survives exec and would
        # still hold the parent's peak from before the fork.
        code = ("import json,sys; from pathlib import Path; from unlearn_audit.quantize.forensics import diff; "
                "from unlearn_audit.quantize.registry import parse_schemes; "
                "hwm = lambda: int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024; "
                "r = hwm(); d = diff(Path(sys.argv[1]), Path(sys.argv[2]), parse_schemes(sys.argv[3])); "
                "d['rss_before_mb'] = r; d['rss_peak_mb'] = hwm(); print(json.dumps(d))")
        t = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code, f"{tmp}/a", f"{tmp}/b", args.schemes],
                              check=True, capture_output=True, text=True)
        wall = time.perf_counter() - t
        result = json.loads(done.stdout)
    from unlearn_audit.machine import cpu_capability, cpu_model

    print(json.dumps({
        "cpu_model": cpu_model(), "cpu_capability": cpu_capability(),
        "checkpoint_mb": round(size / 1e6, 1), "schemes": args.schemes, "wall_s_with_startup": round(wall, 2),
        "diff_s": result["seconds"], "linear_weights_read_gb": round(result["bytes_read"] / 1e9, 3),
        "read_gb_per_s": result["gb_per_s"], "rss_after_imports_mb": round(result["rss_before_mb"]),
        "rss_peak_mb": round(result["rss_peak_mb"]),
        "code_overlap": {k: round(v["code_overlap"], 4) for k, v in result["schemes"].items() if v["status"] == "measured"},
    }, indent=2))


if __name__ == "__main__":
    main()
