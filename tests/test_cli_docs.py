"""docs/cli.md is generated from the command line (``python -m unlearn_audit.cli.docs``), so it cannot drift:
the committed page must be what the generator writes now, and each command's section must list exactly
the arguments and options its ``--help`` shows, with the same help text."""

import re
from pathlib import Path

import pytest

from unlearn_audit.cli import docs, main

PAGE = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
BOX = re.compile(r"[│╭╮╰╯─]")


def _help(argv, capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "240")  # wide enough that no option's name column wraps
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    return capsys.readouterr().out


def _declared(help_text: str) -> list[str]:
    """The first name of every row in --help's argument and option panels (rich's layout)."""
    return re.findall(r"^│ {1,6}(?:\* +)?(--[\w-]+|[A-Z][A-Z0-9_]*)\b", help_text, flags=re.M)  # continuation lines are indented further


def _name(declaration: str) -> str:
    """The name rich shows first for a click help record: the long flag, or the argument's metavar."""
    long = re.findall(r"(?<![\w-])--[\w-]+", declaration.split(" / ")[0])
    return long[0] if long else declaration.split()[0]


def test_the_committed_reference_is_what_the_generator_writes():
    assert PAGE.read_text(encoding="utf-8") == docs.render(), "docs/cli.md is out of date: run python -m unlearn_audit.cli.docs"


def test_the_check_mode_sees_a_stale_page(tmp_path):
    page = tmp_path / "cli.md"
    assert docs.main([str(page), "--check"]) == 1  # missing
    assert docs.main([str(page)]) == 0 and docs.main([str(page), "--check"]) == 0
    page.write_text(page.read_text().replace("## audit", "## audits"))
    assert docs.main([str(page), "--check"]) == 1


@pytest.mark.parametrize("name", list(docs.commands()))
def test_each_section_matches_the_commands_help(name, capsys, monkeypatch):
    shown = _help([name, "--help"], capsys, monkeypatch)
    records = docs.params(name, docs.commands()[name])
    assert [_name(decl) for decl, _ in records] == _declared(shown)
    flat = " ".join(BOX.sub(" ", shown).split())
    for decl, text in records:
        own = re.sub(r"\s*\[[^\]]*\]$", "", " ".join(text.split()))  # click's [default: ...] suffix is laid out apart
        assert own in flat, f"{name} {decl}: help text not in --help"
    section = docs.render().split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
    for decl, _ in records:
        assert f"`{decl}`" in section
    assert len(re.findall(r"^- `", section, flags=re.M)) == len(records)


def test_the_readmes_commands_use_options_the_commands_have():
    """Every ``unlearn-audit COMMAND ... --flag`` in the README names a command the app has (commands that
    other modules add, such as attestation's, are checked once they are registered) and flags it takes."""
    readme = (PAGE.parents[1] / "README.md").read_text(encoding="utf-8")
    cmds = docs.commands()
    seen = 0
    for line in re.findall(r"unlearn-audit ([a-z][\w-]*[^`\n|]*)", readme):
        name, *rest = line.split()
        if name not in cmds:
            continue
        flags = {f for decl, _ in docs.params(name, cmds[name]) for f in re.findall(r"(?<![\w-])--?[\w-]+", decl)}
        for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", " ".join(rest)):
            assert flag in flags, f"README: unlearn-audit {name} has no {flag}"
            seen += 1
    assert seen >= 4  # the quickstart audit and the PDF report at least
