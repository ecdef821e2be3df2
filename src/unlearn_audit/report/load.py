"""Reading a report.json back, and re-judging its stored results under another policy.

The verdict is a pure function of the results (``policy.judge``), so a reviewer can apply a stricter
or looser policy to a finished audit without the model, the data, or a GPU.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from ..data import read_input
from ..errors import InputError, parse
from ..policy import Policy, Variant, judge
from ..probes.base import Result


def load_report(path: Path, text: str | None = None) -> dict:
    """A report.json, checked against the published JSON Schema (``unlearn-audit schema``) and for the
    fields the views and ``rejudge`` read, so a hand-edited or truncated report is a one-line InputError
    naming the first field that is wrong, never a crash halfway through rendering. ``text``: the file's
    text already read (``attest`` hashes exactly the bytes it checks, with no second read to race)."""
    report = parse(read_input(path, "report") if text is None else text, str(path))
    if not isinstance(report, dict):
        raise InputError(f"{path}: not an unlearn-audit report (expected a JSON object)")
    missing = [k for k in ("schema_version", "verdict", "variants", "results", "checks", "config", "run") if k not in report]
    if missing:
        raise InputError(f"{path}: not an unlearn-audit report (missing {', '.join(missing)})")
    problem = _schema_problem(report) or _structure_problem(report)
    if problem:
        where, reason = problem
        raise InputError(f"{path}: not a valid unlearn-audit report: {where}: {_short(reason)}")
    return report


def _field(parts) -> str:
    """``["results", 0, "value"]`` -> ``results[0].value``; the document itself is ``(report)``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(report)"


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _schema_problem(report: dict) -> tuple[str, str] | None:
    """The first schema violation (in document order), or None. jsonschema is imported only here; where it
    is not installed, ``_structure_problem`` alone guards the fields that are read."""
    try:
        import jsonschema
    except ImportError:
        return None
    from ..resources import data_dir

    schema = json.loads((data_dir("report_templates") / "report.schema.json").read_text(encoding="utf-8"))
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(report), key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        return None
    first = errors[0]
    return _field(first.absolute_path), first.message


_NUMBER = (int, float)
_TYPES = {"object": dict, "array": list, "string": str, "integer": int, "number": _NUMBER}
# What the views and rejudge read, field by field: {key: (type, nullable)}.
_ROW_FIELDS = {
    "variants": {"name": ("string", False), "status": ("string", False), "bits": ("integer", True)},
    "results": {"variant": ("string", False), "probe": ("string", False), "metric": ("string", False), "value": ("number", True),
                "ci_low": ("number", True), "ci_high": ("number", True), "n": ("integer", False)},
    "checks": {"variant": ("string", False), "check": ("string", False), "status": ("string", False), "value": ("number", True),
               "ci_low": ("number", True), "ci_high": ("number", True), "threshold": ("string", False), "reason": ("string", False)},
}
_NESTED = [(("verdict",), "string"), (("config",), "object"), (("config", "policy"), "object"), (("config", "probes"), "object"),
           (("run",), "object"), (("inputs",), "object"), (("inputs", "model"), "object"), (("inputs", "model", "path"), "string")]


def _is(value, kind: str, nullable: bool = False) -> bool:
    if value is None:
        return nullable
    if isinstance(value, bool):  # JSON true/false are not numbers, though Python's bool is an int
        return False
    return isinstance(value, _TYPES[kind])


def _structure_problem(report: dict) -> tuple[str, str] | None:
    """The fields the views and ``rejudge`` read, with the types they read them as: a check that needs
    no jsonschema and covers what the schema leaves open (``config.policy``, ``config.probes``)."""
    for keys, kind in _NESTED:
        node = report
        for depth, key in enumerate(keys):
            if key not in node:
                return _field(keys[:depth]), f"{key!r} is a required property"
            node = node[key]
            if not isinstance(node, dict) and depth < len(keys) - 1:
                return _field(keys[: depth + 1]), f"expected an object, got {type(node).__name__}"
        if not _is(node, kind):
            return _field(keys), f"expected {kind}, got {_short(json.dumps(node), 40)}"
    for name, fields in _ROW_FIELDS.items():
        rows = report[name]
        if not isinstance(rows, list):
            return name, f"expected an array, got {type(rows).__name__}"
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                return _field([name, i]), f"expected an object, got {type(row).__name__}"
            for key, (kind, nullable) in fields.items():
                if key not in row:
                    return _field([name, i]), f"{key!r} is a required property"
                if not _is(row[key], kind, nullable):
                    return _field([name, i, key]), f"expected {kind}{' or null' if nullable else ''}, got {_short(json.dumps(row[key]), 40)}"
    return None


def rejudge(report: dict, policy: Policy, source: str) -> dict:
    results = [Result.from_dict(r) for r in report["results"]]
    default = report["config"].get("schemes_source") == "default"
    checks, verdict, reason = judge(results, [Variant.from_dict(v) for v in report["variants"]], policy, default)
    if report.get("findings"):  # changed inputs, NaN weights: facts about the audit, not thresholds
        verdict, reason = "INCONCLUSIVE", report["findings"][0]
    out = copy.deepcopy(report)
    out.update(verdict=verdict, verdict_reason=reason, checks=[c.to_dict() for c in checks])
    out["config"].update(policy=policy.to_dict(), policy_sha256=policy.sha256(), policy_source=source)
    out["rejudged"] = {"from_verdict": report["verdict"], "from_policy_sha256": report["config"].get("policy_sha256")}
    return out
