"""Hardening of the command line: odd paths, outputs that would overwrite inputs, tampered reports,
short-context models, one-line warnings and leftover merged copies."""


import pytest

from unlearn_audit.cli import main

WEIRD = "a[/]b[bold]"


def run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exc.value.code, captured.err


def one_line_error(code, err, *needles):
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    assert lines[0].startswith("unlearn-audit: error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def audit_args(bench, model, *extra):
    return ["audit", model, "--forget", bench["forget"], "--holdout", bench["holdout"], "--schemes", "fp32", *extra]


@pytest.fixture(scope="module")
def weird_audit(bench, tmp_path_factory):
    """One fp32 audit of the clean model whose --out lies under a directory named with rich markup."""
    out = tmp_path_factory.mktemp("weird") / WEIRD / "out"
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in audit_args(bench, bench["clean"], "--out", out)])
    return exc.value.code, out


# 1. rich markup in paths

def test_markup_in_the_out_path_keeps_the_verdicts_exit_code(weird_audit):
    code, out = weird_audit
    assert code in (0, 1)
    assert (out / "report.json").is_file() and (out / "report.html").is_file()


def test_markup_in_the_report_output_path(weird_audit, tmp_path, capsys):
    code, out = weird_audit
    target = tmp_path / WEIRD / "r[bold].md"
    rcode, err = run(["report", out / "report.json", "--format", "md", "-o", target], capsys)
    assert rcode == code, err
    assert target.is_file() and str(target) in err
