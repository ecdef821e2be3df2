"""The ``unlearn-audit`` command line. Exit codes: 0 PASS, 1 FAIL or INCONCLUSIVE, 2 bad input or usage,
3 internal error (a bug in the tool, never a finding about the model). Reports go to stdout and files;
human messages and progress bars go to stderr, progress only on a terminal.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .errors import InputError

try:  # typer >= 0.20 vendors its own click; usage errors are raised from there
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer uses the click package
    from click import exceptions as click_exc

EXIT = {"PASS": 0, "FAIL": 1, "INCONCLUSIVE": 1}
app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n")[0])
err = Console(stderr=True, highlight=False)


class _Steps:
    """A spinner with the current stage on stderr, shown only when stderr is a terminal."""

    def __init__(self) -> None:
        self.status = err.status("starting") if err.is_terminal else None

    def __enter__(self):
        if self.status:
            self.status.__enter__()
        return self

    def __call__(self, text: str) -> None:
        if self.status:
            self.status.update(text)

    def __exit__(self, *exc):
        if self.status:
            self.status.__exit__(*exc)


def _stdout_console() -> Console:
    """The table's console: a pipe or file gets a wide table instead of rich's 80-column default."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


def _exit_code(verdict: str, fail_on: str) -> int:
    """0 PASS, 1 FAIL; INCONCLUSIVE fails too unless ``--fail-on fail``."""
    if verdict == "INCONCLUSIVE" and fail_on == "fail":
        return 0
    return EXIT[verdict]


def _check_fail_on(fail_on: str) -> None:
    if fail_on not in ("fail", "inconclusive"):
        raise InputError(f"--fail-on must be 'fail' or 'inconclusive', got {fail_on!r}")


def _emit(report: dict, fmt: str, out: Optional[Path], fail_on: str = "inconclusive") -> int:
    """Write report.json, report.html and samples.jsonl under ``out`` (each atomically), print the table
    or the JSON, and return the exit code."""
    from .report.console import render
    from .report.write import to_json_text

    for note in report["config"].get("notes", []):
        _say(f"note: {note}")
    if out is not None:
        _write_outputs(out, report)
    if fmt == "json":
        sys.stdout.write(to_json_text(report))
    else:
        render(report, _stdout_console())
        if out is not None:
            err.print(f"report written to {out / 'report.json'} (and report.html, samples.jsonl)")
    return _exit_code(report["verdict"], fail_on)


def _write_outputs(out: Path, report: dict) -> None:
    """samples.jsonl, report.html and report.json as one atomic unit."""
    from .report.render import html
    from .report.write import samples_text, to_json_text, write_files_atomic

    files = {out / "samples.jsonl": samples_text(report), out / "report.html": html(report), out / "report.json": to_json_text(report)}
    try:
        write_files_atomic(files)
    except OSError as exc:  # e.g. a full disk: nothing half-written is left, and the user is told plainly
        raise InputError(f"{out}: cannot write the report ({exc.strerror or exc})") from None


