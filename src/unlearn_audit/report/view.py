"""What the HTML and Markdown views show, computed from report.json alone (no model is touched).

The templates only lay out what this module prepares: the summary table with the failing cells
marked, the charts, the evidence with the overlap highlighted, the method and the provenance.
"""

from __future__ import annotations

from markupsafe import Markup

from ..policy import worst
from ..probes.mink import headline, headline_percent
from ..probes.registry import checks as probe_checks
from . import svg
from .console import COLUMNS, bf16_sentence, changed_sentence

# (probe, metric) -> the checks whose failure marks that cell of the summary table
_MARKED_BY: dict[tuple[str, str], set[str]] = {}
for _probe, _spec in probe_checks():
    for _metric in _spec.marks:
        _MARKED_BY.setdefault((_probe, _metric), set()).add(_spec.name)


def fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _results(report: dict) -> dict:
    return {(r["variant"], r["probe"], r["metric"]): r for r in report["results"]}


def _failed(report: dict) -> set[tuple[str, str]]:
    return {(c["variant"], c["check"]) for c in report["checks"] if c["status"] == "FAIL"}


def summary(report: dict) -> dict:
    """Variants × headline metrics with CIs; a cell is marked when the check it feeds failed."""
    res, failed = _results(report), _failed(report)
    cols = [c for c in COLUMNS + [("verbmem", "recovery_vs_fp32", "VerbMem recovery vs fp32", 3)]
            if any((v["name"], c[0], c[1]) in res for v in report["variants"])]
    checks: dict[str, list[dict]] = {}  # per variant, read once: scanning every check per variant is quadratic
    for c in report["checks"]:
        checks.setdefault(c["variant"], []).append(c)
    rows = []
    for v in report["variants"]:
        own = checks.get(v["name"], [])
        row = {"variant": v["name"], "built": v["status"] == "built", "reason": v.get("reason", ""),
               "status": worst([c["status"] for c in own if c.get("required", True)], "–"),
               "informational": any(not c.get("required", True) for c in own),
               "cells": []}
        for probe, metric, label, digits in cols:
            r = res.get((v["name"], probe, metric))
            marked = any((v["name"], check) in failed for check in _MARKED_BY.get((probe, metric), ()))
            row["cells"].append({
                "probe": probe, "metric": metric, "label": label, "failed": bool(r) and marked,
                "value": None if r is None else r["value"], "text": "–" if r is None else fmt(r["value"], digits),
                "ci": "" if r is None or r["ci_low"] is None else f"[{fmt(r['ci_low'], digits)}, {fmt(r['ci_high'], digits)}]",
            })
        rows.append(row)
    return {"columns": [c[2] for c in cols], "rows": rows}


def recovery_chart(report: dict) -> Markup:
    """The paper's finding at a glance: the checked forget metric per scheme, fp32 first."""
    res, failed = _results(report), _failed(report)
    limit = report["config"]["policy"].get("verbmem_gap_max")
    built = [v["name"] for v in report["variants"] if v["status"] == "built"]
    built.sort(key=lambda n: n != "fp32")
    rows = []
    for name in built:
        r = res.get((name, "verbmem", "forget_minus_holdout")) or {}
        rows.append({"label": name, "value": r.get("value"), "ci_low": r.get("ci_low"), "ci_high": r.get("ci_high"),
                     "failed": (name, "verbmem") in failed})
    chart = svg.interval_bars(rows, limit, "VerbMem forget − holdout per scheme",
                              "ROUGE-L F1 gap between forget and holdout continuations, with 95% bootstrap intervals; "
                              "the dashed line is the policy tolerance", lo=-0.1, hi=0.2)
    retention = [{"label": n, **{k: (res.get((n, "verbmem", "retention")) or {}).get(k) for k in ("value", "ci_low", "ci_high")}}
                 for n in built if (n, "verbmem", "retention") in res]
    if retention:
        chart += svg.interval_bars(retention, report["config"]["policy"].get("verbmem_retention_max"),
                                   "VerbMem retention per scheme", "M(Q(unlearned)) / M(Q(original)) on the forget set (the paper's retention)")
    return Markup(chart)


def mia(report: dict) -> list[dict]:
    """Per variant: the Min-K% 40 score distributions (forget vs holdout) and the ROC curve."""
    scores: dict[tuple[str, str], list] = {}
    top = headline(report["config"]["probes"])
    for s in report.get("samples", []):
        if s["probe"] == "mink" and s["metric"] == top and s["model"] == "audited":
            scores[(s["variant"], s["split"])] = s["values"]
    out = []
    for v in report["variants"]:
        f, h = scores.get((v["name"], "forget")), scores.get((v["name"], "holdout"))
        if f is None or h is None:
            continue
        out.append({"variant": v["name"], "hist": Markup(svg.distributions(f, h, f"{v['name']}: Min-K% {headline_percent(report['config']['probes'])} scores")),
                    "roc": Markup(svg.roc(f, h, f"{v['name']}: ROC"))})
    return out


