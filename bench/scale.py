"""The audit's peak memory and time at real model sizes, on random Llama checkpoints built from a config.

    python bench/scale.py --shape 250m|1.1b|3b|7b|8b [--workdir DIR] [--schemes fp32,rtn-int4,nf4,gguf-q4_0]
        [--dtype auto|float32|bfloat16] [--device cpu|cuda] [--n 4] [--doc-tokens N] [--src PATH] [--build-only]

Builds three bfloat16 safetensors checkpoints of the shape under ``--workdir`` (default
``~/.cache/unlearn-audit-bench/SHAPE``; reused once complete), tensor by tensor and shard by shard, never a
whole model in memory: ``original`` (seed 0), ``audited`` (the original plus one sign step of 1e-3 of each
tensor's std, like an unlearning update) and ``reference`` (seed 1), each with the same small tokenizer.
Then runs ``unlearn-audit audit`` on them in a child process and prints its own peak RSS next to the
checkpoint size and parameter count, its wall time and report.json's per-stage timings.
``--build-only`` instead loads the audited checkpoint and times each scheme's ``build`` alone, the way that
version's audit builds a variant (into its one resident model where ``build`` takes one).

``--src PATH`` puts PATH first on the children's PYTHONPATH, to measure another checkout (a git worktree of
an older commit) with the same script. Measure pinned to one core (the children run under
``taskset -c 1`` with one thread, or the core ``--cpu`` names, except on CUDA) and compare ratios of
runs made side by side in one sitting, not absolute numbers across machines or days.
"""

from __future__ import annotations

import argparse
import collections
import gc
import inspect
import json
import multiprocessing
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {  # 250m: 14 layers rather than 16, for ~250M parameters with untied embeddings
    "250m": dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=14, num_attention_heads=16,
                 num_key_value_heads=16, vocab_size=32000, tie_word_embeddings=False),
    "1.1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                 num_key_value_heads=4, vocab_size=32000, tie_word_embeddings=False),  # TinyLlama-1.1B
    "3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0),  # Llama-3.2-3B
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32, vocab_size=32000, tie_word_embeddings=False),  # Llama-2-7B
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False, rope_theta=500000.0),  # Llama-3-8B
}
ROLES = {"original": (0, False), "audited": (0, True), "reference": (1, False)}  # seed, perturbed
INDEX, SHARD_BYTES = "model.safetensors.index.json", 2 * 10**9
WORDS = ("the a river city old young teacher farmer letter garden winter morning bright quiet small large "
         "walked found wrote opened carried watched remembered near under across before after slowly often "
         "house road window bridge market story song friend mother brother village mountain station "
         "green cold warm long late early and but while because every each other").split()

# The audit runs through its [project.scripts] entry point (unlearn_audit.cli:main) in this wrapper, so the
# peak is the audit's own: VmHWM of this process. getrusage's maxrss survives exec and may hold the parent's.
_WRAPPER = """
import atexit, json, sys
path = sys.argv.pop(1)
def peak():
    rss = int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) * 1024
    torch = sys.modules.get('torch')
    cuda = torch is not None and torch.cuda.is_available()
    gpu = torch.cuda.max_memory_allocated() if cuda else None
    reserved = torch.cuda.max_memory_reserved() if cuda else None  # what the process holds of the GPU
    open(path, 'w').write(json.dumps({'rss': rss, 'gpu': gpu, 'gpu_reserved': reserved}))
atexit.register(peak)
from unlearn_audit.cli import main
sys.argv[0] = 'unlearn-audit'
main()
"""


def _hwm() -> int:
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1]) * 1024


def _texts(n: int, words_per_text: int | None = None) -> tuple[list[str], list[str]]:
    """2n distinct plain-English texts of 30-50 words, or about ``words_per_text`` (seed 0): the first n
    are the forget set. Long ones (``--doc-tokens``) are what MUSE's 2048-token documents cost in
    activation and attention memory; the tokenizer is trained on these words, about a token each."""
    rng, texts = random.Random(0), []
    while len(texts) < 2 * n:
        words, target = [], words_per_text or rng.randint(30, 50)
        while len(words) < target:
            sentence = rng.choices(WORDS, k=rng.randint(6, 12))
            words += [sentence[0].capitalize(), *sentence[1:-1], sentence[-1] + "."]
        if (text := " ".join(words)) not in texts:
            texts.append(text)
    return texts[:n], texts[n:]


def _config(shape: str) -> LlamaConfig:
    return LlamaConfig(max_position_embeddings=2048, bos_token_id=0, eos_token_id=1, pad_token_id=2,
                       dtype="bfloat16", **SHAPES[shape])


def _shapes(cfg: LlamaConfig) -> dict[str, torch.Size]:
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    return {n: p.shape for n, p in model.named_parameters()}  # a tied lm_head is the embedding, listed once


def _complete(path: Path) -> bool:
    index = path / INDEX  # written last
    return index.exists() and all((path / f).exists() for f in set(json.loads(index.read_text())["weight_map"].values()))


