"""The GitHub Action (action.yml), run here: its own shell steps, in order, with the expressions GitHub
would substitute and temporary files standing in for GITHUB_STEP_SUMMARY and GITHUB_OUTPUT. The steps
that use other actions (setup-python, upload-artifact) and the pip install are GitHub's and PyPI's part."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
SKIPPED = {"Install unlearn-audit"}  # pip install; the tool under test is already installed here


def _outputs(path: Path) -> dict:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def run_action(inputs: dict, tmp_path: Path) -> tuple[dict, str, int]:
    """Run the action's shell steps; returns its outputs, the job summary and the job's exit code."""
    given = {name: str(inputs.get(name, spec.get("default", ""))) for name, spec in ACTION["inputs"].items()}
    missing = [n for n, spec in ACTION["inputs"].items() if spec.get("required") and n not in inputs]
    assert not missing, missing
    summary, output = tmp_path / "summary.md", tmp_path / "output.txt"
    summary.touch(), output.touch()
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_OUTPUT": str(output), "GITHUB_ACTION_PATH": str(ROOT),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def expand(text: str) -> str:
        def value(m):
            scope, name = m.group(1), m.group(2)
            return given[name] if scope == "inputs" else _outputs(output).get(name, "")
        return re.sub(r"\$\{\{\s*(inputs|steps\.audit\.outputs)\.([\w-]+)\s*\}\}", value, text)

    code = 0
    for step in ACTION["runs"]["steps"]:
        if "run" not in step or step.get("name") in SKIPPED:
            continue
        assert step["shell"] == "bash"
        step_env = {**env, **{k: expand(str(v)) for k, v in step.get("env", {}).items()}}
        done = subprocess.run(["bash", "-c", expand(step["run"])], env=step_env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            code = done.returncode
            break
    outputs = {name: expand(spec["value"]) for name, spec in ACTION["outputs"].items()}
    return outputs, summary.read_text(), code


def test_the_action_declares_what_it_promises():
    assert ACTION["runs"]["using"] == "composite"
    assert {"model", "revision", "forget", "holdout", "original", "reference", "schemes", "policy", "fail-on", "args"} <= set(ACTION["inputs"])
    assert {"verdict", "report-dir"} <= set(ACTION["outputs"])
    uses = [s.get("uses", "") for s in ACTION["runs"]["steps"]]
    assert any(u.startswith("actions/upload-artifact@") for u in uses)
    for script in ("install.sh", "audit.sh"):  # both parse as bash
        assert subprocess.run(["bash", "-n", str(ROOT / "action" / script)]).returncode == 0


@pytest.mark.parametrize("model,verdict,code", [("memoriser", "FAIL", 1), ("clean", "PASS", 0)])
def test_the_action_gates_a_memorising_model_and_passes_one_that_never_saw_the_data(bench, tmp_path, model, verdict, code):
    outputs, summary, exit_code = run_action({"model": bench[model], "forget": bench["forget"], "holdout": bench["holdout"],
                                              "schemes": "fp32,rtn-int4", "args": "--batch-size 8 --quiet"}, tmp_path)
    assert outputs["verdict"] == verdict and exit_code == code and outputs["exit-code"] == str(code)
    assert summary.startswith(f"### unlearn-audit: **{verdict}**")
    assert (Path.cwd() / outputs["report-dir"] / "report.json").is_file()


def test_bad_input_is_an_error_verdict_with_exit_2_and_no_report(bench, tmp_path):
    outputs, summary, exit_code = run_action({"model": bench["clean"], "forget": tmp_path / "missing.jsonl", "holdout": bench["holdout"]},
                                             tmp_path)
    assert outputs["verdict"] == "ERROR" and outputs["report-dir"] == "" and exit_code == 2
    assert "**ERROR** (exit 2)" in summary
