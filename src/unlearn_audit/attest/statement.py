"""What an attestation says: the in-toto Statement built from a report.json.

The subjects are the audited model's files, each by its name in the model directory and the sha256 the
audit recorded when it read it (``inputs.model.files`` and ``side_files``: the weights, their index, the
config, tokenizer and generation files), so a verifier checks a model directory or a Hub snapshot file
by file. A LoRA adapter merged in (``audit --adapter``) is part of the audited model: its files are
subjects too, named under ``adapter/``. The report's own sha256 is in the predicate, which binds every
number in it; the predicate repeats what a reader of the attestation alone needs (docs/attestation.md).
"""

from __future__ import annotations

import re

from .. import __version__
from ..errors import InputError
from ..versions import installed_version
from . import ADAPTER_PREFIX, PREDICATE_TYPE, STATEMENT_TYPE

SHA256 = re.compile(r"^[0-9a-f]{64}$")
DATASETS = ("forget", "holdout", "retain", "forget_qa", "retain_qa", "holdout_qa", "icl", "calibration", "retain_icl",
            "verbmem_forget", "relearn")


def subjects(report: dict, where: str) -> list[dict]:
    """One in-toto ResourceDescriptor per file of the audited model, sorted by name."""
    model = report.get("inputs", {}).get("model") or {}
    files = {**model.get("files", {}), **model.get("side_files", {})}
    adapter = report["inputs"].get("adapter") or {}
    files.update({ADAPTER_PREFIX + name: digest for name, digest in adapter.get("files", {}).items()})
    if not model.get("files"):
        raise InputError(f"{where}: the report records no weight files for the audited model; nothing to attest")
    bad = sorted(name for name, digest in files.items() if not (isinstance(digest, str) and SHA256.match(digest)))
    if bad:
        raise InputError(f"{where}: the report records no sha256 for {', '.join(bad[:3])}; cannot attest the model by its files")
    return [{"name": name, "digest": {"sha256": files[name]}} for name in sorted(files)]


def build_statement(report: dict, report_sha256: str, report_name: str, where: str) -> dict:
    """The Statement for ``report`` (already validated by report/load.py), whose file hashes to ``report_sha256``."""
    inputs, config, run = report["inputs"], report["config"], report.get("run", {})
    model = inputs["model"]
    described = {k: model[k] for k in ("path", "hub", "signature") if k in model}
    if inputs.get("adapter"):
        described["adapter"] = {k: inputs["adapter"][k] for k in ("path", "hub") if k in inputs["adapter"]}
    predicate = {
        "verdict": report["verdict"],
        "verdict_reason": report.get("verdict_reason"),
        "report": {"name": report_name, "sha256": report_sha256, "schema_version": report["schema_version"]},
        "model": described,
        "policy": config.get("policy"),
        "policy_sha256": config.get("policy_sha256"),
        "policy_source": config.get("policy_source"),
        "schemes": sorted(config.get("schemes", {})),
        "schemes_source": config.get("schemes_source"),
        "data": {name: {"path": ds["path"], "sha256": ds["sha256"], "n": ds["n"]} for name in DATASETS if (ds := inputs.get(name))},
        **({"data_source": config["data_source"]} if config.get("data_source") else {}),
        "audit": {"tool": "unlearn-audit", "tool_version": report.get("tool_version"), "started": run.get("started"),
                  "finished": run.get("finished"), "versions": run.get("versions", {})},
        "attested_with": {"unlearn-audit": __version__, "cryptography": installed_version("cryptography")},
    }
    return {"_type": STATEMENT_TYPE, "subject": subjects(report, where), "predicateType": PREDICATE_TYPE, "predicate": predicate}