def _device(device: str, dtype: str, remote: bool = False) -> tuple[str, str]:
    """Resolve --device and --dtype, refusing combinations that cannot run; sets CPU threads. With a
    remote executor, --device cuda names the workers' GPUs, which this machine need not have."""
    import torch

    from .benchmark.scenario import usable_cpus

    if device not in ("cpu", "cuda", "auto"):
        raise InputError(f"--device must be cpu, cuda or auto, got {device!r}")
    if dtype not in ("float32", "bfloat16"):
        raise InputError(f"--dtype must be float32 or bfloat16, got {dtype!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available() and not remote:
        raise InputError("--device cuda: no CUDA device is available here")
    if dtype == "bfloat16" and device == "cpu":
        raise InputError("--dtype bfloat16 is for GPU compute; use it with --device cuda (CPU audits run in float32)")
    if torch.get_num_threads() > usable_cpus():  # never more threads than the CPUs we may run on
        torch.set_num_threads(usable_cpus())
    return device, dtype


def _policy(path: Optional[Path]):
    from .policy import Policy

    return (Policy.from_toml(path), str(path)) if path is not None else (Policy(), None)


def _check_format(fmt: str) -> None:
    if fmt not in ("table", "json"):
        raise InputError(f"--format must be 'table' or 'json', got {fmt!r}")


def _check_out(out: Optional[Path], file: bool = False, flag: str = "--out") -> None:
    """Refuse an output directory (or, with ``file``, an output file's place) that cannot be written,
    before any work is done rather than after the audit."""
    if out is None:
        return
    if not file and out.exists() and not out.is_dir():
        raise InputError(f"{out}: --out must be a directory")
    target = out.parent if file else out
    probe = target if target.exists() else next((p for p in target.parents if p.exists()), Path("."))
    if not probe.is_dir():
        raise InputError(f"{out}: {flag} cannot be created: {probe} is a file, not a directory")
    # os.access says yes to root almost everywhere (a read-only mount, /proc), so create and remove a
    # real file where the first directory would go; nothing is left behind, not even a directory.
    try:
        fd, name = tempfile.mkstemp(dir=probe, prefix=".unlearn-audit-probe.")
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise InputError(f"{out}: {flag} is not writable ({exc.strerror or exc})") from None


@app.command()
def audit(
    model_dir: Path = typer.Argument(..., metavar="MODEL_DIR", help="Claimed-unlearned model: a local Hugging Face directory."),
    forget: Optional[Path] = typer.Option(None, help="Forget set, JSONL of {\"text\": ...} (required unless --muse)."),
    holdout: Optional[Path] = typer.Option(None, help="Holdout set (never trained on), JSONL of {\"text\": ...} (required unless --muse)."),
    retain: Optional[Path] = typer.Option(None, help="Retain set, JSONL of {\"text\": ...} (recorded)."),
    forget_qa: Optional[Path] = typer.Option(None, help="QA about the forget set, JSONL {question, answer}."),
    retain_qa: Optional[Path] = typer.Option(None, help="QA about the retain set (utility)."),
    holdout_qa: Optional[Path] = typer.Option(None, help="QA about the holdout set (KnowMem baseline)."),
    icl: Optional[Path] = typer.Option(None, help="Few-shot QA pairs for KnowMem (default: retain QA)."),
    calibration: Optional[Path] = typer.Option(None, help="Calibration text for gptq/awq, JSONL (default: retain, else shipped text)."),
    relearn_data: Optional[Path] = typer.Option(None, help="Public in-domain text for the relearn-* attacks, JSONL (default: retain; never the forget set)."),
    muse: Optional[Path] = typer.Option(None, help="A MUSE corpus directory (raw/, verbmem/, knowmem/, privleak/) read as is, instead of the set options."),
    adapter: Optional[Path] = typer.Option(None, help="A PEFT LoRA adapter directory, merged into MODEL_DIR before the audit (the lora extra)."),
    original: Optional[Path] = typer.Option(None, help="The model before unlearning (for retention)."),
    reference: Optional[Path] = typer.Option(None, help="A model retrained without the forget set."),
    reference_auc: Optional[float] = typer.Option(None, help="Known reference AUC instead of --reference (MUSE: 0.4772 NEWS, 0.5393 BOOKS)."),
    schemes: str = typer.Option(",".join(["fp32", "rtn-int8", "rtn-int4", "bnb-fp4"]), help="Comma-separated scheme names (see `schemes`)."),
    out: Optional[Path] = typer.Option(None, envvar="UNLEARN_AUDIT_OUT", help="Directory for report.json."),
    seed: int = typer.Option(0, help="Seed for the bootstrap and any randomness."),
    fmt: str = typer.Option("table", "--format", help="stdout format: table or json."),
    batch_size: int = typer.Option(8, min=1, help="Sequences per forward/generate batch."),
    backend: str = typer.Option("reference", help="reference (the tool's exact algorithms) or library (bitsandbytes/torchao twins)."),
    policy: Optional[Path] = typer.Option(None, help="TOML file of verdict thresholds (see README)."),
    fresh: bool = typer.Option(False, help="Ignore the resume cache under --out and recompute every variant."),
    device: str = typer.Option("auto", help="cpu, cuda or auto (cuda when available)."),
    dtype: str = typer.Option("float32", help="float32, or bfloat16 for GPU compute."),
    fail_on: str = typer.Option("inconclusive", help="Exit non-zero on: inconclusive (FAIL or INCONCLUSIVE) or fail (FAIL only)."),
    muse_strict: bool = typer.Option(False, help="Literal MUSE prompts: trailing-space KnowMem query, 128-token VerbMem."),
    executor: str = typer.Option("local", help="Where variant jobs run: local (here, one at a time) or ray (a Ray cluster; the ray extra)."),
    ray_address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help="Ray cluster to join with --executor ray (default: a local instance)."),
    limit: Optional[int] = typer.Option(None, min=1, help="Audit a seeded uniform sample of N records from each text set (forget, holdout, retain)."),
    allow_pickle: bool = typer.Option(False, help="Read pickle-only weights (.bin) with torch.load(weights_only=True); recorded in the report."),
) -> None:
    """Audit a checkpoint: quantize it under each scheme, probe every variant, and give a verdict."""
    from dataclasses import replace

    from .audit import AuditConfig, AuditData, run_audit
    from .cache import VariantCache
    from .data import load_qa, load_texts
    from .executor import get_executor
    from .muse_dir import read_muse_dir
    from .quantize.registry import parse_schemes

    _check_format(fmt)
    _check_fail_on(fail_on)
    _check_out(out)
    names = tuple(s.name for s in parse_schemes(schemes))
    parse_schemes(schemes, backend)  # checks --backend
    pol, pol_source = _policy(policy)
    jobs = get_executor(executor, ray_address)
    device, dtype = _device(device, dtype, remote=executor != "local")
    if reference_auc is not None and (reference is not None or not 0 < reference_auc < 1):
        raise InputError("--reference-auc must lie strictly between 0 and 1" if reference is None
                         else "--reference and --reference-auc conflict: give the retrained model or its AUC, not both")
    _check_set_options(muse, forget=forget, holdout=holdout, retain=retain, forget_qa=forget_qa, retain_qa=retain_qa,
                       holdout_qa=holdout_qa, icl=icl)
    if muse is not None and limit is not None:
        raise InputError("--limit samples JSONL text sets; it does not apply to --muse, whose sets are read whole")
    if adapter is not None:  # a broken adapter or a missing peft is reported before any model is loaded
        from .models.adapter import check_adapter_dir, require_peft

        check_adapter_dir(adapter, allow_pickle)
        require_peft()
    relearn_set = load_texts(relearn_data) if relearn_data else None
    data = replace(read_muse_dir(muse, load_texts(calibration) if calibration else None), relearn=relearn_set) if muse is not None else AuditData(
        forget=load_texts(forget, limit, seed),
        holdout=load_texts(holdout, limit, seed),
        retain=load_texts(retain, limit, seed) if retain else None,
        forget_qa=load_qa(forget_qa) if forget_qa else None,
        retain_qa=load_qa(retain_qa) if retain_qa else None,
        holdout_qa=load_qa(holdout_qa) if holdout_qa else None,
        icl=load_qa(icl) if icl else None,
        calibration=load_texts(calibration) if calibration else None,
        relearn=relearn_set,
    )
    cfg = AuditConfig(schemes=names, seed=seed, batch_size=batch_size, muse_strict=muse_strict, backend=backend, policy=pol,
                      device=device, dtype=dtype, reference_auc=reference_auc, allow_pickle=allow_pickle, limit=limit,
                      **({"policy_source": f"policy file {pol_source}"} if pol_source else {}))
    with _Steps() as steps:
        report = run_audit(
            str(model_dir), data, cfg,
            original_dir=str(original) if original else None,
            reference_dir=str(reference) if reference else None,
            adapter_dir=str(adapter) if adapter else None,
            on_step=steps,
            cache=VariantCache(out / ".cache" if out is not None else None, fresh),
            executor=jobs,
        )
    raise typer.Exit(_emit(report, fmt, out, fail_on))