# The highlight is the textbook LCS table, O(n·m) in time and memory: unbounded, one 20,000-word sample took
# 3 minutes and 3.4 GB. So it compares at most the first HIGHLIGHT_WORDS words of each side (real evidence is
# one probe's continuation, 128 tokens under MUSE), and a report spends at most HIGHLIGHT_CELLS table cells in
# all (about a second); outputs past that budget are shown unmarked. difflib's SequenceMatcher would be faster
# but is not the LCS: its matching blocks miss scattered and repeated words (none of "b a b a …" against
# "a b a b …" with its autojunk heuristic), and without that heuristic its worst case is cubic.
HIGHLIGHT_WORDS = 500
HIGHLIGHT_CELLS = 4_000_000


def _lcs_mask(ref: list[str], out: list[str]) -> list[bool]:
    """Which output words belong to a longest common subsequence with the reference (ROUGE-L's match)."""
    n, m = len(ref), len(out)
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            table[i][j] = table[i + 1][j + 1] + 1 if ref[i] == out[j] else max(table[i + 1][j], table[i][j + 1])
    mask, i, j = [False] * m, 0, 0
    while i < n and j < m:
        if ref[i] == out[j]:
            mask[j], i, j = True, i + 1, j + 1
        elif table[i + 1][j] >= table[i][j + 1]:
            i += 1
        else:
            j += 1
    return mask


def evidence(report: dict) -> list[dict]:
    """Each sample with every variant's words, marked where they match the true continuation (``_lcs_mask``
    over the first ``HIGHLIGHT_WORDS`` of each; ``overlap`` is None once the report's budget is spent)."""
    items, budget = [], HIGHLIGHT_CELLS
    for e in report.get("evidence", []):
        ref = [w.lower() for w in e["reference"].split()[:HIGHLIGHT_WORDS]]
        outs = []
        for variant, text in e["outputs"].items():
            words = text.split()
            compared = [w.lower() for w in words[:HIGHLIGHT_WORDS]]
            cells = (len(ref) + 1) * (len(compared) + 1)
            marked = cells <= budget
            budget -= cells if marked else 0
            mask = _lcs_mask(ref, compared) + [False] * (len(words) - len(compared)) if marked else [False] * len(words)
            outs.append({"variant": variant, "words": list(zip(words, mask)),
                         "overlap": sum(mask) / max(len(ref), 1) if marked else None,
                         "partial": len(words) > HIGHLIGHT_WORDS or len(e["reference"].split()) > HIGHLIGHT_WORDS})
        items.append({"prompt": e["prompt"], "reference": e["reference"], "outputs": outs})
    return items


def forensics_notes(report: dict) -> list[str]:
    """Sentences under the forensics table: how many weights changed at all and their median |w|, and
    whether a float32 checkpoint holds only bfloat16 values. These numbers do not depend on the grid, so
    every measured block holds the same ones; the first is read. Facts only: the verdict ignores them."""
    block = next((f for f in (report.get("forensics") or {}).values() if f.get("status") == "measured"), None)
    if block is None:
        return []
    lines = (changed_sentence(block), bf16_sentence(block.get("bf16_representable")))
    return [line[0].upper() + line[1:] + "." for line in lines if line]


def weights_digest(model: dict) -> tuple[str, str]:
    """The model's hash for the PDF's page header, and what it is the hash of. One weight file: that file's
    sha256, as ``sha256sum`` prints it. Several (a sharded checkpoint): the sha256 of their ``sha256sum``
    listing in name order (``<hash>  <name>`` lines), so a reader can recompute it from the files alone."""
    import hashlib

    files = model.get("files") or {}
    if len(files) == 1:
        (name, digest), = files.items()
        return digest, f"sha256 of {name}"
    listing = "".join(f"{files[n]}  {n}\n" for n in sorted(files))
    return hashlib.sha256(listing.encode()).hexdigest(), f"sha256 of the sha256sum listing of its {len(files)} weight files, by name"


def input_hashes(report: dict) -> list[dict]:
    """Every input the audit read, with its sha256, for the PDF's appendix: each model's weight and side
    files (config, tokenizer), each data set, a MUSE directory's files, the calibration and relearning text
    when they are not a listed input, and the policy's content hash."""
    rows: list[dict] = []
    for name, inp in report["inputs"].items():
        if not inp:
            continue
        if "files" in inp:
            for group, label in (("files", "weights"), ("side_files", "file")):
                for f, digest in (inp.get(group) or {}).items():
                    rows.append({"input": f"{name} {label}", "path": f"{inp['path']}/{f}", "sha256": digest})
        elif inp.get("sha256"):
            rows.append({"input": f"{name} ({inp.get('n', '?')} records)", "path": inp["path"], "sha256": inp["sha256"]})
    config = report["config"]
    for f, entry in ((config.get("data_source") or {}).get("files") or {}).items():
        rows.append({"input": f"MUSE: {entry.get('used_for', '')}", "path": f"{config['data_source']['path']}/{f}", "sha256": entry["sha256"]})
    seen = {r["sha256"] for r in rows}
    for key in ("calibration", "relearn"):
        entry = config.get(key) or {}
        if entry.get("sha256") and entry["sha256"] not in seen:
            rows.append({"input": f"{key} text ({entry.get('source', '')})", "path": entry.get("path") or "(shipped with the tool)",
                         "sha256": entry["sha256"]})
    if config.get("policy_sha256"):
        rows.append({"input": "policy (content hash of its values)", "path": config.get("policy_source", "tool defaults"),
                     "sha256": config["policy_sha256"]})
    return rows
