"""The documentation site builds with ``mkdocs build --strict``: a link to a page or an anchor that does not
exist fails the build. Skipped where mkdocs is not installed (the ``docs`` extra)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _build(root: Path, out: Path) -> subprocess.CompletedProcess:
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install '.[docs]')")
    pytest.importorskip("material", reason="mkdocs-material is not installed (pip install '.[docs]')")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(root / "mkdocs.yml"), "-d", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)


def test_the_site_builds_strictly(tmp_path):
    done = _build(ROOT, tmp_path / "site")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "cli" / "index.html").exists()


def test_a_broken_internal_link_fails_the_build(tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    page = copy / "docs" / "verdict.md"
    page.write_text(page.read_text() + "\nSee [the missing section](policy.md#no-such-anchor).\n")
    done = _build(copy, tmp_path / "site")
    assert done.returncode != 0 and "no-such-anchor" in done.stderr
