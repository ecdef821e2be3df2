"""Ctrl-C and SIGTERM during training: a clean exit code, one line, nothing left at --out, and soon.

The handler runs between Python bytecodes, so a signal waits for the torch op in flight: training steps
must take seconds on every CPU (``machine.computes_fast`` keeps slow bfloat16 matmuls off a CPU without
bfloat16 instructions), and the process must be gone within a few seconds of the signal."""

import os
import signal
import subprocess
import sys
import time

import pytest

STOPS_WITHIN_S = 15  # generous for a loaded 2-core CI machine; a tiny model's step takes milliseconds


@pytest.mark.parametrize("command", ["unlearn", "remediate"])
@pytest.mark.parametrize(("sig", "code", "word"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_signal_during_training_leaves_no_checkpoint(bench, tmp_path, command, sig, code, word):
    out = tmp_path / "unlearned"
    extra = ["--original", str(bench["memoriser"]), "--holdout", str(bench["holdout"])] if command == "remediate" else []
    cmd = [sys.executable, "-c", "from unlearn_audit.cli import main; main()", command, str(bench["memoriser"]),
           "--forget", str(bench["forget"]), "--retain", str(bench["retain"]), "--method", "ga_gdr",
           "--steps", "100000", "--batch-size", "4", "--out", str(out), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # A test runner started in the background inherits an ignored SIGINT; the user's terminal would not.
    default_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=default_sigint)
    started = proc.stderr.readline()  # the log's first progress line: printed once the first optimizer step has run
    assert "step 1/100000" in started, started
    time.sleep(1.0)
    sent = time.monotonic()
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == code
    stopped_s = time.monotonic() - sent
    rest = proc.stderr.read()
    assert rest.strip() == f"unlearn-audit: {word}"
    assert stopped_s < STOPS_WITHIN_S, stopped_s
    assert not out.exists() and not (out / "model").exists()
    assert os.listdir(tmp_path) == []  # no temporary sibling either
