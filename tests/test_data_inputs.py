"""Inputs that are not files of a sane size: devices, sockets, pipes with and without a writer, records
and whole files far larger than any real one, lone surrogates, and policy numbers that are not finite or
not in range. Each is one ``InputError`` line naming the input, and nothing reads forever or hangs.

A read that could fill the memory or block runs in a child process with an address-space limit and a
timeout, or in a thread with a join timeout, so a regression fails the test instead of the machine.
"""

import json
import os
import resource
import socket
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import pytest

from unlearn_audit.data import load_qa, load_texts
from unlearn_audit.errors import InputError
from unlearn_audit.policy import Policy

MiB = 1 << 20


def _one_line(exc: pytest.ExceptionInfo, path, needle: str) -> str:
    message = str(exc.value)
    assert message.startswith(str(path)) and "\n" not in message and needle in message, message
    return message


def _isolated(code: str, memory: int = 1536 * MiB, timeout: float = 60) -> list[str]:
    """Run ``code`` in a child Python whose address space is capped at ``memory``; its stdout lines."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                              preexec_fn=limit, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still reading after {timeout} s")
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


def _in_thread(read, fifo: Path, seconds: float = 10):
    """``read()``'s result or exception, failing the test if it blocks (then a writer is opened and
    closed on ``fifo`` so the blocked thread can end)."""
    box = {}

    def run():
        try:
            box["value"] = read()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        t.join(seconds)
        pytest.fail(f"reading the FIFO {fifo} with no writer hung")
    return box


# 1. Regular files and pipes only ------------------------------------------------------------------

def test_a_device_is_refused_as_data_policy_and_muse_file_without_reading_it():
    lines = _isolated("""
from pathlib import Path
from unlearn_audit.data import load_qa, load_texts, read_input
from unlearn_audit.errors import InputError
from unlearn_audit.policy import Policy
for read in (lambda p: load_texts(p), lambda p: load_qa(p), lambda p: Policy.from_toml(p),
             lambda p: read_input(p, "raw text"), lambda p: read_input(p, "report")):
    try:
        read(Path("/dev/zero"))
        print("loaded")
    except InputError as exc:
        print(exc)
