"""Reading a report.json back, and re-judging its stored results under another policy.

The verdict is a pure function of the results (``policy.judge``), so a reviewer can apply a stricter
or looser policy to a finished audit without the model, the data, or a GPU.
"""

from __future__ import annotations

import copy
from pathlib import Path

from ..data import read_input
from ..errors import InputError, parse
from ..policy import Policy, Variant, judge
from ..probes.base import Result


def load_report(path: Path) -> dict:
    report = parse(read_input(path, "report"), str(path))
    if not isinstance(report, dict):
        raise InputError(f"{path}: not an unlearn-audit report (expected a JSON object)")
    missing = [k for k in ("schema_version", "verdict", "variants", "results", "checks", "config", "run") if k not in report]
    if missing:
        raise InputError(f"{path}: not an unlearn-audit report (missing {', '.join(missing)})")
    return report


def rejudge(report: dict, policy: Policy, source: str) -> dict:
    results = [Result.from_dict(r) for r in report["results"]]
    checks, verdict, reason = judge(results, [Variant.from_dict(v) for v in report["variants"]], policy)
    if report.get("findings"):  # changed inputs, NaN weights: facts about the audit, not thresholds
        verdict, reason = "INCONCLUSIVE", report["findings"][0]
    out = copy.deepcopy(report)
    out.update(verdict=verdict, verdict_reason=reason, checks=[c.to_dict() for c in checks])
    out["config"].update(policy=policy.to_dict(), policy_sha256=policy.sha256(), policy_source=source)
    out["rejudged"] = {"from_verdict": report["verdict"], "from_policy_sha256": report["config"].get("policy_sha256")}
    return out