def _check_set_options(muse: Optional[Path], **sets: Optional[Path]) -> None:
    """--muse reads every set from its directory, so a set given as well is refused rather than silently
    preferred; without --muse, --forget and --holdout are required."""
    given = [f"--{name.replace('_', '-')}" for name, path in sets.items() if path is not None]
    if muse is not None and given:
        raise InputError(f"--muse reads every set from {muse}; drop {', '.join(given)} (only --calibration and --relearn-data may be given with it)")
    for name in ("forget", "holdout"):
        if muse is None and sets[name] is None:
            raise InputError(f"missing option '--{name}' (or give --muse DIR)")


@app.command()
def demo(
    out: Path = typer.Option(Path("unlearn-audit-demo"), help="Directory for the demo's data and report.json."),
    fmt: str = typer.Option("table", "--format", help="stdout format: table or json."),
    remediate: bool = typer.Option(False, "--remediate", help="Also remediate with SURE and re-audit (OUT/remediated)."),
    sure_lr: float = typer.Option(1e-4, help="SURE learning rate for --remediate (paper Table 6: 1e-4)."),
    sure_steps: int = typer.Option(12, min=1, help="SURE optimizer steps for --remediate."),
    saliency_percentile: float = typer.Option(90.0, help="SURE threshold γ for --remediate."),
) -> None:
    """Build the built-in benchmark (cached), unlearn it, and audit the result. Exits 0 once it ran."""
    from .benchmark.scenario import Recipe, run_demo
    from .report.console import render_comparison

    _check_format(fmt)
    _check_out(out)
    _check_percentile(saliency_percentile)
    if sure_lr <= 0:
        raise InputError(f"--sure-lr must be positive, got {sure_lr}")
    recipe = Recipe(sure_lr=sure_lr, sure_steps=sure_steps, sure_percentile=saliency_percentile)
    with _Steps() as steps:
        report = run_demo(out, on_step=steps, log=lambda m: err.print(m, soft_wrap=True, markup=False),
                          recipe=recipe, remediate=remediate)
    after = report["demo"].pop("remediated", None)
    _emit(report, fmt, out)
    if after is not None:
        _write_outputs(out / "remediated", after)
        render_comparison(report, after, err if fmt == "json" else _stdout_console(), ("GA_GDR (unlearned)", "SURE"))
        err.print(f"remediated report written to {out / 'remediated' / 'report.json'}")
    err.print(f"demo finished: verdict {report['verdict']} (see {out / 'report.json'})")


