"""The console view of report.json: one table of headline numbers per variant, then the checks."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

COLUMNS = [
    ("verbmem", "forget", "VerbMem forget"),
    ("verbmem", "holdout", "VerbMem holdout"),
    ("verbmem", "retention", "VerbMem retention"),
    ("knowmem", "forget", "KnowMem forget"),
    ("knowmem", "retain", "KnowMem retain"),
    ("mink", "auc", "AUC (Min-40%)"),
    ("mink", "privleak", "PrivLeak %"),
    ("weights", "grid_code_overlap", "int codes = original"),
]


def _cell(r: dict | None) -> str:
    if r is None or r["value"] is None:
        return "-"
    v = r["value"]
    text = f"{v:.1f}" if abs(v) >= 10 else f"{v:.3f}"
    if r.get("ci_low") is not None and r.get("ci_high") is not None:
        lo, hi = r["ci_low"], r["ci_high"]
        text += f" [{lo:.1f}, {hi:.1f}]" if abs(v) >= 10 else f" [{lo:.2f}, {hi:.2f}]"
    return text


def render(report: dict, console: Console) -> None:
    results = {(r["variant"], r["probe"], r["metric"]): r for r in report["results"]}
    present = [c for c in COLUMNS if any((v["name"], c[0], c[1]) in results for v in report["variants"])]
    table = Table(title="unlearn-audit: forget-set evidence per variant (95% bootstrap CI)")
    table.add_column("variant")
    for _, _, label in present:
        table.add_column(label, justify="right")
    table.add_column("status")
    for v in report["variants"]:
        statuses = {c["status"] for c in report["checks"] if c["variant"] == v["name"]}
        status = next((s for s in ("FAIL", "INCONCLUSIVE", "SKIPPED", "PASS") if s in statuses), "-")
        if v["status"] != "built":
            table.add_row(v["name"], *["-"] * len(present), f"SKIPPED: {v['reason']}")
            continue
        table.add_row(v["name"], *[_cell(results.get((v["name"], p, m))) for p, m, _ in present], status)
    console.print(table)
    for c in report["checks"]:
        if c["status"] in ("FAIL", "INCONCLUSIVE"):
            console.print(f"  {c['status']:<12} {c['variant']:<12} {c['check']:<9} {c['reason']}")
    colour = {"PASS": "green", "FAIL": "red"}.get(report["verdict"], "yellow")
    console.print(f"[bold {colour}]VERDICT: {report['verdict']}[/] — {report['verdict_reason']}")
