"""``unlearn-audit demo``: the built-in benchmark, end to end."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import ENV, QUIET_HELP, InputError, OutputFormat, Steps, app, check_out, check_percentile, err, say, stdout_console, write_outputs


@app.command()
def demo(
    out: Path = typer.Option(Path("unlearn-audit-demo"), "-o", "--out", help="Directory for the demo's data and reports."),
    quiet: bool = typer.Option(False, "--quiet", "-q", envvar=ENV("quiet"), help=QUIET_HELP),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", envvar=ENV("format"),
                                     help="stdout format (json: one object with each scenario's report)."),
    remediate: bool = typer.Option(False, "--remediate", help="Also remediate the target with SURE and audit it (OUT/remediated)."),
    sure_lr: float = typer.Option(1e-4, help="SURE learning rate for --remediate (paper Table 6: 1e-4)."),
    sure_steps: int = typer.Option(12, min=1, help="SURE optimizer steps for --remediate."),
    saliency_percentile: float = typer.Option(90.0, help="SURE threshold γ for --remediate."),
    recipe_size: str = typer.Option("auto", "--recipe", help="full, lean (fewer documents, fp32 and rtn-int4 only: "
                                    "for CPUs without fast bfloat16), or auto: lean where bfloat16 is slow."),
) -> None:
    """Build the built-in benchmark (cached) and audit two models unlearned from its target side by side:
    (a) the paper's numerics (bfloat16 unlearning) and (b) a positive control confined to the target's
    rtn-int4 grid. Reports go to OUT/paper and OUT/control. Exits 0 once it ran."""
    from ..benchmark.scenario import SCENARIOS, Recipe, run_demo
    from ..report.console import render_side_by_side
    from ..report.write import to_json_text

    check_out(out)
    check_percentile(saliency_percentile)
    if sure_lr <= 0:
        raise InputError(f"--sure-lr must be positive, got {sure_lr}")
    from ..machine import describe_cpu

    recipe = Recipe.for_machine(recipe_size, sure_lr=sure_lr, sure_steps=sure_steps,
                                sure_percentile=saliency_percentile).resolved()
    say(f"{describe_cpu()}: the {recipe.size} recipe ({recipe.n_forget} documents forgotten, "
        f"{len(recipe.schemes)} grids), fine-tuning in {'bfloat16 autocast' if recipe.finetune_autocast else 'float32'}, "
        f"(a) computed in {recipe.paper_compute}{' with bfloat16 storage' if recipe.paper_compute == 'float32' else ''}, "
        f"audits in {recipe.audit_dtype}")
    with Steps(quiet=quiet) as steps:
        reports = run_demo(out, on_step=steps, log=(lambda m: None) if quiet else (lambda m: err.print(m, soft_wrap=True, markup=False)),
                           recipe=recipe, remediate=remediate)
    for name, report in reports.items():
        write_outputs(out / name, report)
    if fmt == OutputFormat.json:
        import sys

        sys.stdout.write(to_json_text(reports))
    else:
        labels = {**SCENARIOS, "remediated": "SURE-remediated"}
        render_side_by_side({labels[k]: v for k, v in reports.items()}, stdout_console())
    for name, report in reports.items():
        say(f"{name}: verdict {report['verdict']}, report in {out / name / 'report.json'} (and report.html)")