def _tensor(shape: torch.Size, gen: torch.Generator, noise: torch.Generator | None) -> torch.Tensor:
    if len(shape) == 1:
        return torch.ones(shape, dtype=torch.bfloat16)  # RMSNorm weights (std 0: the perturbation leaves them)
    w = torch.empty(shape, dtype=torch.bfloat16).normal_(0, 0.02, generator=gen)
    if noise is None:
        return w
    w = w.float()
    return (w + torch.randn(shape, generator=noise).sign() * 1e-3 * w.std()).to(torch.bfloat16)


def _write(path: Path, cfg: LlamaConfig, shapes: dict[str, torch.Size], seed: int, perturbed: bool, tok) -> None:
    """One checkpoint as HF writes it: shards of at most SHARD_BYTES, each generated, saved and freed in turn."""
    path.mkdir(parents=True, exist_ok=True)
    gen, noise = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(2) if perturbed else None
    shards, size = [[]], 0  # planned from the shapes first, so each file's name can say how many there are
    for name, shape in shapes.items():
        if shards[-1] and size + 2 * shape.numel() > SHARD_BYTES:
            shards, size = [*shards, []], 0
        shards[-1].append(name)
        size += 2 * shape.numel()
    weight_map = {}
    for i, names in enumerate(shards, 1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file({n: _tensor(shapes[n], gen, noise) for n in names}, path / file, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, file))
    cfg.to_json_file(path / "config.json")
    tok.save_pretrained(path)
    index = {"metadata": {"total_size": sum(2 * s.numel() for s in shapes.values())}, "weight_map": weight_map}
    (path / f"{INDEX}.tmp").write_text(json.dumps(index, indent=2))
    (path / f"{INDEX}.tmp").rename(path / INDEX)


def _build(workdir: Path, shape: str, texts: list[str]) -> None:
    from unlearn_audit.benchmark.tiny import train_tokenizer

    tok, cfg = train_tokenizer(texts, vocab_size=1024), _config(shape)
    shapes = _shapes(cfg)
    for role, (seed, perturbed) in ROLES.items():
        if not _complete(workdir / role):
            print(f"building {workdir / role}", file=sys.stderr)
            _write(workdir / role, cfg, shapes, seed, perturbed, tok)


