"""The report's other views, each rendered from the report.json dict alone: a self-contained HTML page
for legal review, a Markdown summary for a pull-request comment, and JUnit XML for CI test panels.

The templates live in ``report_templates/`` and ship inside the wheel; nothing here loads a model.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from ..resources import data_dir
from . import view

# Characters XML 1.0 forbids (and lone surrogates, which no UTF-8 file can hold): a report.json can carry
# them in a path, a reason or a generation, and one of them makes the whole JUnit file unparseable.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# Markdown's inline syntax, escaped with a backslash wherever it occurs; ``~`` is GFM's strikethrough.
_MD_INLINE = re.compile(r"([\\`*_\[\]#|!~])")
# What starts a block at the start of a line: a list item ("- ", "+ ", "1. ", "1) "), a thematic break or
# a setext underline ("---", "=="); a leading ">" (a quote) is an entity by then. "-0.5" or "0.1.0" is text.
_MD_LEADING = re.compile(r"^(\s*)([-+=](?=[-+=\s]|$)|\d+[.)](?=\s|$))")


def md(value) -> str:
    """A value from the report, as inert Markdown text: HTML as entities, Markdown's syntax escaped, line
    breaks and control characters (terminal escapes) turned to spaces so it stays on its line or table
    cell. Only the template's own text is Markdown."""
    text = _NOT_XML.sub(" ", re.sub(r"\r\n|[\r\n\x7f\x80-\x9f]", " ", str(value)))
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MD_INLINE.sub(r"\\\1", text)
    return _MD_LEADING.sub(lambda m: m.group(1) + m.group(2)[:-1] + "\\" + m.group(2)[-1], text)


def _xml(value) -> str:
    """A value as XML 1.0 allows it: each forbidden character becomes U+FFFD, so the loss shows."""
    return _NOT_XML.sub("\ufffd", str(value))


class _Missing(StrictUndefined):
    """A field the report lacks, used in any way, is an ``UndefinedError`` naming it: formatting one (a
    number's ``{:.3f}``) would otherwise be a bare TypeError."""

    def __format__(self, spec: str) -> str:
        self._fail_with_undefined_error()


def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(str(data_dir("report_templates"))), undefined=_Missing,
                      autoescape=select_autoescape(["html", "j2"], default_for_string=False), trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = view.fmt
    return env


def html(report: dict, paged: dict | None = None) -> str:
    """The self-contained HTML page. ``paged`` lays it out for the PDF (pdf.py): page size, a running header
    with the verdict and the model's hash, page numbers, and an appendix of every input's sha256."""
    return _env().get_template("report.html.j2").render(
        r=report, summary=view.summary(report), recovery=view.recovery_chart(report), mia=view.mia(report),
        evidence=view.evidence(report), highlight_words=view.HIGHLIGHT_WORDS, forensics_notes=view.forensics_notes(report),
        paged=paged)


def markdown(report: dict) -> str:
    env = _env()
    env.autoescape = False
    env.filters["md"] = md
    return env.get_template("report.md.j2").render(r=report, summary=view.summary(report))


def junit(report: dict, fail_on: str = "inconclusive") -> str:
    """One testcase per check. FAIL is a failure; INCONCLUSIVE is a failure unless ``fail_on='fail'``
    (then it is skipped, with the reason); informational checks never fail; skipped variants are skipped."""
    suite = ET.Element("testsuite", name="unlearn-audit", timestamp=_xml(report["run"]["started"]),
                       time=_xml(report["run"]["duration_s"]))
    props = ET.SubElement(suite, "properties")  # which variants were read from the resume cache, not recomputed
    ET.SubElement(props, "property", name="resumed_variants", value=_xml(",".join(report["run"].get("resumed_variants", []))))
    counts = {"tests": 0, "failures": 0, "skipped": 0, "errors": 0}
    for c in report["checks"]:
        informational = not c.get("required", True)
        name = _xml(c["check"]) + (" (informational)" if informational else "")
        case = ET.SubElement(suite, "testcase", classname=_xml(f"unlearn-audit.{c['variant']}"), name=name, time="0")
        counts["tests"] += 1
        status = c["status"]
        if status == "SKIPPED" or (status == "INCONCLUSIVE" and (fail_on == "fail" or informational)):
            ET.SubElement(case, "skipped", message=_xml(c["reason"]))
            counts["skipped"] += 1
        elif status in ("FAIL", "INCONCLUSIVE") and not informational:
            failure = ET.SubElement(case, "failure", message=_xml(c["reason"]), type=_xml(status))
            failure.text = _xml(f"{c['variant']} {c['check']}: {c['reason']} (threshold {c['threshold']})")
            counts["failures"] += 1
        if informational or status == "PASS":
            ET.SubElement(case, "system-out").text = _xml(f"{status}: {c['reason']}")
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
