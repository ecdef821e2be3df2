"""Ctrl-C and SIGTERM during training: a clean exit code, one line, and nothing left at --out."""

import os
import signal
import subprocess
import sys
import time

import pytest


@pytest.mark.parametrize(("sig", "code", "word"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_signal_during_unlearning_leaves_no_checkpoint(bench, tmp_path, sig, code, word):
    out = tmp_path / "unlearned"
    cmd = [sys.executable, "-c", "from unlearn_audit.cli import main; main()", "unlearn", str(bench["memoriser"]),
           "--forget", str(bench["forget"]), "--retain", str(bench["retain"]), "--method", "ga_gdr",
           "--steps", "100000", "--batch-size", "4", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # A test runner started in the background inherits an ignored SIGINT; the user's terminal would not.
    default_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=default_sigint)
    started = proc.stderr.readline()  # printed once the first optimizer step has run
    assert "100000 steps" in started, started
    time.sleep(1.0)
    proc.send_signal(sig)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == code
    assert rest.strip() == f"unlearn-audit: {word}"
    assert not out.exists()
    assert os.listdir(tmp_path) == []  # no temporary sibling either