def _measure_builds(args, workdir: Path) -> None:
    """Child of --build-only: each scheme's build of the audited checkpoint, one at a time, with its own peak."""
    from unlearn_audit.models.loading import load_checkpoint
    from unlearn_audit.quantize.base import Scheme
    from unlearn_audit.quantize.registry import get_scheme

    t = time.perf_counter()
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32  # as --dtype auto computes them there
    ckpt = load_checkpoint(workdir / "audited", "audited", device=args.device, dtype=dtype)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    out = {"load_s": round(time.perf_counter() - t, 2), "load_peak_rss_gib": round(_hwm() / 2**30, 2), "builds": {}}
    weights = sum(m.weight.numel() for n, m in ckpt.model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head")
    peak = _hwm()
    # As each version's audit builds: into the one resident model where ``build`` takes one (here the
    # loaded model itself), else a copy of the loaded model per scheme.
    into = {"into": ckpt.model} if "into" in inspect.signature(Scheme.build).parameters else {}
    for name in args.schemes.split(","):
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM restarts from the current RSS
        t = time.perf_counter()
        model = get_scheme(name).build(ckpt, **into)
        s = time.perf_counter() - t
        del model
        gc.collect()
        out["builds"][name] = {"s": round(s, 2), "mweights_per_s": round(weights / s / 1e6, 2), "peak_rss_gib": round(_hwm() / 2**30, 2),
                               **({"peak_gpu_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2)}
                                  if args.device == "cuda" else {})}
        peak = max(peak, _hwm())
    Path(args.result).write_text(json.dumps({"quantized_weights": weights, "peak_rss_gib": round(peak / 2**30, 2), **out}))


def _child(args, cmd: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    env, prefix = dict(os.environ), []
    if args.src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.src, env.get("PYTHONPATH")]))
    if args.device != "cuda":
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        prefix = ["taskset", "-c", str(args.cpu)]
    t = time.perf_counter()
    # The child's progress lines pass straight through, so a run killed by an outer time limit still
    # shows how far it got (loading, the reference, which variant); the last lines also end an error.
    tail: collections.deque[str] = collections.deque(maxlen=40)
    with subprocess.Popen([*prefix, sys.executable, *cmd], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True) as child:
        for line in child.stderr:
            sys.stderr.write(line)
            tail.append(line)
    done = subprocess.CompletedProcess(child.args, child.returncode, None, "".join(tail))
    wall = time.perf_counter() - t
    if done.returncode in (2, 3) or done.returncode > 4:  # 0, 1 and 4 are verdicts (PASS, FAIL, INCONCLUSIVE), results here
        sys.exit(f"child exited {done.returncode}:\n{done.stderr}")
    return done, wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=SHAPES, required=True)
    ap.add_argument("--workdir")
    ap.add_argument("--schemes", default="fp32,rtn-int4,nf4,gguf-q4_0")
    ap.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto")  # as `audit` computes
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--doc-tokens", type=int, help="documents of about this many tokens (MUSE's are 2048) instead of 30-50")
    ap.add_argument("--cpu", type=int, default=1, help="the core the child is pinned to")
    ap.add_argument("--src")
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--result")  # set only in the --build-only child
    args = ap.parse_args()
    if args.src:
        sys.path.insert(0, args.src)  # for the builder too, which trains the tokenizer with this checkout's code
    workdir = Path(args.workdir or Path.home() / ".cache" / "unlearn-audit-bench" / args.shape).resolve()
    if args.result:
        return _measure_builds(args, workdir)
    forget, holdout = _texts(args.n, args.doc_tokens)
    workdir.mkdir(parents=True, exist_ok=True)
    for name, texts in (("forget", forget), ("holdout", holdout)):
        (workdir / f"{name}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    if not all(_complete(workdir / role) for role in ROLES):
        # In a child process, so the builder's memory never counts; the audit runs in a child of its own anyway.
        builder = multiprocessing.get_context("spawn").Process(target=_build, args=(workdir, args.shape, forget + holdout))
        builder.start()
        builder.join()
        if builder.exitcode:
            sys.exit(f"building the checkpoints failed (exit {builder.exitcode})")
    params = sum(s.numel() for s in _shapes(_config(args.shape)).values())
    ckpt_bytes = sum(f.stat().st_size for f in (workdir / "audited").glob("*.safetensors"))
    from unlearn_audit.machine import cpu_capability, cpu_model

    head = {"cpu_model": cpu_model(), "cpu_capability": cpu_capability(),
            "shape": args.shape, "parameters": params, "checkpoint_bf16_bytes": ckpt_bytes, "schemes": args.schemes}
    with tempfile.TemporaryDirectory() as tmp:
        if args.build_only:
            _, wall = _child(args, [__file__, "--shape", args.shape, "--workdir", str(workdir), "--schemes", args.schemes,
                                    "--device", args.device, "--build-only", "--result", f"{tmp}/builds.json"])
            result = {**head, "device": args.device, "wall_s": round(wall, 1), **json.loads(Path(tmp, "builds.json").read_text())}
            print(json.dumps(result, indent=2))
            rates = ", ".join(f"{k} {v['s']} s ({v['mweights_per_s']} M/s)" for k, v in result["builds"].items())
            print(f"| {args.shape} | {params / 1e6:.1f}M | build-only | {rates} | {result['peak_rss_gib']} GiB |")
            return
        done, wall = _child(args, ["-c", _WRAPPER, f"{tmp}/peak.json", "audit", str(workdir / "audited"),
                                   "--forget", str(workdir / "forget.jsonl"), "--holdout", str(workdir / "holdout.jsonl"),
                                   "--original", str(workdir / "original"), "--reference", str(workdir / "reference"),
                                   "--schemes", args.schemes, "--out", f"{tmp}/out", "--format", "json",
                                   "--device", args.device, "--dtype", args.dtype,
                                   # nothing from an earlier run: every model is scored in this one
                                   "--fresh", "--cache-dir", f"{tmp}/cache"])
        peak = json.loads(Path(tmp, "peak.json").read_text())
        report = json.loads(Path(tmp, "out", "report.json").read_text())
    gpu = round(peak["gpu"] / 2**30, 2) if peak["gpu"] is not None else None
    reserved = round(peak["gpu_reserved"] / 2**30, 2) if peak.get("gpu_reserved") is not None else None
    result = {**head, "dtype": args.dtype, "device": args.device, "peak_rss_gib": round(peak["rss"] / 2**30, 2),
              "peak_rss_per_checkpoint": round(peak["rss"] / ckpt_bytes, 2), "peak_rss_bytes_per_parameter": round(peak["rss"] / params, 2),
              "peak_gpu_gib": gpu, "peak_gpu_reserved_gib": reserved, "doc_tokens": args.doc_tokens,
              "wall_s": round(wall, 1), "timings": report["timings"], "verdict": report["verdict"],
              "exit_code": done.returncode}
    print(json.dumps(result, indent=2))
    print(f"| {args.shape} | {params / 1e6:.1f}M | {ckpt_bytes / 1e9:.2f} GB | {args.dtype} | {args.device} | {args.schemes} | "
          f"{result['peak_rss_gib']} GiB | {result['peak_rss_per_checkpoint']}× | {result['peak_rss_bytes_per_parameter']} B | "
          f"{gpu if gpu is not None else '–'} / {reserved if reserved is not None else '–'} | {result['wall_s']} s | {result['verdict']} |")


if __name__ == "__main__":
    main()
