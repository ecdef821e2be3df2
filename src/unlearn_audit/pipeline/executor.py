"""Where the audit's variant jobs run: here, one after another (the default), or across a Ray cluster.

A variant is an independent job: build it from the audited (and original) checkpoint, run every probe
on it, measure its weight forensics, free it. Nothing in one job reads another's output, so jobs can fan
out over GPUs and machines. Everything else stays in the driver: the data are tokenized once and shipped
to the jobs, the reference model is scored once, and scoring, the resume cache and the report happen
after the jobs return, in scheme order. So the report does not depend on where the jobs ran (a test
checks that the Ray executor's results equal the local executor's).

- ``LocalExecutor`` runs the jobs lazily in this process, each filling the audit's one resident model
  (models/weights.py), as the audit's memory bound requires.
- ``RayExecutor`` (``--executor ray``, the ``ray`` extra) submits every job at once as a Ray task. Each
  task opens the checkpoints itself from the same paths (on a cluster, a file system every node mounts),
  asks for one GPU when the audit runs on CUDA and one CPU otherwise, and returns the probe outputs.
  ``ray.init()`` joins the cluster named by ``--ray-address`` (or ``RAY_ADDRESS``), else starts a local
  instance that is shut down at the end. Interrupting the audit cancels the tasks still running.
"""

from __future__ import annotations

from typing import Iterator

import torch

from ..errors import InputError, first_line
from ..models.decode import DraftBook
from ..models.hf import BatchSize, free_device_memory, out_of_memory
from ..quantize.base import Scheme, SchemeUnavailable
from .types import AuditConfig, Failed, JobContext, JobOutcome, Skipped, Workload
from .variant import run_variant


def run_job(scheme: Scheme, ctx: JobContext) -> JobOutcome:
    """One variant: its ``VariantRun``, or ``Skipped`` with the reason when the scheme cannot run here,
    including when the device runs out of memory building or probing it (the next variant refills the
    resident model from the files, so nothing half-built survives)."""
    try:
        return run_variant(scheme, ctx.ckpt, ctx.original, ctx.work, ctx.cfg, ctx.on_step, ctx.resident,
                           ctx.originals.get(scheme.name), ctx.drafts, ctx.batch)
    except SchemeUnavailable as exc:
        return Skipped(str(exc))
    except Exception as exc:
        where = out_of_memory(exc)
        if where is None:
            raise
        reason = f"out of {where} memory while building or probing this variant ({first_line(exc)})"
    free_device_memory()  # here, where the failed variant's tensors are no longer referenced
    return Skipped(reason)


class LocalExecutor:
    name = "local"

    def describe(self) -> dict:
        return {"name": self.name}

    def run(self, schemes: list[Scheme], ctx: JobContext) -> Iterator[JobOutcome]:
        for scheme in schemes:  # lazily: the next variant is built only when the previous one was consumed
            yield run_job(scheme, ctx)


_LOADED: dict = {}  # per Ray worker process: checkpoints already opened, and its resident model


def _remote_job(scheme: Scheme, model_dir: str, original_dir: str | None, work: Workload, cfg: AuditConfig,
                originals: dict) -> JobOutcome:
    """A Ray task: load (or reuse) the checkpoints in this worker and run one variant job. Input errors
    come back as ``Failed``, so the driver can report them in one line."""
    from ..models.loading import open_checkpoint
    from .variant import resident_model

    torch.set_num_threads(1)
    try:
        def load(path, role):
            key = (path, role, cfg.allow_pickle)
            if key not in _LOADED:
                _LOADED[key] = open_checkpoint(path, role, allow_pickle=cfg.allow_pickle)
            return _LOADED[key]

        ckpt = load(model_dir, "audited")
        original = load(original_dir, "original") if original_dir else None
        key = ("resident", model_dir, cfg.dtype, cfg.device)
        if key not in _LOADED:  # one model per worker, filled by every job it runs (streamed, as locally)
            _LOADED[key] = resident_model(ckpt, cfg)
        # a worker's jobs draft from the variants it ran before (the first job of a worker has no draft)
        drafts = _LOADED.setdefault(("drafts", model_dir, original_dir), DraftBook()) if cfg.draft else None
        # and start from the batch size its earlier jobs were left with after running out of memory
        batch = _LOADED.setdefault(("batch", *key[1:], cfg.batch_size), BatchSize(cfg.batch_size))
        ctx = JobContext(model_dir, original_dir, ckpt, original, work, cfg, lambda s: None, _LOADED[key], originals, drafts,
                         batch)
        return run_job(scheme, ctx)
    except InputError as exc:
        return Failed(str(exc))


def task_options(cfg: AuditConfig) -> dict:
    """Ray's options for a variant job. ``max_calls=0`` keeps a worker for every job it is given: Ray's
    default for GPU tasks is one call per worker, which would re-hash the checkpoints, rebuild the
    resident model and lose the drafts (``_LOADED``) for every variant."""
    return {"num_cpus": 1, "num_gpus": 1 if cfg.device.startswith("cuda") else 0, "max_retries": 0, "max_calls": 0}


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None) -> None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise InputError("--executor ray needs Ray: install unlearn-audit[ray]") from None
        self.address = address

    def describe(self) -> dict:
        import ray

        return {"name": self.name, "address": self.address or "local instance", "ray": ray.__version__}

    def run(self, schemes: list[Scheme], ctx: JobContext) -> Iterator[JobOutcome]:
        import ray

        if not schemes:
            return
        own = not ray.is_initialized()
        if own:
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
            except Exception as exc:  # an unreachable or misnamed cluster is the user's input, not a bug
                where, why = self.address or "a local instance", (str(exc).strip() or type(exc).__name__).splitlines()[0]
                raise InputError(f"--executor ray: cannot start or join {where} ({why})") from None
        task = ray.remote(**task_options(ctx.cfg))(_remote_job)
        work, cfg = ray.put(ctx.work), ray.put(ctx.cfg)
        refs = [task.remote(s, ctx.model_dir, ctx.original_dir, work, cfg, {s.name: ctx.originals[s.name]} if s.name in ctx.originals else {})
                for s in schemes]
        try:
            for scheme, ref in zip(schemes, refs):
                ctx.on_step(f"{scheme.name}: waiting for its Ray task")
                out = ray.get(ref)
                if isinstance(out, Failed):
                    raise InputError(f"Ray task for {scheme.name}: {out.reason}")
                yield out
        finally:
            for ref in refs:
                ray.cancel(ref, force=True)
            if own:
                ray.shutdown()


def get_executor(name: str, address: str | None = None):
    if name == "local":
        if address:
            raise InputError("--ray-address needs --executor ray")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address)
    raise InputError(f"--executor must be 'local' or 'ray', got {name!r}")
