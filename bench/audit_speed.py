"""The audit's speed against a MUSE-style baseline, on the same model, data and variants.

    python bench/audit_speed.py [--model DIR] [--n 16] [--schemes fp32,rtn-int8,rtn-int4] [--batch-size 16]

    python bench/audit_speed.py --modes baseline,tool      # a subset of the modes
    python bench/audit_speed.py --memorise 10 --modes tool,prefix-only,no-draft
                                # the model fine-tuned on the forget documents first: the case an audit must catch

The modes run one after another, each in its own process (so each peak RSS is its own):

* ``baseline``: a loop written the way MUSE's published evaluation code runs: one ``generate`` call per
  sample at batch size 1 for VerbMem and KnowMem, stop strings applied after generation, and a separate
  forward pass for each membership attack (LOSS, zlib, Min-K% for all k, Min-K%++ for all k);
* ``tool``: unlearn-audit's own probes as the audit runs them: sorted, batched, KV-cached greedy
  decoding that verifies the previous variant's output as a draft and encodes KnowMem's few-shot prefix
  once per split (models/decode.py); one forward pass per text feeding every attack;
* ``prefix-only``: the same with the shared prefix but no drafts; ``no-draft``: neither (transformers'
  ``generate`` with stop strings inside it, the audit's ``--no-draft``). Each idea's gain is the ratio
  of neighbouring columns; the tool's draft tokens offered and accepted are printed per scheme;
* ``bare``: only the batched forward and ``generate`` calls of the no-draft path, with no metric code.
  Overhead = no-draft time / bare time.

Every tool mode must agree with the baseline: identical greedy outputs (the first difference is printed), score attacks within 1e-6. The default
model is the demo's base model (SmolLM2-135M, fp32) from the demo cache; any local HF directory works.
The data are the built-in benchmark's first ``--n`` forget and holdout documents and QA pairs.
"""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from unlearn_audit.benchmark import bios
from unlearn_audit.benchmark.scenario import cache_root
from unlearn_audit.data import QASet, TextSet
from unlearn_audit.machine import cpu_capability, cpu_model, usable_cpus
from unlearn_audit.models.base import TokenScores
from unlearn_audit.models.decode import DraftBook
from unlearn_audit.models.hf import POSITIONS, HFModel, strip_after_eos
from unlearn_audit.models.loading import load_checkpoint
from unlearn_audit.pipeline.types import AuditConfig, AuditData
from unlearn_audit.pipeline.workload import build_workload
from unlearn_audit.probes import knowmem, mink, verbmem
from unlearn_audit.probes.base import definitions, rouge_l_f1
from unlearn_audit.quantize.registry import get_scheme

#: The tool's decoding modes: (draft from the previous variant, encode the shared prefix once).
TOOL_MODES = {"tool": (True, True), "prefix-only": (False, True), "no-draft": (False, False)}
MODES = ("baseline", *TOOL_MODES, "bare")


def _hwm_mb() -> float:
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1]) / 1024


def _data(n: int) -> AuditData:
    split = bios.generate(n, n, n, qa_per_person=1, seed=0)
    text = lambda k: TextSet(f"bench:{k}", "-", tuple(split.texts[k]))  # noqa: E731
    qa = lambda k: QASet(f"bench:{k}_qa", "-", tuple(tuple(p) for p in split.qa[k]))  # noqa: E731
    return AuditData(forget=text("forget"), holdout=text("holdout"), retain=text("retain"),
                     forget_qa=qa("forget"), retain_qa=qa("retain"), holdout_qa=qa("holdout"))


# ---- the baseline: MUSE's evaluation loop, written out ----------------------------------------------

def _generate_one(model, tok, prompt, max_new):
    out = model.generate(torch.tensor([list(prompt)]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                         do_sample=False, max_new_tokens=max_new, pad_token_id=tok.pad_token_id)
    return strip_after_eos(out[0, len(prompt):].tolist(), tok.eos_token_id, tok.pad_token_id)


def _forward_one(model, ids):
    logits = model(torch.tensor([list(ids)])).logits[0, :-1].float()
    logp = torch.log_softmax(logits, -1)
    return logp, logp.gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).squeeze(-1)


