"""``report --format pdf``: the HTML view on pages, for legal review. The PDF is read back with pypdf (the
``test`` extra) and must carry the verdict and the model's hash on every page, the reason, every input's
sha256, and page numbers that agree with the page count. Skipped where WeasyPrint (the ``pdf`` extra, with
the Pango library it loads) cannot be imported."""

import json
import re
import sys

import pytest

from conftest import one_line_error, run


def _engine_or_skip():
    try:
        import weasyprint  # noqa: F401
    except (ImportError, OSError) as exc:  # OSError: WeasyPrint is installed but Pango is not
        pytest.skip(f"the pdf extra is not usable here: {exc}")
    return pytest.importorskip("pypdf", reason="pypdf (the test extra) reads the PDF back")


def _hashes(obj) -> set[str]:
    """Every sha256 in a report's inputs, wherever it is nested."""
    if isinstance(obj, dict):
        return set().union(*(_hashes(v) for v in obj.values())) if obj else set()
    if isinstance(obj, list):
        return set().union(*(_hashes(v) for v in obj)) if obj else set()
    return {obj} if isinstance(obj, str) and re.fullmatch(r"[0-9a-f]{64}", obj) else set()


def test_the_pdf_carries_the_verdict_the_reason_every_hash_and_its_page_count(audited, tmp_path, capsys):
    pypdf = _engine_or_skip()
    report = json.loads((audited / "report.json").read_text())
    out = tmp_path / "legal" / "audit.pdf"
    code, err = run(["report", audited / "report.json", "--format", "pdf", "-o", out], capsys)
    assert code == 1 and f"wrote {out} (pdf): verdict FAIL" in err  # the exit code is the verdict's, as for every view
    assert [p.name for p in out.parent.iterdir()] == ["audit.pdf"]  # written atomically: no temporary sibling left
    pages = pypdf.PdfReader(out).pages
    texts = [page.extract_text() for page in pages]
    weights = report["inputs"]["model"]["files"]["model.safetensors"]
    for i, text in enumerate(texts, 1):
        assert f"VERDICT: {report['verdict']}" in text and weights in text, f"page {i} lacks the header"
        assert f"page {i} of {len(pages)}" in text
    assert len(pages) >= 3
    whole = " ".join(" ".join(texts).split())
    assert " ".join(report["verdict_reason"].split()) in whole
    hashes = _hashes(report["inputs"])
    assert len(hashes) >= 10  # three models' weight and side files, and the data sets
    missing = [h for h in hashes if h not in whole]
    assert not missing, f"hashes not in the PDF: {missing}"
    assert " ".join(report["run"]["argv"]) in whole  # the command, in the appendix
    a4 = pages[0].mediabox
    assert (round(float(a4.width)), round(float(a4.height))) == (595, 842)


def test_letter_paper(audited, tmp_path, capsys):
    pypdf = _engine_or_skip()
    out = tmp_path / "audit.pdf"
    code, _ = run(["report", audited / "report.json", "--format", "pdf", "--paper", "letter", "-o", out], capsys)
    box = pypdf.PdfReader(out).pages[0].mediabox
    assert code == 1 and (round(float(box.width)), round(float(box.height))) == (612, 792)


def test_without_the_engine_pdf_is_one_line_naming_the_extra(audited, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "weasyprint", None)  # import weasyprint now raises ImportError
    out = tmp_path / "audit.pdf"
    code, err = run(["report", audited / "report.json", "--format", "pdf", "-o", out], capsys)
    one_line_error(code, err, "--format pdf needs WeasyPrint", "unlearn-audit[pdf]")
    assert not out.exists()
