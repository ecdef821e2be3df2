"""Unlearning settings against 4-bit quantization, on the demo's target: the search behind the demo's
"paper numerics" scenario (README, "The demo, and what it found").

    python bench/paper_numerics.py --setting bfloat16:npo_klr:1e-5:50 --setting float32:ga_gdr:2e-4:12

A setting is ``DTYPE:METHOD:LR:STEPS[:COMPUTE]`` (α = 1, β = 0.1, batch 8 forget + 8 retain, seed 0;
DTYPE ``bfloat16`` is bfloat16-stored AdamW with no float32 master copy, as the paper's Trainer ran).
COMPUTE, for bfloat16 only: ``bfloat16`` (bf16 matmuls and AdamW arithmetic), ``float32`` (float32
arithmetic, weights and moments rounded to bfloat16 after every step), or ``auto`` (the default: what
this CPU computes fast, ``unlearn_audit.machine``). Running one setting both ways compares the two paths.

``--model DIR --data DIR`` runs the same measurements on another target (a bfloat16 or float32
checkpoint) and its ``forget.jsonl``, ``retain.jsonl`` and ``holdout.jsonl``: for instance the test
suite's tiny memoriser, small enough for bfloat16 arithmetic on a CPU without bfloat16 instructions. Each unlearned
model is cached under ``$XDG_CACHE_HOME/unlearn-audit-bench/paper-*``, keyed by the demo's models. For
the target and every setting, under each scheme (default fp32, rtn-int8, rtn-int4, fp4, nf4; ``fp4`` writes the same weights as
bitsandbytes' FP4 quantizer, at float32 speed), it measures what an audit would:

* forget VerbMem (MUSE: ROUGE-L F1 of the greedy continuation of each forget document's first 32
  tokens) and its retention, unlearned ÷ target under the same scheme (the paper's Table 1 ratio);
* the Min-K% 40 AUC of forget against holdout (MUSE's direction: ≈ 0 remembers, ≈ 0.5 never saw it);
* the weight forensics against the target: the share of weights that changed at all, the median |w| of
  those, and under each grid the share of changed weights whose cell did not change.

Prints one JSON object per setting and a Markdown table. The whole audit (KnowMem, intervals, the
verdict) is the ``unlearn-audit audit`` command the README gives beside the chosen setting; this script
is the cheaper search that chose it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from unlearn_audit.benchmark.scenario import Recipe, build_models, write_data
from unlearn_audit.data import load_texts
from unlearn_audit.machine import describe_cpu
from unlearn_audit.models.hf import HFModel
from unlearn_audit.models.loading import load_checkpoint, open_checkpoint
from unlearn_audit.probes import mink, verbmem
from unlearn_audit.quantize import forensics
from unlearn_audit.quantize.registry import get_scheme
from unlearn_audit.remediate.run import run_unlearning
from unlearn_audit.remediate.unlearn import UnlearnConfig, bf16_compute, needs_original

SCHEMES = "fp32,rtn-int8,rtn-int4,fp4,nf4"  # fp4: bit-identical to bitsandbytes' FP4 weights, at float32 speed


def bench_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "unlearn-audit-bench"


def parse(setting: str) -> UnlearnConfig:
    dtype, method, lr, steps, *compute = setting.split(":")
    return UnlearnConfig(method, lr=float(lr), steps=int(steps), batch_size=8, alpha=1.0, train_dtype=dtype,
                         bf16_compute=compute[0] if compute else "auto")


def build(cfg: UnlearnConfig, target: Path, files: dict[str, Path], key: str) -> Path:
    """The unlearned model, written by the same ``run_unlearning`` as the ``unlearn`` command and the demo."""
    compute = f"-{bf16_compute('cpu', cfg.bf16_compute)}" if cfg.train_dtype == "bfloat16" else ""
    out = bench_root() / f"paper-{key}-{cfg.train_dtype}{compute}-{cfg.method}-{cfg.lr:g}-{cfg.steps}"
    if (out / "config.json").is_file():
        return out
    original = load_checkpoint(target, "original") if needs_original(cfg.method) else None
    t = time.perf_counter()
    run_unlearning(load_checkpoint(target, "start"), original, load_texts(files["forget"]), load_texts(files["retain"]), cfg,
                   None, out, on_step=lambda i, n, v: print(f"  step {i}/{n} loss {v:.3f}", file=sys.stderr) if i % 10 == 0 or i == n else None)
    print(f"  unlearned in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return out


def probe(path: Path, schemes: list[str], items, seqs, batch: int) -> dict:
    ckpt = open_checkpoint(path)
    rows = {}
    for name in schemes:
        model = get_scheme(name).build(ckpt)  # a new float32 model, or bitsandbytes' own
        hf = HFModel(name, model, ckpt.tokenizer, batch)
        vm = verbmem.run(hf, ckpt.tokenizer, items, "forget").values
        scores = {s: [mink.min_k(t.logprobs, 0.4) for t in hf.token_scores(seqs[s])] for s in ("forget", "holdout")}
        rows[name] = {"verbmem": float(np.mean(vm)), "auc": mink.auc(np.array(scores["forget"]), np.array(scores["holdout"]))}
        del model, hf
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--setting", action="append", required=True, help="DTYPE:METHOD:LR:STEPS (repeatable)")
    ap.add_argument("--schemes", default=SCHEMES)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--model", type=Path, help="another target checkpoint (default: the demo's, built if needed)")
    ap.add_argument("--data", type=Path, help="with --model: the directory of its forget/retain/holdout .jsonl")
    args = ap.parse_args()
    if (args.model is None) != (args.data is None):
        ap.error("--model and --data go together")
    torch.manual_seed(0)
    print(f"CPU: {describe_cpu()}; torch {torch.__version__}, {torch.get_num_threads()} threads", file=sys.stderr)
    if args.model is None:
        recipe = Recipe()
        key = recipe.key()
        files = write_data(recipe, bench_root() / "data")
        paths = build_models(recipe, files, log=lambda m: print(m, file=sys.stderr))
    else:
        files = {k: args.data / f"{k}.jsonl" for k in ("forget", "retain", "holdout")}
        paths = {"target": args.model.resolve()}
        key = hashlib.sha256(str(paths["target"]).encode()).hexdigest()[:12]
    texts = {k: list(load_texts(files[k]).texts) for k in ("forget", "retain", "holdout")}
    tok = open_checkpoint(paths["target"]).tokenizer
    items, _ = verbmem.prepare(tok, texts["forget"])
    seqs = {s: mink.prepare(tok, texts[s], None)[0] for s in ("forget", "holdout")}
    schemes = args.schemes.split(",")
    grids = [get_scheme(s) for s in schemes if get_scheme(s).bits and get_scheme(s).bits < 32]
    bench_root().mkdir(parents=True, exist_ok=True)
    cached = bench_root() / f"paper-{key}-target-{'_'.join(schemes)}.json"
    target = json.loads(cached.read_text()) if cached.is_file() else probe(paths["target"], schemes, items, seqs, args.batch_size)
    cached.write_text(json.dumps(target))
    table = []
    for setting in args.setting:
        cfg = parse(setting)
        t = time.perf_counter()
        path = build(cfg, paths["target"], files, key)
        rows = probe(path, schemes, items, seqs, args.batch_size)
        fx = forensics.measure(forensics.checkpoint_pairs(paths["target"], path, {}), grids)
        numerics = json.loads((path / "unlearning.json").read_text()).get("numerics")
        result = {"setting": setting, "numerics": numerics, "seconds": round(time.perf_counter() - t), "changed_fraction": fx["changed_fraction"],
                  "median_abs_w_changed": fx["median_abs_w_changed"],
                  "same_cell": {k: v.get("changed_same_cell") for k, v in fx["schemes"].items()},
                  "code_overlap": {k: v.get("code_overlap") for k, v in fx["schemes"].items()},
                  "schemes": {k: {**v, "retention": v["verbmem"] / target[k]["verbmem"]} for k, v in rows.items()}}
        print(json.dumps(result), flush=True)
        table.append(result)
    print("\n| setting | scheme | VerbMem forget (target) | retention | AUC (target) | changed weights: same cell |")
    print("|---|---|---|---|---|---|")
    for r in table:
        for k, v in r["schemes"].items():
            cell = r["same_cell"].get(k)
            print(f"| {r['setting']} | {k} | {v['verbmem']:.3f} ({target[k]['verbmem']:.3f}) | {v['retention']:.0%} | "
                  f"{v['auc']:.3f} ({target[k]['auc']:.3f}) | {'-' if cell is None else f'{cell:.2%}'} |")
        print(f"| {r['setting']} | weights changed | {r['changed_fraction']:.2%}, median |w| {r['median_abs_w_changed']:.3g} | | | |")


if __name__ == "__main__":
    main()