@app.command()
def quantize(
    model_dir: Path = typer.Argument(..., metavar="MODEL_DIR", help="A local Hugging Face causal-LM directory."),
    scheme: str = typer.Option(..., help="Scheme name (see `schemes`)."),
    out: Path = typer.Option(..., help="Directory to write the quantized checkpoint to (must not exist)."),
    calibration: Optional[Path] = typer.Option(None, help="Calibration text for gptq/awq, JSONL (default: shipped text)."),
    allow_pickle: bool = typer.Option(False, help="Read pickle-only weights (.bin) with torch.load(weights_only=True)."),
) -> None:
    """Write SCHEME applied to MODEL_DIR as a checkpoint that transformers loads."""
    from .audit import calibration_tokens
    from .data import load_texts
    from .models.loading import load_checkpoint, write_checkpoint
    from .quantize.base import SchemeUnavailable
    from .quantize.registry import get_scheme

    s = get_scheme(scheme)
    if out.exists():
        raise InputError(f"{out}: already exists; choose a new directory")
    _check_out(out)
    texts = load_texts(calibration) if calibration else None
    ckpt = load_checkpoint(model_dir, allow_pickle=allow_pickle)
    calib = calibration_tokens(ckpt.tokenizer, texts, "--calibration")[0] if s.calibrated else None
    try:
        model = s.build(ckpt, calib)
    except SchemeUnavailable as exc:
        raise InputError(f"scheme {scheme}: {exc}") from None
    write_checkpoint(model, ckpt.tokenizer, out)
    err.print(f"wrote {s.name} checkpoint to {out}")


class _TrainingBar:
    """A rich progress bar with the current loss on stderr, shown only on a terminal."""

    def __init__(self, what: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.what = what
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
            TimeRemainingColumn(), console=err, disable=not err.is_terminal,
        )
        self.task = None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __call__(self, step: int, total: int, loss: float) -> None:
        if self.task is None:
            self.task = self.progress.add_task(self.what, total=total, loss="-")
            if not err.is_terminal:  # a log (CI) gets one line saying training started
                _say(f"{self.what}: {total} steps")
        self.progress.update(self.task, completed=step, loss=f"{loss:.4f}")

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)