def _texts(tok, outs, knowmem_cut: bool) -> list[str]:
    """Decoded as the probes decode (VerbMem without the clean-up pass; KnowMem then cut at the stops)."""
    if knowmem_cut:
        return [knowmem.cut_at_stop(tok.decode(o, skip_special_tokens=True)) for o in outs]
    return [tok.decode(o, skip_special_tokens=True, clean_up_tokenization_spaces=False) for o in outs]


def baseline(model, tok, work) -> dict:
    ks, spec = definitions()["mink"]["ks"], definitions()["knowmem"]
    out = {"gen": {}, "scores": {}}
    with torch.inference_mode():
        for split, items in work.verbmem.items():
            texts = _texts(tok, [_generate_one(model, tok, i.prompt_ids, i.max_new_tokens) for i in items], False)
            out["gen"][("verbmem", split)] = texts
            out["scores"][("verbmem", split)] = [rouge_l_f1(i.reference, t) for i, t in zip(items, texts)]
        for split, items in work.knowmem.items():  # MUSE generates the full budget, then cuts at the stop strings
            texts = _texts(tok, [_generate_one(model, tok, i.prompt_ids, spec["max_new_tokens"]) for i in items], True)
            out["gen"][("knowmem", split)] = texts
            out["scores"][("knowmem", split)] = [rouge_l_f1(i.answer, t) for i, t in zip(items, texts)]
        for split, seqs in work.mink.items():
            sc = out["scores"]
            sc[("loss", split)] = [float(_forward_one(model, s)[1].double().mean()) for s in seqs]
            sc[("zlib", split)] = [float(_forward_one(model, s)[1].double().mean()) / z for s, z in zip(seqs, work.zlib[split])]
            lps = [_forward_one(model, s)[1].double().numpy() for s in seqs]
            for k in ks:
                sc[(f"min_k_{round(k * 100)}", split)] = [mink.min_k(lp, k) for lp in lps]
            for s in seqs:  # Min-K%++: its own pass, with the moments of the next-token distribution
                logp, lp = _forward_one(model, s)
                p = logp.exp()
                mu = (p * logp).sum(-1)
                sigma = ((p * logp.square()).sum(-1) - mu.square()).clamp_min(0).sqrt()
                ts = TokenScores(lp.double().numpy(), mu.double().numpy(), sigma.double().numpy())
                for k in ks:
                    sc.setdefault((f"min_k_pp_{round(k * 100)}", split), []).append(mink.min_k_plus_plus(ts, k))
    return out


# ---- the tool, and the bare calls ----------------------------------------------------------------------

def tool(model, tok, work, batch_size: int, drafts: DraftBook | None = None, share_prefix: bool = False) -> dict:
    """The audit's probe calls, exactly as ``pipeline.variant.probe_all`` makes them: with ``drafts``
    (earlier variants' outputs verified, not decoded) and ``share_prefix`` (KnowMem's few-shot prefix
    encoded once) as the audit runs by default, neither under ``--no-draft``."""
    hf = HFModel("bench", model, tok, batch_size, drafts=drafts, share_prefix=share_prefix)
    out = {"gen": {}, "scores": {}, "decoding": hf.decoding, "probe_s": {}}
    t = time.perf_counter()
    for split, items in work.verbmem.items():
        o = verbmem.run(hf, tok, items, split)
        out["gen"][("verbmem", split)], out["scores"][("verbmem", split)] = list(o.generations), list(o.values)
    out["probe_s"]["verbmem"], t = round(time.perf_counter() - t, 1), time.perf_counter()
    for split, items in work.knowmem.items():
        o = knowmem.run(hf, tok, items, split)
        out["gen"][("knowmem", split)], out["scores"][("knowmem", split)] = list(o.generations), list(o.values)
    out["probe_s"]["knowmem"], t = round(time.perf_counter() - t, 1), time.perf_counter()
    for split, seqs in work.mink.items():
        for o in mink.run(hf, seqs, split, work.zlib[split]):
            out["scores"][(o.metric, split)] = list(o.values)
    out["probe_s"]["scoring"] = round(time.perf_counter() - t, 1)
    return out


