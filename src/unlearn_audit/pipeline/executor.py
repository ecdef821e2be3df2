"""Where the audit's variant jobs run: here, one after another (the default), or across a Ray cluster.

A variant is an independent job: build it from the audited (and original) checkpoint, run every probe
on it, measure its weight forensics, free it. Nothing in one job reads another's output, so jobs can fan
out over GPUs and machines. Everything else stays in the driver: the data are tokenized once and shipped
to the jobs, the reference model is scored once, and scoring, the resume cache and the report happen
after the jobs return, in scheme order. So the report does not depend on where the jobs ran (a test
checks that the Ray executor's results equal the local executor's).

- ``LocalExecutor`` runs the jobs lazily in this process: one variant is resident beside the loaded
  models at a time, as the audit's memory bound requires.
- ``RayExecutor`` (``--executor ray``, the ``ray`` extra) submits every job at once as a Ray task. Each
  task loads the checkpoints itself from the same paths (on a cluster, a file system every node mounts),
  asks for one GPU when the audit runs on CUDA and one CPU otherwise, and returns the probe outputs.
  ``ray.init()`` joins the cluster named by ``--ray-address`` (or ``RAY_ADDRESS``), else starts a local
  instance that is shut down at the end. Interrupting the audit cancels the tasks still running.
"""

from __future__ import annotations

from typing import Iterator

from ..errors import InputError
from ..quantize.base import Scheme, SchemeUnavailable
from .types import AuditConfig, Failed, JobContext, JobOutcome, Skipped, Workload
from .variant import run_variant


def run_job(scheme: Scheme, ctx: JobContext) -> JobOutcome:
    """One variant: its ``VariantRun``, or ``Skipped`` with the reason when the scheme cannot run here."""
    try:
        return run_variant(scheme, ctx.ckpt, ctx.original, ctx.work, ctx.cfg, ctx.on_step)
    except SchemeUnavailable as exc:
        return Skipped(str(exc))


class LocalExecutor:
    name = "local"

    def describe(self) -> dict:
        return {"name": self.name}

    def run(self, schemes: list[Scheme], ctx: JobContext) -> Iterator[JobOutcome]:
        for scheme in schemes:  # lazily: the next variant is built only when the previous one was consumed
            yield run_job(scheme, ctx)


_LOADED: dict = {}  # per Ray worker process: checkpoints already loaded, by (path, role, pickle policy)


def _remote_job(scheme: Scheme, model_dir: str, original_dir: str | None, work: Workload, cfg: AuditConfig) -> JobOutcome:
    """A Ray task: load (or reuse) the checkpoints in this worker and run one variant job. Input errors
    come back as ``Failed``, so the driver can report them in one line."""
    import torch

    from ..models.loading import load_checkpoint

    torch.set_num_threads(1)
    try:
        def load(path, role):
            key = (path, role, cfg.allow_pickle)
            if key not in _LOADED:
                kwargs = {"allow_pickle": True} if key[2] else {}
                _LOADED[key] = load_checkpoint(path, role, **kwargs)
            return _LOADED[key]

        ckpt = load(model_dir, "audited")
        original = load(original_dir, "original") if original_dir else None
        return run_job(scheme, JobContext(model_dir, original_dir, ckpt, original, work, cfg, lambda s: None))
    except InputError as exc:
        return Failed(str(exc))


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
        gpus = 1 if ctx.cfg.device == "cuda" else 0
        task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(_remote_job)
        work, cfg = ray.put(ctx.work), ray.put(ctx.cfg)
        refs = [task.remote(s, ctx.model_dir, ctx.original_dir, work, cfg) for s in schemes]
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
