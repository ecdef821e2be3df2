"""The console view of report.json: one table of headline numbers per variant, then the checks."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..policy import worst
from ..probes.registry import PROBES

# (probe, metric, header, digits): each registered probe's columns, then the weight forensics
COLUMNS = [(p.name, c.metric, c.label, c.digits) for p in PROBES.values() for c in p.columns]
COLUMNS.append(("weights", "grid_code_overlap", "int codes = original", 4))


def _cell(r: dict | None, digits: int) -> str:
    if r is None or r["value"] is None:
        return "-"
    text = f"{r['value']:.{digits}f}"
    if r.get("ci_low") is not None and r.get("ci_high") is not None:
        ci = max(1, digits - 1)
        text += f" [{r['ci_low']:.{ci}f}, {r['ci_high']:.{ci}f}]"
    return text


def render(report: dict, console: Console) -> None:
    results = {(r["variant"], r["probe"], r["metric"]): r for r in report["results"]}
    present = [c for c in COLUMNS if any((v["name"], c[0], c[1]) in results for v in report["variants"])]
    table = Table(title="unlearn-audit: forget-set evidence per variant (95% bootstrap CI)")
    table.add_column("variant")
    for _, _, label, _ in present:
        table.add_column(label, justify="right")
    table.add_column("status")
    for v in report["variants"]:
        status = worst(c["status"] for c in report["checks"] if c["variant"] == v["name"])
        if v["status"] != "built":
            table.add_row(escape(v["name"]), *["-"] * len(present), escape(f"SKIPPED: {v['reason']}"))
            continue
        table.add_row(escape(v["name"]), *[_cell(results.get((v["name"], p, m)), d) for p, m, _, d in present], status)
    console.print(table)
    for c in report["checks"]:
        if c["status"] in ("FAIL", "INCONCLUSIVE"):
            console.print(f"  {c['status']:<12} {c['variant']:<12} {c['check']:<9} {c['reason']}", markup=False)
    resumed = report["run"].get("resumed_variants")
    if resumed:
        console.print(f"  read from the resume cache, not recomputed: {', '.join(resumed)}", markup=False)
    shared = report["run"].get("shared_cache") or {}
    reused = [f"the original under {', '.join(shared.get('original_results', []))}"] * bool(shared.get("original_results"))
    reused += ["the reference's scores"] * bool(shared.get("reference_scores"))
    if reused:
        console.print(f"  from the shared cache ({shared['dir']}): {'; '.join(reused)}", markup=False)
    colour = {"PASS": "green", "FAIL": "red"}.get(report["verdict"], "yellow")
    # Reasons quote paths and texts from the inputs: escaped, so a "[/]" in them is text, not markup.
    console.print(f"[bold {colour}]VERDICT: {escape(report['verdict'])}[/] — {escape(report['verdict_reason'])}")


def render_side_by_side(reports: dict[str, dict], console: Console) -> None:
    """Several audits of models unlearned from one original, one row per variant: forget VerbMem and
    its retention, the Min-K% AUC, the share of int codes equal to the original's, and each audit's
    worst check. The demo's view of its scenarios (README, "The demo")."""
    cols = [("verbmem", "forget", "VerbMem"), ("verbmem", "retention", "retention"), ("mink", "auc", "AUC"),
            ("weights", "grid_code_overlap", "codes = orig.")]
    table = Table(title="forget-set evidence per variant: " + " | ".join(reports))
    table.add_column("variant")
    for label in reports:
        for *_, head in cols:
            table.add_column(head, justify="right")
        table.add_column("checks")
    rows = {label: {(r["variant"], r["probe"], r["metric"]): r for r in rep["results"]} for label, rep in reports.items()}
    for v in next(iter(reports.values()))["variants"]:
        cells = []
        for label, rep in reports.items():
            got = [rows[label].get((v["name"], probe, metric)) for probe, metric, _ in cols]
            cells += [_short(r) for r in got[:-1]] + [_pct(None if got[-1] is None else got[-1]["value"])]
            cells.append(worst(c["status"] for c in rep["checks"] if c["variant"] == v["name"]))
        table.add_row(escape(v["name"]), *cells)
    console.print(table)
    for label, rep in reports.items():
        console.print(f"{label}: {rep['verdict']} — {rep['verdict_reason']}", markup=False)


def _short(r: dict | None) -> str:
    return "-" if r is None or r["value"] is None else f"{r['value']:.3f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def changed_sentence(fx: dict) -> str | None:
    """The weights that changed at all, from a forensics block or ``diff``'s result; None where the block
    does not record it (a report written before these fields existed)."""
    if fx.get("changed_fraction") is None:
        return None
    text = f"{fx['changed_fraction']:.2%} of the quantizable weights changed at all"
    med = fx.get("median_abs_w_changed")
    return text if med is None else f"{text}; median |w| of those in the original: {med:.3g}"


def bf16_sentence(flags: dict | None) -> str | None:
    """A fact, not a verdict: which float32 checkpoints hold only bfloat16 values (None when neither)."""
    sides = [side for side, exact in (flags or {}).items() if exact]
    if not sides:
        return None
    return (f"every float32 weight of the {' and the '.join(sides)} checkpoint{'s' if len(sides) > 1 else ''} is "
            "exactly a bfloat16 value: probably trained or stored in bfloat16, where an update below about |w|/512 rounds away")


def render_diff(result: dict, console: Console) -> None:
    """The ``diff`` command's table: one row per scheme, then the grid-independent numbers."""
    table = Table(title=f"grid cells shared by {result['original']} and {result['other']}")
    cols = ("scheme", "int codes = original", "groups with changed scale", "median |ΔW|/Δ",
            "changed weights: same cell", "changed weights: in zero cell", "most changed modules")
    for col in cols:
        table.add_column(col, justify="left" if col in ("scheme", "most changed modules") else "right")
    for name, r in result["schemes"].items():
        if r["status"] != "measured":
            table.add_row(escape(name), "-", "-", "-", "-", "-", escape(f"skipped: {r['reason']}"))
            continue
        med = r["median_dw_over_step"]
        table.add_row(name, f"{r['code_overlap']:.2%}", f"{r['scale_changed']:.2%}", "-" if med is None else f"{med:.3f}",
                      _pct(r.get("changed_same_cell")), _pct(r.get("changed_in_zero_cell")), ", ".join(r["most_changed"][:3]))
    console.print(table)
    for line in (changed_sentence(result), bf16_sentence(result.get("bf16_representable"))):
        if line:
            console.print(line, markup=False)
    console.print(f"read {result['bytes_read'] / 1e6:.1f} MB in {result['seconds']:.2f} s ({result['gb_per_s']} GB/s)")