def bare(model, tok, work, batch_size: int) -> dict:
    hf = HFModel("bench", model, tok, batch_size)
    spec = definitions()["knowmem"]
    with torch.inference_mode():
        for items in work.verbmem.values():
            hf.greedy([i.prompt_ids for i in items], [i.max_new_tokens for i in items])
        for items in work.knowmem.values():
            hf.greedy([i.prompt_ids for i in items], [spec["max_new_tokens"]] * len(items), spec["stop_strings"])
        for seqs in work.mink.values():
            order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
            for b in range(0, len(order), batch_size):
                batch = [seqs[i] for i in order[b : b + batch_size]]
                width = max(map(len, batch))
                ids = torch.full((len(batch), width), hf.pad_id)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for r, s in enumerate(batch):
                    ids[r, : len(s)], mask[r, : len(s)] = torch.tensor(s), 1
                rows = hf._logit_rows(ids, mask)  # the forward, and the output head on every scored position
                for r, s in enumerate(batch):
                    for a in range(0, len(s) - 1, POSITIONS):
                        rows(r, a, min(len(s) - 1, a + POSITIONS))
    return {}


def _work(ckpt, data: AuditData) -> SimpleNamespace:
    """The audit's own tokenized workload, per probe and split (what every mode below probes)."""
    context = getattr(ckpt.model.config, "max_position_embeddings", None)
    prepared = build_workload(ckpt.tokenizer, context, data, AuditConfig(), []).prepared
    mk = prepared["mink"]
    return SimpleNamespace(verbmem=prepared["verbmem"], knowmem=prepared["knowmem"],
                           mink={s: list(i.sequences) for s, i in mk.items()}, zlib={s: i.zlib_bytes for s, i in mk.items()})


def _memoriser(base: str, n: int, epochs: int) -> Path:
    """``base`` fine-tuned on the first ``n`` forget documents until it recites them: the audited model an
    audit must catch, whose variants mostly agree on the forget set (built once, kept in the cache)."""
    from unlearn_audit.benchmark import training
    from unlearn_audit.models.batch import encode
    from unlearn_audit.models.loading import write_checkpoint

    out = cache_root().parent / "unlearn-audit-bench" / f"memoriser-n{n}-e{epochs}"
    if (out / "config.json").is_file():
        return out
    torch.set_num_threads(usable_cpus())
    ckpt = load_checkpoint(base)
    training.finetune(ckpt.model, encode(ckpt.tokenizer, list(_data(n).forget.texts)), ckpt.tokenizer.pad_token_id,
                      lr=2e-4, epochs=epochs, batch_size=8, warmup=2)
    return write_checkpoint(ckpt.model.eval(), ckpt.tokenizer, out)


