"""The report's other views, each rendered from the report.json dict alone: a self-contained HTML page
for legal review, a Markdown summary for a pull-request comment, and JUnit XML for CI test panels.

The templates live in ``report_templates/`` and ship inside the wheel; nothing here loads a model.
"""

from __future__ import annotations

import enum
import xml.etree.ElementTree as ET

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from ..resources import data_dir
from . import view


class ReportFormat(str, enum.Enum):
    """The views ``unlearn-audit report`` renders."""

    html = "html"
    md = "md"
    junit = "junit"
    json = "json"


def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(str(data_dir("report_templates"))), undefined=StrictUndefined,
                      autoescape=select_autoescape(["html", "j2"], default_for_string=False), trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = view.fmt
    return env


def html(report: dict) -> str:
    return _env().get_template("report.html.j2").render(
        r=report, summary=view.summary(report), recovery=view.recovery_chart(report), mia=view.mia(report),
        evidence=view.evidence(report))


def markdown(report: dict) -> str:
    env = _env()
    env.autoescape = False
    return env.get_template("report.md.j2").render(r=report, summary=view.summary(report))


def junit(report: dict, fail_on: str = "inconclusive") -> str:
    """One testcase per check. FAIL is a failure; INCONCLUSIVE is a failure unless ``fail_on='fail'``
    (then it is skipped, with the reason); informational checks never fail; skipped variants are skipped."""
    suite = ET.Element("testsuite", name="unlearn-audit", timestamp=report["run"]["started"],
                       time=str(report["run"]["duration_s"]))
    counts = {"tests": 0, "failures": 0, "skipped": 0, "errors": 0}
    for c in report["checks"]:
        informational = not c.get("required", True)
        name = c["check"] + (" (informational)" if informational else "")
        case = ET.SubElement(suite, "testcase", classname=f"unlearn-audit.{c['variant']}", name=name, time="0")
        counts["tests"] += 1
        status = c["status"]
        if status == "SKIPPED" or (status == "INCONCLUSIVE" and (fail_on == "fail" or informational)):
            ET.SubElement(case, "skipped", message=c["reason"])
            counts["skipped"] += 1
        elif status in ("FAIL", "INCONCLUSIVE") and not informational:
            failure = ET.SubElement(case, "failure", message=c["reason"], type=status)
            failure.text = f"{c['variant']} {c['check']}: {c['reason']} (threshold {c['threshold']})"
            counts["failures"] += 1
        if informational or status == "PASS":
            ET.SubElement(case, "system-out").text = f"{status}: {c['reason']}"
    for k, v in counts.items():
        suite.set(k, str(v))
    root = ET.Element("testsuites", name="unlearn-audit", **{k: str(v) for k, v in counts.items() if k != "skipped"})
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def render(report: dict, fmt: str, fail_on: str = "inconclusive") -> str:
    from .write import to_json_text

    if fmt == "html":
        return html(report)
    if fmt == "md":
        return markdown(report)
    if fmt == "junit":
        return junit(report, fail_on)
    return to_json_text(report)
