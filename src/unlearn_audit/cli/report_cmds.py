"""Commands that read what exists: ``report``, ``schema``, ``diff`` and ``schemes``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ..report.formats import Paper, ReportFormat
from .common import (
    ENV,
    QUIET_HELP,
    FailOn,
    InputError,
    OutputFormat,
    Steps,
    app,
    check_not_input,
    check_out,
    exit_code,
    load_policy,
    model_ref,
    say,
    stdout_console,
)


@app.command("report")
def report_command(
    report_json: Path = typer.Argument(..., metavar="REPORT_JSON", help="A report.json written by `audit`."),
    fmt: ReportFormat = typer.Option(ReportFormat.html, "--format", help="What to render the report as."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="File to write (default: stdout)."),
    paper: Paper = typer.Option(Paper.a4, "--paper", help="Page size of --format pdf."),
    policy: Optional[Path] = typer.Option(None, help="Re-judge the stored results under this policy file (no model is run)."),
    fail_on: FailOn = typer.Option(FailOn.inconclusive, envvar=ENV("fail-on"),
                                   help="inconclusive or fail: what makes the exit code non-zero (and a JUnit failure)."),
) -> None:
    """Render a report.json as HTML, Markdown, JUnit or PDF, optionally re-judged under another policy.

    The PDF (the pdf extra) is the HTML view on A4 or Letter pages headed by the verdict and the model's hash, with an appendix of every input's sha256.
    """
    from ..report.load import load_report, rejudge
    from ..report.write import write_bytes_atomic

    check_out(output, file=True, flag="--output")
    check_not_input(output, "--output", {"REPORT_JSON": report_json})
    if fmt == ReportFormat.pdf:
        from ..report.pdf import engine

        engine()  # a missing engine is said before the report is read
        if output is None and sys.stdout.isatty():
            raise InputError("--format pdf writes a binary file: give -o FILE (or redirect stdout)")
    report = load_report(report_json)
    if policy is not None:
        pol, source = load_policy(policy)
        report = rejudge(report, pol, f"policy file {source}")
    from jinja2.exceptions import UndefinedError

    try:
        if fmt == ReportFormat.pdf:
            from ..report.pdf import pdf

            data = pdf(report, paper.value)
        else:
            from ..report.render import render

            data = render(report, fmt, fail_on).encode("utf-8")
    # The schema checks what every report holds, not every field a view shows; one written by another
    # version or by hand can pass it and still lack one. That is the file's fault, said in one line.
    except (UndefinedError, KeyError) as exc:
        what = exc.message if isinstance(exc, UndefinedError) else f"no field {exc}"
        raise InputError(f"{report_json}: the report lacks what the {fmt.value} view shows ({what})") from None
    if output is not None:
        write_bytes_atomic(output, data)
        say(f"wrote {output} ({fmt.value}): verdict {report['verdict']}")
    elif fmt == ReportFormat.pdf:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
    else:
        sys.stdout.write(data.decode("utf-8"))
    raise typer.Exit(exit_code(report["verdict"], fail_on))


@app.command("schema")
def schema_command() -> None:
    """Print the JSON Schema of report.json."""
    from ..resources import data_dir

    sys.stdout.write((data_dir("report_templates") / "report.schema.json").read_text(encoding="utf-8"))


@app.command("diff")
def diff_command(
    original_dir: Path = typer.Argument(..., metavar="ORIGINAL_DIR", help="The model before unlearning: a local directory, or a Hub "
                                        "id (org/name, org/name@REV)."),
    other_dir: Path = typer.Argument(..., metavar="UNLEARNED_DIR", help="The claimed-unlearned model, likewise."),
    schemes: str = typer.Option("rtn-int8,rtn-int4,nf4,gguf-q4_0", help="Schemes whose grids to compare."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Directory to write the full per-module result to (OUT/diff.json)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", envvar=ENV("quiet"), help=QUIET_HELP),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", envvar=ENV("format"), help="stdout format."),
) -> None:
    """Weight forensics without data: how many grid cells unlearning left unchanged, per scheme."""
    from ..quantize.forensics import diff
    from ..quantize.registry import parse_schemes
    from ..report.console import render_diff
    from ..report.write import to_json_text, write_json_atomic

    check_out(out)
    original_dir, other_dir = model_ref(original_dir, "ORIGINAL_DIR", "original"), model_ref(other_dir, "UNLEARNED_DIR", "unlearned")
    check_not_input(out, "--out", {"ORIGINAL_DIR": original_dir, "UNLEARNED_DIR": other_dir}, inside=True, writes=("diff.json",))
    chosen = parse_schemes(schemes)
    with Steps(quiet=quiet) as steps:
        steps(f"comparing the two checkpoints' grids under {', '.join(s.name for s in chosen)}")
        result = diff(original_dir, other_dir, chosen)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "diff.json", result)
        say(f"wrote {out / 'diff.json'}")
    if fmt == OutputFormat.json:
        sys.stdout.write(to_json_text(result))
    else:
        render_diff(result, stdout_console())


@app.command("schemes")
def list_schemes() -> None:
    """List the schemes (quantizers and other recovery attacks) with a one-line description each."""
    from ..quantize.registry import SCHEMES

    width = max(map(len, SCHEMES))
    for name, preset in SCHEMES.items():
        typer.echo(f"{name:<{width}}  {preset.description}")