def _child(args) -> None:
    torch.set_num_threads(usable_cpus())
    ckpt = load_checkpoint(args.model)
    work = _work(ckpt, _data(args.n))
    timings, results, tokens, book = {}, {}, 0, DraftBook()
    for name in args.schemes.split(","):
        model = get_scheme(name).build(ckpt).eval()
        t = time.perf_counter()
        if args.mode == "baseline":
            results[name] = baseline(model, ckpt.tokenizer, work)
        elif args.mode in TOOL_MODES:
            drafts, share_prefix = TOOL_MODES[args.mode]
            results[name] = tool(model, ckpt.tokenizer, work, args.batch_size, book if drafts else None, share_prefix)
        else:
            results[name] = bare(model, ckpt.tokenizer, work, args.batch_size)
        timings[name] = time.perf_counter() - t
        if args.mode != "bare":
            gen = results[name]["gen"]
            tokens += sum(len(ckpt.tokenizer(g)["input_ids"]) for outs in gen.values() for g in outs)
        del model
    Path(args.result).write_bytes(pickle.dumps({"timings": timings, "results": results, "generated_tokens": tokens,
                                                "scored_tokens": sum(len(s) for s in work.mink["forget"] + work.mink["holdout"]),
                                                "rss_mb": _hwm_mb()}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(cache_root() / "smollm2-135m-fp32"))
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--schemes", default="fp32,rtn-int8,rtn-int4")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--modes", default=",".join(MODES), help="which of the modes to run")
    ap.add_argument("--memorise", type=int, default=0, metavar="EPOCHS",
                    help="first fine-tune the model on the forget documents for EPOCHS epochs (cached), so that it recites them")
    ap.add_argument("--mode", choices=MODES)
    ap.add_argument("--result")
    args = ap.parse_args()
    if args.mode:
        return _child(args)
    if args.memorise:
        args.model = str(_memoriser(args.model, args.n, args.memorise))
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes.split(","):
            res = Path(tmp) / f"{mode}.pkl"
            subprocess.run([sys.executable, __file__, "--mode", mode, "--result", str(res), "--model", args.model, "--n", str(args.n),
                            "--schemes", args.schemes, "--batch-size", str(args.batch_size)], check=True)
            runs[mode] = pickle.loads(res.read_bytes())
    b = runs.get("baseline") or runs["no-draft"]  # the reference for outputs: the baseline, else generate
    same_gen, max_diff, first_diff = {}, 0.0, {}
    for mode in [m for m in runs if m in TOOL_MODES]:
        t, same_gen[mode] = runs[mode], True
        for name in args.schemes.split(","):
            for key, outs in b["results"][name]["gen"].items():
                mine = t["results"][name]["gen"][key]
                if outs != mine and mode not in first_diff:
                    i = next(i for i, (x, y) in enumerate(zip(outs, mine)) if x != y)
                    first_diff[mode] = {"scheme": name, "probe_split": list(key), "item": i, "baseline": outs[i], "tool": mine[i]}
                same_gen[mode] &= outs == mine
            for key, vals in b["results"][name]["scores"].items():
                max_diff = max(max_diff, float(np.max(np.abs(np.array(vals) - np.array(t["results"][name]["scores"][key])))))
    total = {m: sum(r["timings"].values()) for m, r in runs.items()}
    tools = [m for m in runs if m in TOOL_MODES]
    # tokens the model produced or scored (the baseline's repeated attack passes not counted twice)
    model_tokens = b["generated_tokens"] + b["scored_tokens"] * len(args.schemes.split(","))
    print(json.dumps({
        "model": args.model, "documents_per_set": args.n, "schemes": args.schemes, "batch_size": args.batch_size,
        "cpus": usable_cpus(), "cpu_model": cpu_model(), "cpu_capability": cpu_capability(), "date": time.strftime("%Y-%m-%d"),
        "wall_s": {m: round(v, 1) for m, v in total.items()},
        "speedup_vs_baseline": {m: round(total["baseline"] / total[m], 2) for m in tools if "baseline" in total},
        "speedup_vs_no_draft": {m: round(total["no-draft"] / total[m], 2) for m in tools if "no-draft" in total},
        **({"overhead_vs_bare": round(total["no-draft"] / total["bare"], 2)} if {"no-draft", "bare"} <= set(runs) else {}),
        "tokens_per_s": {m: round(model_tokens / total[m]) for m in [*(["baseline"] if "baseline" in runs else []), *tools]},
        "peak_rss_mb": {m: round(r["rss_mb"]) for m, r in runs.items()},
        "identical_greedy_outputs": same_gen, "first_difference": first_diff, "max_score_difference": max_diff,
        "draft_tokens": {m: {name: r["results"][name]["decoding"] for name in args.schemes.split(",")} for m, r in runs.items()
                         if m in TOOL_MODES and TOOL_MODES[m][0]},
        # seconds of each tool mode per scheme in VerbMem and KnowMem decoding and in the scoring pass
        "probe_s": {m: {name: r["results"][name]["probe_s"] for name in args.schemes.split(",")} for m, r in runs.items() if m in TOOL_MODES},
        "per_scheme_s": {m: {k: round(v, 1) for k, v in r["timings"].items()} for m, r in runs.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