""")
    assert len(lines) == 5, lines
    assert all(line.startswith("/dev/zero: not a regular file (a device)") for line in lines), lines


def test_a_socket_is_refused_as_not_a_regular_file(tmp_path):
    path = tmp_path / "data.jsonl"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        with pytest.raises(InputError) as exc:
            load_texts(path)
        _one_line(exc, path, "not a regular file (a socket)")
        with pytest.raises(InputError) as exc:
            Policy.from_toml(path)
        _one_line(exc, path, "not a regular file (a socket)")


def test_a_fifo_with_no_writer_reads_as_empty_instead_of_hanging(tmp_path):
    for name, read, needle in [("forget.jsonl", load_texts, "empty text set file"), ("qa.jsonl", load_qa, "empty QA set file"),
                               ("policy.toml", Policy.from_toml, "empty policy input")]:
        fifo = tmp_path / name
        os.mkfifo(fifo)
        box = _in_thread(lambda fifo=fifo, read=read: read(fifo), fifo)
        assert isinstance(box.get("error"), InputError), box
        message = str(box["error"])
        assert message.startswith(str(fifo)) and needle in message and "\n" not in message, message


def test_a_pipe_with_a_writer_is_read_like_a_file(tmp_path):
    """``--forget <(cat f.jsonl)`` hands the tool ``/dev/fd/N``, a pipe; a named FIFO works the same."""
    content = b"".join(json.dumps({"text": f"record {i}"}).encode() + b"\n" for i in range(2000))  # more than a pipe buffer
    r, w = os.pipe()

    def write(fd):
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)

    writer = threading.Thread(target=write, args=(w,), daemon=True)
    writer.start()
    try:
        ts = load_texts(f"/dev/fd/{r}")
    finally:
        os.close(r)
    writer.join(10)
    assert len(ts.texts) == 2000 and ts.texts[-1] == "record 1999"

    fifo = tmp_path / "policy.toml"
    os.mkfifo(fifo)

    def write_policy():
        with open(fifo, "wb") as fh:  # blocks until the reader opens it
            fh.write(b"verbmem_gap_max = 0.2\n")

    writer = threading.Thread(target=write_policy, daemon=True)
    writer.start()
    box = _in_thread(lambda: Policy.from_toml(fifo), fifo)
    writer.join(10)
    assert box.get("value") is not None and box["value"].verbmem_gap_max == 0.2, box


def test_a_whole_file_read_stops_at_its_cap_even_from_an_endless_pipe():
    """A pipe that never ends is refused once it passes the cap, holding no more than the cap."""
    from unlearn_audit.data import read_input

    r, w = os.pipe()
    stop = threading.Event()

    def write():
        block = b"x" * 65536
        with os.fdopen(w, "wb") as fh:
            try:
                while not stop.is_set():
                    fh.write(block)
            except BrokenPipeError:
                pass

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    path = Path(f"/dev/fd/{r}")
    try:
        with pytest.raises(InputError) as exc:
            read_input(path, "report", max_bytes=3 * MiB)
    finally:
        stop.set()
        os.close(r)
    writer.join(10)
    _one_line(exc, path, "report file larger than 3 MiB")


def test_a_policy_over_16_mib_is_refused(tmp_path):
    path = tmp_path / "policy.toml"
    with open(path, "wb") as fh:
        fh.truncate(17 * MiB)  # sparse: no disk, and the size is what the check sees
    with pytest.raises(InputError) as exc:
        Policy.from_toml(path)
    _one_line(exc, path, "policy file larger than 16 MiB")


# 2. A record is capped while its line is read -----------------------------------------------------

def test_a_record_over_the_cap_is_refused_without_reading_its_line_whole(tmp_path):
    from unlearn_audit.data import MAX_RECORD_BYTES

    assert MAX_RECORD_BYTES == 8 * MiB
    path = tmp_path / "forget.jsonl"
    with open(path, "wb") as fh:
        fh.write(b'{"text": "a normal record"}\n{"text": "' + b"a" * (40 * MiB) + b'"}\n')
    tracemalloc.start()
    try:
        with pytest.raises(InputError) as exc:
            load_texts(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(exc.value) == f"{path}:2: record larger than 8 MiB, the limit for one record"
    # readline(limit) may hold the capped line twice while it joins its pieces; never the 40 MiB line
    assert peak < 24 * MiB, f"peak {peak / MiB:.0f} MiB for a 40 MiB line"


def test_a_record_of_exactly_the_cap_loads(tmp_path):
    from unlearn_audit.data import MAX_RECORD_BYTES

    head, tail = b'{"text": "', b'"}'
    line = head + b"b" * (MAX_RECORD_BYTES - len(head) - len(tail)) + tail
    assert len(line) == MAX_RECORD_BYTES
    path = tmp_path / "forget.jsonl"
    path.write_bytes(line + b"\n" + line)  # the last line has no newline
    ts = load_texts(path)
    assert [len(t) for t in ts.texts] == [MAX_RECORD_BYTES - len(head) - len(tail)] * 2


# 5. Text that is not valid Unicode ------------------------------------------------------------------

def test_check_text_refuses_a_lone_surrogate_and_an_oversized_text_in_one_line():
    from unlearn_audit.data import MAX_RECORD_BYTES, check_text

    assert check_text("a \U0001f600 b", "x.json[0]: each item") == "a \U0001f600 b"
    where = "muse/privleak/forget.json[3]: each item"
    with pytest.raises(InputError) as exc:
        check_text("text with a lone \ud800 surrogate", where)
    assert str(exc.value) == f"{where} holds an unpaired surrogate (\\ud800); not valid Unicode text"
    with pytest.raises(InputError) as exc:
        check_text("é" * (MAX_RECORD_BYTES // 2 + 1), where)  # under the cap in characters, over it in bytes
    assert str(exc.value) == f"{where} is larger than 8 MiB, the limit for one text"


def test_a_lone_surrogate_in_a_jsonl_record_names_the_file_line_and_field(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"question": "q", "answer": "a"}\n{"question": "q", "answer": "\\udfff"}\n')
    with pytest.raises(InputError) as exc:
        load_qa(path)
    assert str(exc.value) == f"{path}:2: field 'answer' holds an unpaired surrogate (\\udfff); not valid Unicode text"


def test_a_lone_surrogate_in_a_muse_json_file_is_refused(tmp_path):
    from unlearn_audit.muse_dir import read_muse_dir

    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "forget.txt").write_text("forget text")
    (tmp_path / "raw" / "holdout.txt").write_text("holdout text")
    (tmp_path / "privleak").mkdir()
    (tmp_path / "privleak" / "forget.json").write_text('["a", "b\\ud800"]')
    (tmp_path / "privleak" / "holdout.json").write_text('["c", "d"]')
    with pytest.raises(InputError, match="unpaired surrogate"):
        read_muse_dir(tmp_path)


# 3. Policy numbers --------------------------------------------------------------------------------

TOLERANCES = ["verbmem_gap_max", "knowmem_gap_max", "privleak_abs_max", "verbmem_recovery_max", "knowmem_recovery_max",
              "verbmem_retention_max", "knowmem_retention_max"]


@pytest.mark.parametrize("key", [*TOLERANCES, "recovery_alpha"])
def test_a_policy_number_that_is_not_finite_is_refused(tmp_path, key):
    path = tmp_path / "policy.toml"
    for value in ("inf", "+inf", "-inf", "1e400", "-1e400"):
        path.write_text(f"{key} = {value}\n")
        with pytest.raises(InputError) as exc:
            Policy.from_toml(path)
        message = str(exc.value)
        assert message.startswith(f"{path}: {key} ") and "\n" not in message, message
        assert "finite" in message or "between 0 and 1" in message, message


@pytest.mark.parametrize("key", TOLERANCES)
def test_a_negative_tolerance_is_refused_and_zero_is_allowed(tmp_path, key):
    path = tmp_path / "policy.toml"
    path.write_text(f"{key} = -0.1\n")
    with pytest.raises(InputError) as exc:
        Policy.from_toml(path)
    assert str(exc.value) == f"{path}: {key} must be 0 or more, got -0.1"
    for zero in ("0", "0.0", "-0.0"):
        path.write_text(f"{key} = {zero}\n")
        policy = Policy.from_toml(path)
        assert getattr(policy, key) == 0.0 and json.dumps(policy.to_dict()).count("-0.0") == 0


def test_recovery_alpha_stays_strictly_between_0_and_1(tmp_path):
    path = tmp_path / "policy.toml"
    for value in ("0", "1", "-0.05", "1.5"):
        path.write_text(f"recovery_alpha = {value}\n")
        with pytest.raises(InputError, match="recovery_alpha must be between 0 and 1"):
            Policy.from_toml(path)
    path.write_text("recovery_alpha = 0.01\n")
    assert Policy.from_toml(path).recovery_alpha == 0.01
