"""``unlearn-audit demo``: the built-in benchmark, end to end."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import ENV, InputError, OutputFormat, Steps, app, check_out, check_percentile, emit, err, say, stdout_console, write_outputs


@app.command()
def demo(
    out: Path = typer.Option(Path("unlearn-audit-demo"), help="Directory for the demo's data and report.json."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", envvar=ENV("format"), help="stdout format."),
    remediate: bool = typer.Option(False, "--remediate", help="Also remediate with SURE and re-audit (OUT/remediated)."),
    sure_lr: float = typer.Option(1e-4, help="SURE learning rate for --remediate (paper Table 6: 1e-4)."),
    sure_steps: int = typer.Option(12, min=1, help="SURE optimizer steps for --remediate."),
    saliency_percentile: float = typer.Option(90.0, help="SURE threshold γ for --remediate."),
) -> None:
    """Build the built-in benchmark (cached), unlearn it, and audit the result. Exits 0 once it ran."""
    from ..benchmark.scenario import Recipe, run_demo
    from ..report.console import render_comparison

    check_out(out)
    check_percentile(saliency_percentile)
    if sure_lr <= 0:
        raise InputError(f"--sure-lr must be positive, got {sure_lr}")
    recipe = Recipe(sure_lr=sure_lr, sure_steps=sure_steps, sure_percentile=saliency_percentile)
    with Steps() as steps:
        report = run_demo(out, on_step=steps, log=lambda m: err.print(m, soft_wrap=True, markup=False),
                          recipe=recipe, remediate=remediate)
    after = report["demo"].pop("remediated", None)
    emit(report, fmt, out)
    if after is not None:
        write_outputs(out / "remediated", after)
        render_comparison(report, after, err if fmt == OutputFormat.json else stdout_console(), ("GA_GDR (unlearned)", "SURE"))
        say(f"remediated report written to {out / 'remediated' / 'report.json'}")
    say(f"demo finished: verdict {report['verdict']} (see {out / 'report.json'})")
