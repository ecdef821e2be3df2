"""``unlearn-audit audit``: the audit itself, from files or a MUSE directory."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .attest_cmds import load_signing_key, write_attestation
from .common import (
    DEFAULT_OUT,
    ENV,
    OUT_HELP,
    QUIET_HELP,
    REPORT_FILES,
    SCHEMES_HELP,
    AuditFormat,
    FailOn,
    InputError,
    Steps,
    app,
    audit_config,
    check_not_input,
    check_out,
    emit,
    model_ref,
    parse_batch_size,
    real_path,
)


@app.command()
def audit(
    model_dir: Path = typer.Argument(..., metavar="MODEL_DIR", help="Claimed-unlearned model: a local Hugging Face directory, or a Hub id "
                                     "(org/name; see --revision)."),
    revision: Optional[str] = typer.Option(None, help="MODEL_DIR's revision on the Hub: a branch, tag or commit (default: main). "
                                           "--original, --reference and --adapter take org/name@REV."),
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
    schemes: Optional[str] = typer.Option(None, envvar=ENV("schemes"), help=SCHEMES_HELP),
    out: Path = typer.Option(DEFAULT_OUT, "-o", "--out", envvar=ENV("out"), help=OUT_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", envvar=ENV("quiet"), help=QUIET_HELP),
    seed: int = typer.Option(0, envvar=ENV("seed"), help="Seed for the bootstrap and any randomness."),
    fmt: AuditFormat = typer.Option(AuditFormat.table, "--format", envvar=ENV("format"),
                                    help="What to print on stdout: the table, the report JSON, or its Markdown or JUnit view."),
    batch_size: str = typer.Option("8", envvar=ENV("batch-size"),
                                   help="Sequences per forward/generate batch, or auto: as many as the memory left beside the "
                                        "resident model holds at the longest text (docs/performance.md)."),
    backend: str = typer.Option("reference", envvar=ENV("backend"),
                                help="reference (the tool's exact algorithms) or library (bitsandbytes/torchao twins)."),
    policy: Optional[Path] = typer.Option(None, envvar=ENV("policy"), help="TOML file of verdict thresholds (docs/policy.md)."),
    fresh: bool = typer.Option(False, help="Ignore the resume cache under --out and the shared cache, and recompute everything."),
    cache_dir: Optional[Path] = typer.Option(None, envvar=ENV("cache-dir"),
                                             help="Cache of the original's and reference's results, shared across audits (default: user cache dir)."),
    device: str = typer.Option("auto", envvar=ENV("device"), help="cpu, cuda, cuda:N or auto (cuda when available)."),
    dtype: str = typer.Option("auto", envvar=ENV("dtype"), help="auto (the checkpoint's bfloat16 or float16 where the device "
                              "computes it fast: bfloat16 on an Ampere+ GPU or a CPU with AVX512-BF16/AMX, float16 on a GPU or "
                              "an AMX-FP16 CPU; else float32), float32, bfloat16, float16."),
    fail_on: FailOn = typer.Option(FailOn.inconclusive, envvar=ENV("fail-on"),
                                   help="inconclusive: FAIL exits 1 and INCONCLUSIVE 4; fail: INCONCLUSIVE exits 0."),
    muse_strict: bool = typer.Option(False, help="Literal MUSE prompts: trailing-space KnowMem query, 128-token VerbMem."),
    executor: str = typer.Option("local", envvar=ENV("executor"),
                                 help="Where variant jobs run: local (here, one at a time) or ray (a Ray cluster; the ray extra)."),
    ray_address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help="Ray cluster to join with --executor ray (default: a local instance)."),
    limit: Optional[int] = typer.Option(None, min=1, help="Audit a seeded uniform sample of N records from each text set (forget, holdout, retain)."),
    allow_pickle: bool = typer.Option(False, help="Read pickle-only weights (.bin) with torch.load(weights_only=True); recorded in the report."),
    attest_key: Optional[Path] = typer.Option(None, envvar=ENV("attest-key"), help="Also sign the finished audit: write "
                                              "report.intoto.json beside report.json with this PEM private key (see `attest`)."),
    model_signature: Optional[Path] = typer.Option(None, help="An OpenSSF model-signing signature of MODEL_DIR, verified before the "
                                                   "audit and recorded in the report (the model-signing extra); one that fails is bad input."),
    model_signature_key: Optional[Path] = typer.Option(None, help="The PEM public key --model-signature was signed with."),
    no_draft: bool = typer.Option(False, "--no-draft",
                                  help="Decode each variant token by token with transformers' generate, instead of verifying the "
                                  "previous variant's outputs as drafts and encoding shared prompt prefixes once."),
) -> None:
    """Audit a checkpoint: quantize it under each scheme, probe every variant, and give a verdict.

    Exit codes: 0 PASS, 1 FAIL, 2 bad input, 3 internal error, 4 INCONCLUSIVE (0 with --fail-on fail).
    """
    from dataclasses import replace

    from ..audit import run_audit
    from ..data import load_qa, load_texts
    from ..muse_dir import read_muse_dir
    from ..pipeline.cache import VariantCache, shared_dir
    from ..pipeline.executor import get_executor
    from ..pipeline.types import AuditData

    writes = REPORT_FILES + (("report.intoto.json",) if attest_key else ())
    check_out(out, writes=writes)
    model_dir = model_ref(model_dir, "MODEL_DIR", "audited", revision, allow_pickle)
    original, reference = (model_ref(original, "--original", "original", allow_pickle=allow_pickle),
                           model_ref(reference, "--reference", "reference", allow_pickle=allow_pickle))
    adapter = model_ref(adapter, "--adapter", "adapter", allow_pickle=allow_pickle, adapter=True)
    signing_key = load_signing_key(attest_key) if attest_key is not None else None  # a wrong key costs nothing yet
    if model_signature_key is not None and model_signature is None:
        raise InputError("--model-signature-key: no --model-signature is given for it to check")
    check_not_input(out, "--out", {"MODEL_DIR": model_dir, "--original": original, "--reference": reference, "--adapter": adapter,
                                   "--muse": muse, "--forget": forget, "--holdout": holdout, "--retain": retain,
                                   "--forget-qa": forget_qa, "--retain-qa": retain_qa, "--holdout-qa": holdout_qa, "--icl": icl,
                                   "--calibration": calibration, "--relearn-data": relearn_data},
                    writes=writes)
    if cache_dir is not None:
        real_path(cache_dir, "--cache-dir")
    jobs = get_executor(executor, ray_address)
    cfg = audit_config(schemes, backend, policy, device, dtype, remote=executor != "local", seed=seed, batch_size=parse_batch_size(batch_size),
                       muse_strict=muse_strict, reference_auc=reference_auc, allow_pickle=allow_pickle, limit=limit,
                       draft=not no_draft)
    if reference_auc is not None and reference is not None:
        raise InputError("--reference and --reference-auc conflict: give the retrained model or its AUC, not both")
    check_set_options(muse, forget=forget, holdout=holdout, retain=retain, forget_qa=forget_qa, retain_qa=retain_qa,
                       holdout_qa=holdout_qa, icl=icl)
    if muse is not None and limit is not None:
        raise InputError("--limit samples JSONL text sets; it does not apply to --muse, whose sets are read whole")
    if adapter is not None:  # a broken adapter or a missing peft is reported before any model is loaded
        from ..models.adapter import check_adapter_dir, require_peft

        check_adapter_dir(adapter.path, allow_pickle)
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
    signature = None
    if model_signature is not None:  # before any work: an audit of bytes other than the signed ones is refused
        from ..attest.model_signature import verify_model_signature

        signature = verify_model_signature(model_dir, model_signature, model_signature_key)
    with Steps(quiet=quiet) as steps:
        report = run_audit(
            model_dir, data, cfg,
            original_dir=original,
            reference_dir=reference,
            adapter_dir=adapter,
            on_step=steps,
            cache=VariantCache(out / ".cache", fresh),
            executor=jobs,
            shared=VariantCache(cache_dir or shared_dir(), fresh),
        )
    if signature is not None:
        report["inputs"]["model"]["signature"] = signature
    code = emit(report, fmt, out, fail_on)
    if signing_key is not None:
        write_attestation(out / "report.json", signing_key)
    raise typer.Exit(code)


def check_set_options(muse: Optional[Path], **sets: Optional[Path]) -> None:
    """--muse reads every set from its directory, so a set given as well is refused rather than silently
    preferred; without --muse, --forget and --holdout are required."""
    given = [f"--{name.replace('_', '-')}" for name, path in sets.items() if path is not None]
    if muse is not None and given:
        raise InputError(f"--muse reads every set from {muse}; drop {', '.join(given)} (only --calibration and --relearn-data may be given with it)")
    for name in ("forget", "holdout"):
        if muse is None and sets[name] is None:
            raise InputError(f"missing option '--{name}' (or give --muse DIR)")
