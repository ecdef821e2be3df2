"""Variant jobs on Ray give the same report as the local executor (marker ``ray``: runs only where Ray
is installed, on a local instance started by the test), and executor options are checked up front."""

import importlib.util

import pytest
import torch

from unlearn_audit.audit import run_audit
from unlearn_audit.cli import main
from unlearn_audit.data import load_qa, load_texts
from unlearn_audit.pipeline.executor import LocalExecutor, RayExecutor
from unlearn_audit.pipeline.types import AuditConfig, AuditData

HAVE_RAY = importlib.util.find_spec("ray") is not None


def _stable(report):
    return {k: v for k, v in report.items() if k not in ("run", "timings")}


@pytest.mark.ray
@pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed (the [ray] extra)")
def test_ray_executor_gives_the_local_report(bench):
    import ray

    data = AuditData(forget=load_texts(bench["forget"]), holdout=load_texts(bench["holdout"]), forget_qa=load_qa(bench["forget_qa"]))
    # gptq-int4 through --backend library has no library here: a typed skip must come back from the worker too.
    cfg = AuditConfig(schemes=("fp32", "rtn-int4", "gptq-int4"), bootstrap=200, backend="library")
    args = (str(bench["memoriser"]), data, cfg)
    local = run_audit(*args, original_dir=str(bench["clean"]), executor=LocalExecutor())
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_audit(*args, original_dir=str(bench["clean"]), executor=RayExecutor())
        assert ray.is_initialized(), "an instance the caller started is left running"
    finally:
        ray.shutdown()
    assert remote["run"]["executor"]["name"] == "ray" and local["run"]["executor"] == {"name": "local"}
    assert _stable(remote) == _stable(local)
    skipped = [v for v in remote["variants"] if v["status"] == "skipped"]
    assert [v["name"] for v in skipped] == ["gptq-int4@library"] and "no GPTQ library" in skipped[0]["reason"]


@pytest.mark.parametrize("extra, message", [
    (["--executor", "spark"], "--executor must be 'local' or 'ray'"),
    (["--ray-address", "ray://head:10001"], "--ray-address needs --executor ray"),
])
def test_bad_executor_options_are_one_line(bench, tmp_path, capsys, extra, message):
    args = ["audit", str(bench["clean"]), "--forget", str(bench["forget"]), "--holdout", str(bench["holdout"]),
            "--out", str(tmp_path / "out"), *extra]
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(HAVE_RAY, reason="Ray is installed here")
def test_ray_without_the_extra_says_what_to_install(bench, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["audit", str(bench["clean"]), "--forget", str(bench["forget"]), "--holdout", str(bench["holdout"]), "--executor", "ray"])
    assert exc.value.code == 2 and "unlearn-audit[ray]" in capsys.readouterr().err


def test_gpu_variant_jobs_reuse_their_ray_worker():
    """Ray gives a GPU task one call per worker unless told otherwise: every variant would then re-hash
    the checkpoints, rebuild the resident model and lose the drafts."""
    from unlearn_audit.pipeline.executor import task_options
    from unlearn_audit.pipeline.types import AuditConfig

    gpu, cpu = task_options(AuditConfig(device="cuda", schemes=("fp32",))), task_options(AuditConfig(schemes=("fp32",)))
    assert gpu["num_gpus"] == 1 and gpu["max_calls"] == 0 and cpu["num_gpus"] == 0 and cpu["max_calls"] == 0


def test_the_reference_is_keyed_by_what_the_driver_really_computes(bench):
    """A Ray driver without a GPU scores the reference on its CPU in float32: its cache key and the
    report must say so, not the workers' bfloat16 on CUDA."""
    from unlearn_audit.audit import as_computed
    from unlearn_audit.benchmark import tiny
    from unlearn_audit.pipeline.types import AuditConfig

    asked = AuditConfig(device="cuda", dtype="bfloat16", schemes=("fp32",))
    cpu32 = tiny.tiny_llama(50, hidden=16, layers=1)
    assert (as_computed(asked, cpu32).device, as_computed(asked, cpu32).dtype) == ("cpu", "float32")
    same = AuditConfig(dtype="bfloat16", schemes=("fp32",))
    assert as_computed(same, cpu32.to(torch.bfloat16)) == same