def _unlearn_config(method, lr, sure, epochs, steps, batch_size, alpha, beta, seed, n_forget):
    from .remediate.unlearn import METHODS, UnlearnConfig

    if method not in METHODS:
        import difflib

        close = difflib.get_close_matches(method, METHODS, n=1)
        raise InputError(f"unknown method {method!r}" + (f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(METHODS)}"))
    if steps is None:
        steps = epochs * -(-n_forget // batch_size)
    # Defaults: lr 1e-5 (MUSE, paper App. D) or 1e-4 with SURE (paper Table 6); α = 1 (Table 5, NEWS).
    lr = lr if lr is not None else (1e-4 if sure else 1e-5)
    return UnlearnConfig(method, lr=lr, steps=steps, batch_size=batch_size, alpha=alpha, beta=beta, seed=seed)


def _check_percentile(p: float) -> None:
    if not 0 < p < 100:
        raise InputError(f"--saliency-percentile must be between 0 and 100 (the paper uses 90, 95 or 99), got {p}")


@app.command("unlearn")
def unlearn_command(
    original_dir: Path = typer.Argument(..., metavar="ORIGINAL_DIR", help="The model to unlearn (local HF directory)."),
    forget: Path = typer.Option(..., help="Forget set, JSONL of {\"text\": ...}."),
    retain: Path = typer.Option(..., help="Retain set, JSONL of {\"text\": ...}."),
    method: str = typer.Option("ga_gdr", help="ga, ga_gdr, ga_klr, npo, npo_gdr or npo_klr."),
    sure: bool = typer.Option(False, help="SURE: unlearn only the salient modules (paper Sec. 6.1)."),
    saliency_percentile: float = typer.Option(90.0, help="SURE threshold γ, a percentile of module scores."),
    per_layer: bool = typer.Option(False, help="SURE scores whole layers instead of single Linear modules."),
    lr: Optional[float] = typer.Option(None, help="Learning rate (default 1e-5, or 1e-4 with --sure)."),
    epochs: int = typer.Option(5, min=1, help="Passes over the forget set (ignored when --steps is given)."),
    steps: Optional[int] = typer.Option(None, min=1, help="Optimizer steps."),
    batch_size: int = typer.Option(8, min=1),
    max_length: int = typer.Option(2048, min=8, help="Tokens per training sequence."),
    alpha: float = typer.Option(1.0, help="Retain-regularizer weight α."),
    beta: float = typer.Option(0.1, help="NPO β."),
    seed: int = typer.Option(0),
    out: Path = typer.Option(..., help="Directory for the unlearned checkpoint (must not exist)."),
    allow_pickle: bool = typer.Option(False, help="Read pickle-only weights (.bin) with torch.load(weights_only=True)."),
) -> None:
    """Unlearn the forget set from a model (GA or NPO, with GDR or KLR), optionally with SURE."""
    from .data import load_texts
    from .models.loading import load_checkpoint
    from .remediate.run import SureConfig, run_unlearning

    _check_percentile(saliency_percentile)
    if out.exists():
        raise InputError(f"{out}: already exists; choose a new directory")
    _check_out(out)
    f, r = load_texts(forget), load_texts(retain)
    cfg = _unlearn_config(method, lr, sure, epochs, steps, batch_size, alpha, beta, seed, len(f.texts))
    start = load_checkpoint(original_dir, "original", allow_pickle=allow_pickle)
    needs_ref = cfg.method.startswith("npo") or cfg.method.endswith("klr")
    reference = load_checkpoint(original_dir, "original", allow_pickle=allow_pickle) if needs_ref else None
    with _TrainingBar(f"unlearning ({cfg.method}{' + SURE' if sure else ''})") as bar:
        record = run_unlearning(start, reference, f, r, cfg, SureConfig(saliency_percentile, per_layer) if sure else None,
                                out, max_length, on_step=bar)
    if record["sure"]:
        err.print(f"SURE selected {len(record['sure']['selected'])} of {len(record['sure']['scores'])} units")
    err.print(f"wrote {out} (see {out / 'unlearning.json'})")


@app.command()
def remediate(
    model_dir: Path = typer.Argument(..., metavar="UNLEARNED_OR_ORIGINAL_DIR", help="The model to remediate."),
    original: Path = typer.Option(..., help="The model before unlearning (reference for NPO/KLR and the audit)."),
    forget: Path = typer.Option(..., help="Forget set, JSONL."),
    retain: Path = typer.Option(..., help="Retain set, JSONL."),
    holdout: Path = typer.Option(..., help="Holdout set, JSONL (for --verify)."),
    method: str = typer.Option("ga_gdr", help="ga, ga_gdr, ga_klr, npo, npo_gdr or npo_klr."),
    sure: bool = typer.Option(True, help="SURE (on by default here)."),
    saliency_percentile: float = typer.Option(90.0),
    per_layer: bool = typer.Option(False),
    lr: Optional[float] = typer.Option(None, help="Learning rate (default 1e-4 with SURE, else 1e-5)."),
    epochs: int = typer.Option(5, min=1),
    steps: Optional[int] = typer.Option(None, min=1),
    batch_size: int = typer.Option(8, min=1),
    max_length: int = typer.Option(2048, min=8),
    alpha: float = typer.Option(1.0),
    beta: float = typer.Option(0.1),
    seed: int = typer.Option(0),
    schemes: str = typer.Option("fp32,rtn-int8,rtn-int4,bnb-fp4", help="Schemes for --verify."),
    verify: bool = typer.Option(False, help="Audit the result and exit with the audit's code."),
    fmt: str = typer.Option("table", "--format", help="stdout format for --verify: table or json."),
    out: Path = typer.Option(..., help="Directory: OUT/model is the checkpoint, OUT/report.json the audit."),
    allow_pickle: bool = typer.Option(False, help="Read pickle-only weights (.bin) with torch.load(weights_only=True)."),
) -> None:
    """Remediate with SURE; with --verify, re-audit the result under the same schemes."""
    from .audit import AuditConfig, AuditData, run_audit
    from .data import load_texts
    from .models.loading import load_checkpoint
    from .quantize.registry import parse_schemes
    from .remediate.run import SureConfig, run_unlearning

    _check_percentile(saliency_percentile)
    _check_format(fmt)
    if (out / "model").exists():
        raise InputError(f"{out / 'model'}: already exists; choose a new --out")
    _check_out(out)
    names = tuple(s.name for s in parse_schemes(schemes))
    f, r, h = load_texts(forget), load_texts(retain), load_texts(holdout)
    cfg = _unlearn_config(method, lr, sure, epochs, steps, batch_size, alpha, beta, seed, len(f.texts))
    start = load_checkpoint(model_dir, "start", allow_pickle=allow_pickle)
    ref = load_checkpoint(original, "original", allow_pickle=allow_pickle)
    with _TrainingBar(f"remediating ({cfg.method}{' + SURE' if sure else ''})") as bar:
        run_unlearning(start, ref, f, r, cfg, SureConfig(saliency_percentile, per_layer) if sure else None,
                       out / "model", max_length, on_step=bar)
    err.print(f"wrote {out / 'model'}")
    if not verify:
        return
    del start, ref
    with _Steps() as steps_:
        report = run_audit(str(out / "model"), AuditData(forget=f, holdout=h, retain=r), AuditConfig(schemes=names, seed=seed, allow_pickle=allow_pickle),
                           original_dir=str(original), on_step=steps_)
    raise typer.Exit(_emit(report, fmt, out))


@app.command("report")
def report_command(
    report_json: Path = typer.Argument(..., metavar="REPORT_JSON", help="A report.json written by `audit`."),
    fmt: str = typer.Option("html", "--format", help="html, md, junit or json."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="File to write (default: stdout)."),
    policy: Optional[Path] = typer.Option(None, help="Re-judge the stored results under this policy file (no model is run)."),
    fail_on: str = typer.Option("inconclusive", help="inconclusive or fail: what makes the exit code non-zero (and a JUnit failure)."),
) -> None:
    """Render a report.json as HTML, Markdown or JUnit, optionally re-judged under another policy."""
    from .report.load import load_report, rejudge
    from .report.render import FORMATS, render
    from .report.write import write_text_atomic

    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    _check_fail_on(fail_on)
    _check_out(output, file=True, flag="--output")
    report = load_report(report_json)
    if policy is not None:
        pol, source = _policy(policy)
        report = rejudge(report, pol, f"policy file {source}")
    text = render(report, fmt, fail_on)
    if output is None:
        sys.stdout.write(text)
    else:
        write_text_atomic(output, text)
        err.print(f"wrote {output} ({fmt}): verdict {report['verdict']}")
    raise typer.Exit(_exit_code(report["verdict"], fail_on))


@app.command("schema")
def schema_command() -> None:
    """Print the JSON Schema of report.json."""
    from .resources import data_dir

    sys.stdout.write((data_dir("report_templates") / "report.schema.json").read_text(encoding="utf-8"))


@app.command("diff")
def diff_command(
    original_dir: Path = typer.Argument(..., metavar="ORIGINAL_DIR", help="The model before unlearning."),
    other_dir: Path = typer.Argument(..., metavar="UNLEARNED_DIR", help="The claimed-unlearned model."),
    schemes: str = typer.Option("rtn-int8,rtn-int4,nf4,gguf-q4_0", help="Schemes whose grids to compare."),
    out: Optional[Path] = typer.Option(None, help="Write the full per-module result to this JSON file."),
    fmt: str = typer.Option("table", "--format", help="stdout format: table or json."),
) -> None:
    """Weight forensics without data: how many grid cells unlearning left unchanged, per scheme."""
    from .quantize.forensics import diff
    from .quantize.registry import parse_schemes
    from .report.console import render_diff
    from .report.write import to_json_text, write_json_atomic

    _check_format(fmt)
    if out is not None and out.is_dir():
        raise InputError(f"{out}: --out must be a file path for diff")
    _check_out(out, file=True)
    result = diff(original_dir, other_dir, parse_schemes(schemes))
    if out is not None:
        write_json_atomic(out, result)
    if fmt == "json":
        sys.stdout.write(to_json_text(result))
    else:
        render_diff(result, _stdout_console())


@app.command("schemes")
def list_schemes() -> None:
    """List the quantization schemes with a one-line description each."""
    from .quantize.registry import SCHEMES

    for name, factory in SCHEMES.items():
        typer.echo(f"{name:<14} {factory().description}")


def _say(message: str) -> None:
    """One unwrapped line on stderr (rich would wrap long paths onto several lines)."""
    sys.stderr.write("unlearn-audit: " + " ".join(message.split()) + "\n")


def _quiet_libraries() -> None:
    """Library progress bars and advisories would interleave with our stderr; our own stages suffice."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    # transformers imports torchao when it is installed; its CUDA-only kernels then log load failures.
    for name in ("bitsandbytes", "torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


class _Signalled(BaseException):
    """SIGINT or SIGTERM, raised like Ctrl-C so every atomic writer removes its temp files on the way out.
    Not a KeyboardInterrupt: typer turns that into a silent exit code, and the user should be told."""

    def __init__(self, signum: int) -> None:
        self.word, self.code = ("interrupted", 130) if signum == signal.SIGINT else ("terminated", 143)


def _raise_signalled(signum, frame) -> None:
    raise _Signalled(signum)


def main(argv: list[str] | None = None) -> None:
    signal.signal(signal.SIGTERM, _raise_signalled)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # keep SIGINT ignored if it was
        signal.signal(signal.SIGINT, _raise_signalled)
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    _quiet_libraries()
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, prog_name="unlearn-audit", standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except click_exc.UsageError as exc:
        _say(f"error: {exc.format_message()}")
        code = 2
    except InputError as exc:
        _say(f"error: {exc}")
        code = 2
    except (KeyboardInterrupt, typer.Abort):
        _say("interrupted")
        code = 130
    except _Signalled as exc:
        _say(exc.word)
        code = exc.code
    except Exception as exc:  # a bug in the tool, not a finding: keep it apart from FAIL (exit 3)
        if debug:
            err.print_exception()
        _say(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug)")
        code = 3
    sys.exit(code or 0)
