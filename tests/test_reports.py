"""The report views, all rendered from report.json alone: schema, HTML, Markdown, JUnit, re-judging
under a policy file, samples.jsonl, and the normalised golden report."""

import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import schema_errors
from unlearn_audit.cli import main

GOLDEN = Path(__file__).parent / "golden" / "tiny_audit.json"


def run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


class _Cells(HTMLParser):
    """Collects the summary cells' data attributes and text, and every src/href."""

    def __init__(self):
        super().__init__()
        self.cells, self.links, self.sections, self._cell = [], [], [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.links += [v for k, v in attrs if k in ("src", "href") and v]
        if tag == "section" and "id" in a:
            self.sections.append(a["id"])
        if tag == "td" and "data-metric" in a:
            self._cell = {**a, "text": ""}

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.cells.append(self._cell)
            self._cell = None


def test_the_report_validates_and_samples_are_a_separate_file(audited, capsys):
    report = json.loads((audited / "report.json").read_text())
    assert schema_errors(report) == []
    lines = (audited / "samples.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == report["samples"]
    code, out, _ = run(["schema"], capsys)
    assert code == 0 and json.loads(out)["title"] == "unlearn-audit report"
    broken = dict(report, verdict="MAYBE")
    assert schema_errors(broken)  # the schema does reject a bad report


def test_html_is_self_contained_and_its_numbers_are_the_json(audited):
    report = json.loads((audited / "report.json").read_text())
    html = (audited / "report.html").read_text()
    parser = _Cells()
    parser.feed(html)
    assert parser.sections == ["summary", "recovery", "mia", "forensics", "evidence", "method", "provenance"]
    assert not [u for u in parser.links if re.match(r"(?i)\s*(https?:)?//", u)]
    assert "<script" not in html and "http://" not in html and "https://" not in html
    results = {(r["variant"], r["probe"], r["metric"]): r for r in report["results"]}
    assert len(parser.cells) > 10
    for cell in parser.cells:
        key = (cell["data-variant"], cell["data-probe"], cell["data-metric"])
        if cell["data-value"] == "":  # a dash: the result does not exist for this variant
            assert key not in results and cell["text"].strip() == "–"
            continue
        r = results[key]
        assert float(cell["data-value"]) == r["value"]
        shown = cell["text"].split()[0]
        digits = len(shown.split(".")[1]) if "." in shown else 0
        assert shown == f"{r['value']:.{digits}f}"
    assert f"VERDICT: {report['verdict']}" in html and report["verdict_reason"] in html.replace("&gt;", ">").replace("&lt;", "<")
    for f in report["inputs"]["model"]["files"].values():
        assert f in html  # provenance: every weight file's hash


def test_markdown_and_junit_views(audited, tmp_path, capsys):
    report = json.loads((audited / "report.json").read_text())
    code, md, _ = run(["report", audited / "report.json", "--format", "md"], capsys)
    assert code == 1 and md.startswith(f"### unlearn-audit: **{report['verdict']}**")
    out = tmp_path / "junit.xml"
    code, _, _ = run(["report", audited / "report.json", "--format", "junit", "-o", out], capsys)
    root = ET.parse(out).getroot()
    assert root.tag == "testsuites" and code == 1
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == len(report["checks"]) == int(suite.get("tests"))
    failing = [c for c in report["checks"] if c["status"] in ("FAIL", "INCONCLUSIVE")]
    assert int(suite.get("failures")) == len(failing) == len([c for c in cases if c.find("failure") is not None])
    for case in cases:
        assert case.get("classname").startswith("unlearn-audit.") and case.get("name")


def test_a_policy_file_rejudges_without_the_model(audited, tmp_path, capsys):
    report = json.loads((audited / "report.json").read_text())
    assert report["verdict"] == "FAIL"
    lenient = tmp_path / "lenient.toml"
    lenient.write_text("verbmem_gap_max = 1.0\nknowmem_gap_max = 1.0\nprivleak_abs_max = 1000\n"
                       "verbmem_recovery_max = 1.0\nknowmem_recovery_max = 1.0\n")
    code, out, _ = run(["report", audited / "report.json", "--format", "json", "--policy", lenient], capsys)
    flipped = json.loads(out)
    assert code == 0 and flipped["verdict"] == "PASS"
    assert flipped["results"] == report["results"]  # nothing recomputed
    assert flipped["config"]["policy_sha256"] != report["config"]["policy_sha256"]
    assert flipped["rejudged"]["from_verdict"] == "FAIL"
    bad = tmp_path / "bad.toml"
    bad.write_text("privleak_max = 5\n")
    code, _, err = run(["report", audited / "report.json", "--policy", bad], capsys)
    assert code == 2 and "unknown policy key 'privleak_max'" in err and len(err.strip().splitlines()) == 1


def test_fail_on_fail_lets_inconclusive_pass_the_gate(audited, tmp_path, capsys):
    undecided = tmp_path / "undecided.toml"
    undecided.write_text("min_documents = 1000\n")  # every check becomes INCONCLUSIVE
    code, out, _ = run(["report", audited / "report.json", "--format", "json", "--policy", undecided], capsys)
    assert json.loads(out)["verdict"] == "INCONCLUSIVE" and code == 4  # its own code: a gate can tell it from FAIL
    code, _, _ = run(["report", audited / "report.json", "--format", "json", "--policy", undecided, "--fail-on", "fail"], capsys)
    assert code == 0


def _normalise(obj):
    """The report with run-specific details removed: paths, hashes, times. Numbers stay, and are compared
    within ``TOLERANCE`` (float32 kernels differ in the last bits between CPUs)."""
    if isinstance(obj, dict):
        return {k: ("<run>" if k in ("run", "timings") else _normalise(v)) for k, v in obj.items()
                if k not in ("path", "samples", "evidence", "modules")}
    if isinstance(obj, list):
        return [_normalise(v) for v in obj]
    if isinstance(obj, str):
        return "<hash>" if re.fullmatch(r"[0-9a-f]{64}", obj) else re.sub(r"/[^\s)]+", "<path>", obj)
    return obj


TOLERANCE = 1e-4  # absolute, plus the same relative: scores agree to ~5e-6 across batch shapes and CPUs


def _differences(got, want, where: str = "") -> list[str]:
    """Every place where ``got`` and ``want`` differ: structure and text exactly, numbers within TOLERANCE."""
    if isinstance(want, dict) and isinstance(got, dict):
        if got.keys() != want.keys():
            return [f"{where}: keys {sorted(got.keys() ^ want.keys())} differ"]
        return [d for k in want for d in _differences(got[k], want[k], f"{where}.{k}")]
    if isinstance(want, list) and isinstance(got, list):
        if len(got) != len(want):
            return [f"{where}: {len(got)} items, expected {len(want)}"]
        return [d for i, (g, w) in enumerate(zip(got, want)) for d in _differences(g, w, f"{where}[{i}]")]
    numbers = (int, float)
    if isinstance(want, numbers) and isinstance(got, numbers) and not isinstance(want, bool) and not isinstance(got, bool):
        return [] if abs(got - want) <= TOLERANCE * (1 + abs(want)) else [f"{where}: {got!r}, expected {want!r}"]
    return [] if got == want else [f"{where}: {got!r}, expected {want!r}"]


def test_the_golden_comparison_sees_a_changed_number():
    want = {"results": [{"value": 0.25, "n": 48}], "verdict": "FAIL"}
    assert not _differences({"results": [{"value": 0.25 + 1e-6, "n": 48}], "verdict": "FAIL"}, want)
    assert _differences({"results": [{"value": 0.2501 + 1e-3, "n": 48}], "verdict": "FAIL"}, want) == [
        ".results[0].value: 0.2511, expected 0.25"]
    assert _differences({"results": [{"value": 0.25, "n": 47}], "verdict": "FAIL"}, want)


def test_golden_report(audited):
    """The tiny audit's report, numbers included. Regenerate with:
    UPDATE_GOLDEN=1 python -m pytest tests/test_reports.py -k golden"""
    import os

    got = _normalise(json.loads((audited / "report.json").read_text()))
    got["checks"] = [{k: v for k, v in c.items() if k != "reason"} for c in got["checks"]]
    got["verdict_reason"] = "<reason>"
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    differences = _differences(got, json.loads(GOLDEN.read_text()))
    assert not differences, "\n".join(differences[:20])


def test_report_command_refuses_what_is_not_a_report(tmp_path, capsys):
    for content, needle in [(None, "not found"), ("[1, 2]", "expected a JSON object"), ('{"verdict": "PASS"}', "missing"),
                            ("{broken", "invalid JSON")]:
        path = tmp_path / "r.json"
        if content is None:
            path = tmp_path / "missing.json"
        else:
            path.write_text(content)
        code, _, err = run(["report", path, "--format", "md"], capsys)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    code, _, err = run(["report", tmp_path, "--format", "md"], capsys)  # a directory
    assert code == 2 and "is a directory" in err
    code, _, err = run(["audit", tmp_path, "--forget", tmp_path, "--holdout", tmp_path, "--policy", tmp_path], capsys)
    assert code == 2 and "is a directory" in err


HOSTILE = "x</td><img src=http://evil/a.png>\n# **PASS**\n|a|b|\x01\x1b[31m"
XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _hostile_report(audited) -> dict:
    """report.json with a hostile string wherever an input's text reaches the views."""
    report = json.loads((audited / "report.json").read_text())
    report["verdict_reason"] = HOSTILE
    report["inputs"]["model"]["path"] = HOSTILE
    failing = next(c for c in report["checks"] if c["status"] in ("FAIL", "INCONCLUSIVE"))
    failing["reason"] = HOSTILE
    report["checks"][0]["reason"] = HOSTILE
    report["variants"].append({"name": HOSTILE, "status": "skipped", "reason": HOSTILE})
    report["checks"].append({**failing, "variant": HOSTILE, "check": HOSTILE})
    first = report["evidence"][0]["outputs"]
    first[next(iter(first))] = HOSTILE
    return report


def test_the_markdown_view_escapes_what_comes_from_inputs(audited):
    from unlearn_audit.report.render import render

    md = render(_hostile_report(audited), "md")
    assert "<img" not in md and "</td>" not in md and "&lt;img" in md  # shown as text, not as HTML
    assert "\x01" not in md and "\x1b" not in md
    lines = md.splitlines()
    assert lines[0].startswith("### unlearn-audit: **")  # the tool's own heading stays Markdown
    assert not any(line.startswith("#") for line in lines[1:]), [line for line in lines if line.startswith("#")]
    assert "**PASS**" not in md.replace(lines[0], "")  # no spoofed bold verdict
    rows = [line for line in lines if line.startswith("|")]
    cells = [len(re.split(r"(?<!\\)\|", row)) for row in rows]  # an escaped \| does not split a cell
    assert len(rows) >= 3 and len(set(cells)) == 1, cells
    assert any(HOSTILE[:1] in row and "SKIPPED" in row for row in rows)  # the planted variant is one row


def test_the_junit_view_is_well_formed_xml_whatever_the_inputs_hold(audited):
    from unlearn_audit.report.render import render

    report = _hostile_report(audited)
    xml = render(report, "junit")
    assert not XML_FORBIDDEN.search(xml)
    root = ET.fromstring(xml)
    cases = root.find("testsuite").findall("testcase")
    assert len(cases) == len(report["checks"])
    assert any("<img src=http://evil/a.png>" in (e.get("message") or "") for e in root.iter("failure"))  # kept, as text


def test_the_demo_view_puts_audits_side_by_side_with_their_own_numbers(audited):
    """The demo's table: one row per variant, each audit's numbers from its own report, and each verdict."""
    import copy
    import io

    from rich.console import Console

    from unlearn_audit.report.console import render_side_by_side

    a = json.loads((audited / "report.json").read_text())
    b = copy.deepcopy(a)
    for r in b["results"]:
        if (r["probe"], r["metric"]) == ("mink", "auc") and r["variant"] == "rtn-int4":
            r["value"] = 0.123
    b["verdict"], b["verdict_reason"] = "PASS", "constructed for the test"
    buf = io.StringIO()
    render_side_by_side({"first": a, "second": b}, Console(file=buf, width=400))
    text = buf.getvalue()
    int4 = next(line for line in text.splitlines() if "rtn-int4" in line)
    auc_a = next(r["value"] for r in a["results"] if (r["variant"], r["probe"], r["metric"]) == ("rtn-int4", "mink", "auc"))
    assert f"{auc_a:.3f}" in int4 and "0.123" in int4
    assert all(any(v["name"] in line for line in text.splitlines()) for v in a["variants"])
    assert f"first: {a['verdict']}" in text and "second: PASS — constructed for the test" in text


def _optional_paths(obj, schema, root, where=()):
    """Every object key the schema does not require, as a path of keys (objects only)."""
    if not isinstance(obj, dict):
        return
    required = set(schema.get("required", ())) if isinstance(schema, dict) else set()
    props = schema.get("properties", {}) if isinstance(schema, dict) else {}
    for key, value in obj.items():
        sub = props.get(key, {})
        if isinstance(sub, dict) and "$ref" in sub:
            sub = root["$defs"][sub["$ref"].rsplit("/", 1)[-1]] if "$defs" in root else {}
        if key not in required:
            yield (*where, key)
        yield from _optional_paths(value, sub, root, (*where, key))


def test_a_report_missing_a_field_the_schema_allows_to_miss_is_rendered_or_refused_in_one_line(audited, tmp_path, capsys):
    """A report written by another version or by hand can pass the schema and still lack a field a view
    shows: each view renders it, or the command says which field in one line (exit 2), never exit 3."""
    from unlearn_audit.resources import data_dir

    report = json.loads((audited / "report.json").read_text())
    root = json.loads((data_dir("report_templates") / "report.schema.json").read_text())
    paths = list(_optional_paths(report, root, root))
    assert len(paths) > 20, paths
    refused = 0
    for path in paths:
        cut = json.loads(json.dumps(report))
        parent = cut
        for key in path[:-1]:
            parent = parent[key]
        del parent[path[-1]]
        (tmp_path / "r.json").write_text(json.dumps(cut))
        for fmt in ("html", "md", "junit"):
            code, _, err = run(["report", tmp_path / "r.json", "--format", fmt, "-o", tmp_path / f"out.{fmt}"], capsys)
            assert code in (0, 1, 2, 4), (path, fmt, err)
            if code == 2:
                refused += 1
                assert len(err.strip().splitlines()) == 1 and "error:" in err, (path, fmt, err)
    assert refused  # config.verbmem_generation, for one, is read by the HTML view and not required


def test_a_histogram_with_an_empty_split_warns_of_nothing():
    """A hand-made report may leave one split's scores empty: the chart is drawn without a numpy warning,
    which the command line would print as a stray ``warning:`` line."""
    import warnings

    from unlearn_audit.report import svg

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chart = svg.distributions([], [1.0, 2.0], "scores")
    assert "forget n=0 mean –; holdout n=2 mean 1.500" in chart


@pytest.mark.parametrize(("forget", "holdout"), [([], [1.7976931348623157e308, -9.9792015476736e291]),
                                                 ([-1.7976931348623157e308], [1.7976931348623157e308]), ([1e300], [1e300]),
                                                 ([], [1.7976913371709786e308]), ([-1.7976931348623157e308], [])])
def test_a_histogram_of_extreme_scores_is_drawn(forget, holdout):
    """Scores at the ends of float64 (a hand-made report passes the schema with them): the bin edges must
    not overflow to inf/nan, which numpy's histogram refuses (the render fuzz target found it)."""
    import warnings

    from unlearn_audit.report import svg

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chart = svg.distributions(forget, holdout, "scores")
    assert chart.startswith("<svg") and "nan" not in chart and "inf" not in chart
