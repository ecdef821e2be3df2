"""Commands that write a model: ``quantize``, ``unlearn`` and ``remediate`` (SURE)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import typer

from ..steps import Step
from .common import (
    ENV,
    QUIET_HELP,
    REPORT_FILES,
    REVISION_HELP,
    SCHEMES_HELP,
    AuditFormat,
    FailOn,
    InputError,
    PlainLog,
    Steps,
    app,
    audit_config,
    check_out,
    check_percentile,
    emit,
    err,
    model_ref,
    resolve_device,
    say,
)

DEVICE_HELP = "cpu, cuda, cuda:N or auto (cuda when available)."
TRAIN_COMPUTE_HELP = ("float32 (exact), bfloat16 or float16 (mixed precision on float32 master weights, as the Trainer's "
                      "bf16/fp16; with --train-dtype bfloat16: bfloat16 arithmetic, or float32 on the bfloat16 values), or auto "
                      "(the default: bfloat16 on a GPU that computes it natively, else float32; with --train-dtype bfloat16, "
                      "bfloat16 arithmetic where the device has it).")
GRAD_ACCUM_HELP = ("Split each step's forget and retain batches into this many micro-batches, backpropagated one at a time "
                   "(the same gradient, a fraction of the activation memory).")


@app.command()
def quantize(
    model_dir: Path = typer.Argument(..., metavar="MODEL_DIR", help="A local Hugging Face causal-LM directory, or a Hub id (org/name)."),
    revision: Optional[str] = typer.Option(None, help=REVISION_HELP),
    schemes: str = typer.Option(..., "--schemes", "--scheme", envvar=ENV("schemes"),
                                help="Comma-separated scheme names (see `schemes`). One scheme: OUT is its checkpoint; several: OUT/<scheme>."),
    out: Path = typer.Option(..., "-o", "--out", help="Directory to write the quantized checkpoint(s) to (must not exist)."),
    calibration: Optional[Path] = typer.Option(None, help="Calibration text for gptq/awq, JSONL (default: shipped text)."),
    allow_pickle: bool = typer.Option(False, help="Read pickle-only weights (.bin) with torch.load(weights_only=True)."),
) -> None:
    """Write each scheme applied to MODEL_DIR as a checkpoint that transformers loads."""
    from ..data import load_texts
    from ..models.loading import load_checkpoint, write_checkpoint
    from ..pipeline.workload import calibration_tokens
    from ..quantize.base import SchemeUnavailable
    from ..quantize.registry import parse_schemes

    chosen = parse_schemes(schemes)
    if out.exists():
        raise InputError(f"{out}: already exists; choose a new directory")
    check_out(out)
    texts = load_texts(calibration) if calibration else None
    ckpt = load_checkpoint(model_ref(model_dir, "MODEL_DIR", "model", revision, allow_pickle), allow_pickle=allow_pickle)
    try:  # one model in memory at a time; a scheme that cannot run removes OUT, which did not exist before
        for s in chosen:
            calib = calibration_tokens(ckpt.tokenizer, texts, "--calibration")[0] if s.calibrated else None
            try:
                model = s.build(ckpt, calib)
            except SchemeUnavailable as exc:
                raise InputError(f"scheme {s.name}: {exc}") from None
            where = out if len(chosen) == 1 else out / s.name
            write_checkpoint(model, ckpt.tokenizer, where)
            del model
            say(f"wrote {s.name} checkpoint to {where}")
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise


class _TrainingBar:
    """Training progress on stderr: a rich bar with the current loss on a terminal, plain lines in a log
    (``PlainLog``: at every tenth of the way and at least every 30 s), nothing with ``--quiet``."""

    def __init__(self, what: str, quiet: bool = False) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.what = what
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
            TimeRemainingColumn(), console=err, disable=not err.is_terminal or quiet,
        )
        self.plain = PlainLog(grace=1.0) if not err.is_terminal and not quiet else None
        self.task = None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __call__(self, step: int, total: int, loss: float) -> None:
        if self.plain:
            self.plain(Step(f"{self.what}: step {step}/{total}, loss {loss:.4f}", self.what, step, total))
        if self.task is None:
            self.task = self.progress.add_task(self.what, total=total, loss="-")
        self.progress.update(self.task, completed=step, loss=f"{loss:.4f}")

    def __exit__(self, *exc):
        if self.plain:
            self.plain.close(failed=exc[0] is not None)
        self.progress.__exit__(*exc)


@app.command("unlearn")
def unlearn_command(
    original_dir: Path = typer.Argument(..., metavar="ORIGINAL_DIR", help="The model to unlearn: a local HF directory, or a Hub id (org/name)."),
    revision: Optional[str] = typer.Option(None, help=REVISION_HELP),
    forget: Path = typer.Option(..., help="Forget set, JSONL of {\"text\": ...}."),
    retain: Path = typer.Option(..., help="Retain set, JSONL of {\"text\": ...}."),
    method: str = typer.Option("ga_gdr", help="ga, ga_gdr, ga_klr, npo, npo_gdr or npo_klr."),
    sure: bool = typer.Option(False, help="SURE: unlearn only the salient modules (paper Sec. 6.1)."),
    saliency_percentile: Optional[float] = typer.Option(None, help="SURE threshold γ, a percentile of module scores (default 90)."),
    per_layer: bool = typer.Option(False, help="SURE scores whole layers instead of single Linear modules."),
    lr: Optional[float] = typer.Option(None, help="Learning rate (default 1e-5, or 1e-4 with --sure)."),
    epochs: Optional[int] = typer.Option(None, min=1, help="Passes over the forget set (default 5; ignored when --steps is given)."),
    steps: Optional[int] = typer.Option(None, min=1, help="Optimizer steps."),
    batch_size: int = typer.Option(8, min=1),
    max_length: int = typer.Option(2048, min=8, help="Tokens per training sequence."),
    alpha: Optional[float] = typer.Option(None, help="Retain-regularizer weight α (default 1)."),
    beta: float = typer.Option(0.1, help="NPO β."),
    seed: int = typer.Option(0),
    out: Path = typer.Option(..., "-o", "--out", help="Directory for the unlearned checkpoint (must not exist)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", envvar=ENV("quiet"), help=QUIET_HELP),
    preset: Optional[str] = typer.Option(None, help="The paper's settings: paper-news or paper-books (Appendix D; flags given "
                                         "override them)."),
    train_dtype: str = typer.Option("float32", help="float32, or bfloat16: model and optimizer state stored in bfloat16, "
                                    "as the paper's runs had them (computed in float32 and rounded after every step where the "
                                    "CPU has no bfloat16 instructions; unlearning.json says which)."),
    device: str = typer.Option("auto", envvar=ENV("device"), help=DEVICE_HELP),
    dtype: str = typer.Option("auto", help=TRAIN_COMPUTE_HELP),
    grad_accum: int = typer.Option(1, min=1, help=GRAD_ACCUM_HELP),
    allow_pickle: bool = typer.Option(False, help="Read pickle-only weights (.bin) with torch.load(weights_only=True)."),
    confine_to: Optional[str] = typer.Option(None, help="Positive control: keep every weight in its cell of the start's "
                                             "grid under this rtn-* scheme, so Q(unlearned) = Q(start) (docs/unlearning.md)."),
) -> None:
    """Unlearn the forget set from a model (GA or NPO, with GDR or KLR), optionally with SURE."""
    from ..data import load_texts
    from ..models.loading import load_checkpoint
    from ..quantize.registry import get_scheme
    from ..quantize.rtn import RTNScheme
    from ..remediate.presets import preset_defaults, unlearn_config
    from ..remediate.run import SureConfig, run_unlearning
    from ..remediate.unlearn import needs_original

    given = {"epochs": epochs, "alpha": alpha, "saliency_percentile": saliency_percentile}
    knobs = {**preset_defaults(preset, method, sure), **{k: v for k, v in given.items() if v is not None}}
    check_percentile(knobs["saliency_percentile"])
    if out.exists():
        raise InputError(f"{out}: already exists; choose a new directory")
    check_out(out)
    f, r = load_texts(forget), load_texts(retain)
    device = resolve_device(device)
    cfg = unlearn_config(method, lr, sure, knobs["epochs"], steps, batch_size, knobs["alpha"], beta, seed, len(f.texts), train_dtype,
                         dtype, device, grad_accum)
    grid = get_scheme(confine_to) if confine_to is not None else None
    if grid is not None and not isinstance(grid, RTNScheme):
        raise InputError(f"--confine-to supports the rtn-* schemes, whose cells are intervals; got {confine_to}")
    if grid is not None and train_dtype == "bfloat16":  # casting would move the pinned scale setters off the grid
        raise InputError("--confine-to keeps float32 weights on the start's grid; it cannot be combined with --train-dtype bfloat16")
    original_dir = model_ref(original_dir, "ORIGINAL_DIR", "original", revision, allow_pickle)
    start = load_checkpoint(original_dir, "original", device, allow_pickle)
    reference = load_checkpoint(original_dir, "original", device, allow_pickle) if needs_original(cfg.method) else None
    with _TrainingBar(f"unlearning ({cfg.method}{' + SURE' if sure else ''})", quiet) as bar:
        record = run_unlearning(start, reference, f, r, cfg, SureConfig(knobs["saliency_percentile"], per_layer) if sure else None,
                                out, max_length, on_step=bar, confine_to=grid)
    if record["sure"]:
        say(f"SURE selected {len(record['sure']['selected'])} of {len(record['sure']['scores'])} units")
    say(f"wrote {out} (see {out / 'unlearning.json'})")


@app.command()
def remediate(
    model_dir: Path = typer.Argument(..., metavar="UNLEARNED_OR_ORIGINAL_DIR", help="The model to remediate: a local directory or a Hub id."),
    revision: Optional[str] = typer.Option(None, help=REVISION_HELP),
    original: Path = typer.Option(..., help="The model before unlearning (reference for NPO/KLR and the audit); org/name@REV for a Hub id."),
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
    schemes: Optional[str] = typer.Option(None, envvar=ENV("schemes"), help="Schemes for --verify. " + SCHEMES_HELP),
    verify: bool = typer.Option(False, help="Audit the result and exit with the audit's code."),
    fmt: AuditFormat = typer.Option(AuditFormat.table, "--format", envvar=ENV("format"), help="stdout format for --verify."),
    policy: Optional[Path] = typer.Option(None, envvar=ENV("policy"), help="TOML file of verdict thresholds for --verify."),
    fail_on: FailOn = typer.Option(FailOn.inconclusive, envvar=ENV("fail-on"),
                                   help="What makes --verify exit non-zero: inconclusive (FAIL 1, INCONCLUSIVE 4) or fail (FAIL only)."),
    device: str = typer.Option("auto", envvar=ENV("device"), help=DEVICE_HELP),
    dtype: str = typer.Option("auto", envvar=ENV("dtype"), help="Arithmetic of the training (float32, bfloat16 or float16 mixed "
                              "precision; auto: bfloat16 on a GPU that computes it natively, float32 on a CPU) and of --verify's "
                              "audit (as `audit --dtype`)."),
    grad_accum: int = typer.Option(1, min=1, help=GRAD_ACCUM_HELP),
    backend: str = typer.Option("reference", envvar=ENV("backend"), help="--verify's quantizer backend: reference or library."),
    out: Path = typer.Option(..., "-o", "--out", help="Directory: OUT/model is the checkpoint, OUT/report.json the audit."),
    quiet: bool = typer.Option(False, "--quiet", "-q", envvar=ENV("quiet"), help=QUIET_HELP),
    allow_pickle: bool = typer.Option(False, help="Read pickle-only weights (.bin) with torch.load(weights_only=True)."),
) -> None:
    """Remediate with SURE; with --verify, re-audit the result under the same schemes and exit with the
    audit's code (0 PASS, 1 FAIL, 4 INCONCLUSIVE)."""
    from ..audit import run_audit
    from ..data import load_texts
    from ..models.loading import load_checkpoint
    from ..pipeline.cache import VariantCache, shared_dir
    from ..pipeline.types import AuditData
    from ..remediate.presets import unlearn_config
    from ..remediate.run import SureConfig, run_unlearning

    check_percentile(saliency_percentile)
    if (out / "model").exists():
        raise InputError(f"{out / 'model'}: already exists; choose a new --out")
    check_out(out, writes=REPORT_FILES if verify else ())
    # The re-audit's settings are checked before any training, so a bad --policy costs nothing.
    audit_cfg = audit_config(schemes, backend, policy, device, dtype, seed=seed, allow_pickle=allow_pickle) if verify else None
    f, r, h = load_texts(forget), load_texts(retain), load_texts(holdout)
    where = resolve_device(device)
    cfg = unlearn_config(method, lr, sure, epochs, steps, batch_size, alpha, beta, seed, len(f.texts), dtype=dtype, device=where,
                         grad_accum=grad_accum)
    model_dir = model_ref(model_dir, "UNLEARNED_OR_ORIGINAL_DIR", "start", revision, allow_pickle)
    original = model_ref(original, "--original", "original", allow_pickle=allow_pickle)
    start = load_checkpoint(model_dir, "start", where, allow_pickle)
    ref = load_checkpoint(original, "original", where, allow_pickle)
    with _TrainingBar(f"remediating ({cfg.method}{' + SURE' if sure else ''})", quiet) as bar:
        run_unlearning(start, ref, f, r, cfg, SureConfig(saliency_percentile, per_layer) if sure else None,
                       out / "model", max_length, on_step=bar)
    say(f"wrote {out / 'model'}")
    if not verify:
        return
    del start, ref
    with Steps(quiet=quiet) as steps_:
        report = run_audit(str(out / "model"), AuditData(forget=f, holdout=h, retain=r), audit_cfg, original_dir=original,
                           on_step=steps_, shared=VariantCache(shared_dir()))
    raise typer.Exit(emit(report, fmt, out, fail_on))
