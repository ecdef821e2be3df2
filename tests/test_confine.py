"""The positive control: unlearning confined to the original's rtn-int4 cells forgets at full precision
and is the original again once quantized, and the audit must FAIL it on recovery."""

import json

import pytest
import torch

from unlearn_audit.cli import main
from unlearn_audit.errors import InputError
from unlearn_audit.models.loading import load_checkpoint
from unlearn_audit.quantize.base import out_in_weight, quantizable_modules
from unlearn_audit.quantize.registry import get_scheme
from unlearn_audit.quantize.rtn import rtn_codes
from unlearn_audit.remediate.confine import Confinement, cell_bounds


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group_size", [128, 32, None])
def test_every_point_of_a_cell_keeps_its_code_scale_and_zero_point(symmetric, group_size):
    torch.manual_seed(0)
    w = torch.randn(16, 200)
    lo, hi = cell_bounds(w, 4, group_size, symmetric)
    assert (lo <= hi).all() and ((hi - lo) > 0).float().mean() > 0.9  # all but the scale setters can move
    want = rtn_codes(w, 4, group_size, symmetric)
    for x in [lo, hi] + [lo + (hi - lo) * torch.rand_like(w) for _ in range(10)]:
        got = rtn_codes(x, 4, group_size, symmetric)
        assert torch.equal(got.codes, want.codes) and torch.equal(got.scales, want.scales)
        assert symmetric or torch.equal(got.zeros, want.zeros)


def test_only_rtn_schemes_have_interval_cells():
    with pytest.raises(InputError, match="rtn-"):
        Confinement(torch.nn.Linear(4, 4), get_scheme("nf4"))


@pytest.fixture(scope="module")
def confined(bench, tmp_path_factory):
    """The memoriser unlearned with GA_GDR through the command line, confined to its rtn-int4 cells."""
    out = tmp_path_factory.mktemp("confined") / "model"
    args = ["unlearn", bench["memoriser"], "--forget", bench["forget"], "--retain", bench["retain"], "--method", "ga_gdr",
            "--lr", "1e-3", "--steps", "13", "--batch-size", "16", "--max-length", "256", "--confine-to", "rtn-int4", "--out", out]
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    assert exc.value.code in (0, None)
    return out


def test_confine_to_refuses_a_grid_without_interval_cells(bench, tmp_path, capsys):
    args = ["unlearn", bench["memoriser"], "--forget", bench["forget"], "--retain", bench["retain"], "--steps", "1",
            "--confine-to", "nf4", "--out", tmp_path / "x"]
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--confine-to supports the rtn-* schemes" in err and not (tmp_path / "x").exists()


def test_confined_unlearning_changes_fp32_weights_but_no_rtn_int4_code(bench, confined):
    before, after = load_checkpoint(bench["memoriser"]).model, load_checkpoint(confined).model
    changed = 0
    for (name, a), (_, b) in zip(quantizable_modules(before), quantizable_modules(after)):
        wa, wb = out_in_weight(a), out_in_weight(b)
        changed += int((wa != wb).sum())
        ca, cb = rtn_codes(wa, 4, 128), rtn_codes(wb, 4, 128)
        assert torch.equal(ca.codes, cb.codes) and torch.equal(ca.scales, cb.scales), name
    assert changed > 0.5 * sum(out_in_weight(m).numel() for _, m in quantizable_modules(before))
    record = json.loads((confined / "unlearning.json").read_text())
    assert record["confined_to"]["scheme"] == "rtn-int4"


def test_the_audit_fails_the_positive_control_on_recovery(bench, confined, tmp_path, capsys):
    args = ["audit", confined, "--forget", bench["forget"], "--holdout", bench["holdout"], "--original", bench["memoriser"],
            "--reference", bench["clean"], "--schemes", "fp32,rtn-int4", "--format", "json", "--out", tmp_path / "out"]
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    report = json.loads(capsys.readouterr().out)
    checks = {(c["variant"], c["check"]): c["status"] for c in report["checks"]}
    assert exc.value.code == 1 and report["verdict"] == "FAIL"
    # It forgot at full precision, and rtn-int4 gives the original back: the failure the audit exists for.
    # PrivLeak's interval on 48 documents is about 80 points wide against a ±50 window, so at fp32 it
    # must not FAIL, but whether it reaches PASS (as it does on the CPUs measured) is not asserted.
    assert checks[("fp32", "verbmem")] == "PASS" and checks[("fp32", "privleak")] != "FAIL"
    assert checks[("rtn-int4", "verbmem_recovery")] == "FAIL"
    assert "knowledge recovered under rtn-int4" in report["verdict_reason"]
    assert report["forensics"]["rtn-int4"]["code_overlap"] == 1.0
