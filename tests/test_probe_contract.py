"""One contract for every probe in the registry (probes/registry.py), checked without a model: it names the
paper that defines it and the splits it runs on, every check it declares names a tolerance that
``policy.Policy`` has, and every metric it checks or shows is one the golden tiny audit really reported."""

import json
from dataclasses import fields
from pathlib import Path

import pytest

from unlearn_audit.policy import Policy
from unlearn_audit.probes.base import KINDS, ROLES, Probe
from unlearn_audit.probes.registry import PROBES, checks

GOLDEN = json.loads((Path(__file__).parent / "golden" / "tiny_audit.json").read_text())
POLICY_FIELDS = {f.name for f in fields(Policy)}


@pytest.mark.parametrize("name", list(PROBES))
def test_every_probe_keeps_the_contract(name):
    probe = PROBES[name]
    assert isinstance(probe, Probe) and probe.name == name
    assert probe.paper.strip(), f"{name} must cite the paper or benchmark that defines it"
    assert probe.steps and all(step.role in ROLES for step in probe.steps)
    assert any(step.split == "forget" for step in probe.steps), f"{name} must probe the forget set"
    reported = {r["metric"] for r in GOLDEN["results"] if r["probe"] == name}
    for check in probe.checks:
        assert check.policy_field in POLICY_FIELDS, f"{name}.{check.name}: no Policy.{check.policy_field}"
        assert check.kind in KINDS
        assert check.metric in reported, f"{name}.{check.name} checks {check.metric}, which the tiny audit never reported"
    for column in probe.columns:
        assert column.metric in reported, f"{name} shows {column.metric}, which the tiny audit never reported"


def test_check_names_are_unique_across_probes():
    names = [spec.name for _, spec in checks()]
    assert len(names) == len(set(names))
