"""Shared pieces of the command line: the app, stderr, output writing, the choices and the option
checks every command uses. Every common flag also reads an ``UNLEARN_AUDIT_*`` environment variable
(``ENV``), so a CI job can set its defaults once."""

from __future__ import annotations

import enum
import errno
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn
from rich.text import Text

from ..errors import InputError
from ..steps import Step

try:  # typer >= 0.20 vendors its own click; usage errors are raised from there
    from typer._click import exceptions as click_exc  # noqa: F401  (main catches its UsageError)
except ImportError:  # pragma: no cover - older typer uses the click package
    from click import exceptions as click_exc  # noqa: F401

#: The exit codes a release gate branches on. INCONCLUSIVE has its own code, so a pipeline can tell "remembers
#: the forget set" (1) from "not enough evidence to say" (4) without reading the JSON; ``--fail-on fail`` turns
#: INCONCLUSIVE into 0. 2 is bad input and 3 a bug in the tool (cli/main.py), never a verdict.
EXIT = {"PASS": 0, "FAIL": 1, "INCONCLUSIVE": 4}
EXIT_CODES_HELP = ("Exit codes: 0 PASS, 1 FAIL, 2 bad input, 3 internal error, 4 INCONCLUSIVE "
                   "(0 with --fail-on fail), 130/143 interrupted.")


def ENV(flag: str) -> str:
    """The environment variable that sets ``--flag``'s default: ``UNLEARN_AUDIT_FLAG``."""
    return "UNLEARN_AUDIT_" + flag.upper().replace("-", "_")


class OutputFormat(str, enum.Enum):
    """What a command prints on stdout: the human table, or the JSON document."""

    table = "table"
    json = "json"


class AuditFormat(str, enum.Enum):
    """What ``audit`` and ``remediate --verify`` print on stdout: the table, the JSON, or the Markdown or
    JUnit view that ``report`` renders, so a CI job needs no second call."""

    table = "table"
    json = "json"
    markdown = "markdown"
    junit = "junit"


DEFAULT_OUT = Path("unlearn-audit-report")
REPORT_FILES = ("report.json", "report.html", "samples.jsonl")  # the report set ``write_outputs`` writes under --out
OUT_HELP = "Directory for the report set (report.json, report.html, samples.jsonl)."
QUIET_HELP = "No progress lines on stderr (by default a terminal shows bars and a log gets one plain line per stage)."


class FailOn(str, enum.Enum):
    """Which verdicts make the exit code non-zero: FAIL only, or FAIL and INCONCLUSIVE."""

    fail = "fail"
    inconclusive = "inconclusive"

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Has this language model really forgotten? Quantize, probe, and give a verdict with evidence.",
                  epilog=EXIT_CODES_HELP)
err = Console(stderr=True, highlight=False)


class Steps:
    """The current stage on stderr. On a terminal: a spinner for a plain message, and a bar with done/total,
    elapsed time and the time left for a ``Step`` (steps.py), which knows how far its stage is; the time
    left is rich's estimate from the rate of the stage's updates so far. In a log (CI, a file), where a bar
    would print nothing readable: plain lines (``PlainLog``). ``quiet`` prints neither."""

    def __init__(self, console: Console | None = None, get_time=None, quiet: bool = False) -> None:
        console = console or err
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(), _Counts(),
                                 console=console, transient=True, speed_estimate_period=3600,
                                 get_time=get_time) if console.is_terminal and not quiet else None
        self.plain = PlainLog(get_time=get_time, grace=1.0) if not console.is_terminal and not quiet else None
        self.task, self.stage = None, None

    def __enter__(self):
        if self.progress:
            self.progress.__enter__()
        return self

    def __call__(self, text: str) -> None:
        if self.plain:
            self.plain(text)
        if not self.progress:
            return
        stage, done, total = (text.stage, text.done, text.total) if isinstance(text, Step) else (None, None, None)
        if self.task is None or stage != self.stage:  # a new stage: a bar of its own, timed from now
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task, self.stage = self.progress.add_task(str(text), total=total), stage
        # a stage can name a path: shown as plain text, never parsed as rich markup (markup=False above)
        self.progress.update(self.task, description=str(text), completed=done or 0)

    def __exit__(self, *exc):
        if self.plain:
            self.plain.close(failed=exc[0] is not None)
        if self.progress:
            self.progress.__exit__(*exc)


class PlainLog:
    """Progress for a log: one plain line per stage and per unit of a counted stage (each variant), with
    done/total, the time the stage has run and the time it has left at its rate so far. Stages of many
    small units (training steps) print at every tenth of the way and at least every ``every`` seconds, so a
    30-minute job in CI shows it is alive without flooding the log. No cursor codes, nothing overwritten.

    A line is held back for ``grace`` seconds (a timer prints it then, or the next line does), and one
    still held when the command fails is dropped: bad input found while the checkpoints open stays the
    one ``error:`` line, while a stage that runs for minutes is announced within a second."""

    def __init__(self, write=None, get_time=None, every: float = 30.0, grace: float = 0.0) -> None:
        import threading
        import time

        self.write = write or say
        self.now = get_time or time.monotonic
        self.every, self.grace = every, grace
        self.start = self.now()
        self.stage, self.stage_start, self.done, self.last = None, self.start, None, self.start
        self.first_done = 0  # units already done when the stage's first line came: the rate counts only later ones
        self.lock, self.pending, self.timer = threading.Lock(), None, None

    def __call__(self, text: str) -> None:
        line = self._line(text)
        if line is None:
            return
        with self.lock:
            self._flush()
            self.pending = line
            if self.grace <= 0:
                self._flush()
                return
        import threading

        if self.timer is not None:
            self.timer.cancel()
        self.timer = threading.Timer(self.grace, self.flush)
        self.timer.daemon = True
        self.timer.start()

    def flush(self) -> None:
        with self.lock:
            self._flush()

    def _flush(self) -> None:
        if self.pending is not None:
            line, self.pending = self.pending, None
            self.write(line)

    def close(self, failed: bool) -> None:
        """The last line is printed after a success and dropped after a failure (see the class)."""
        if self.timer is not None:
            self.timer.cancel()
        with self.lock:
            if failed:
                self.pending = None
            self._flush()

    def _line(self, text: str) -> str | None:
        now = self.now()
        if not isinstance(text, Step) or text.total is None:
            self.stage, self.done, self.last = None, None, now
            return f"[{_clock(now - self.start)}] {text}"
        if text.stage != self.stage:
            self.stage, self.stage_start, self.done, self.first_done = text.stage, now, None, text.done
        elif text.done == self.done:  # more messages from the same unit: already said
            return None
        else:
            tenth = text.total > 0 and text.done * 10 // text.total != (self.done or 0) * 10 // text.total
            if not (text.total <= 50 or text.done >= text.total or tenth or now - self.last >= self.every):
                return None
        self.done, self.last = text.done, now
        ran = now - self.stage_start
        # A stage first heard of after its first unit (a training step reports once it has run) has no rate
        # yet: the time left is unknown until a later unit, never "0:00:00".
        counted = text.done - self.first_done
        left = ran / counted * (text.total - text.done) if counted > 0 else None
        return (f"[{_clock(now - self.start)}] {text} ({text.done}/{text.total} done, "
                f"stage {_clock(ran)}, left {_clock(left) if left is not None else 'unknown'})")


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class _Counts(ProgressColumn):
    """``done/total``, the time the stage has run and the time it has left; only the elapsed time for a
    stage that does not say how far it is."""

    def render(self, task) -> Text:
        if task.total is None:
            return Text(_clock(task.elapsed))
        return Text(f"{int(task.completed)}/{int(task.total)} {_clock(task.elapsed)} left {_clock(task.time_remaining)}")


def stdout_console() -> Console:
    """The table's console: a pipe or file gets a wide table instead of rich's 80-column default."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


def exit_code(verdict: str, fail_on: FailOn) -> int:
    """0 PASS, 1 FAIL, 4 INCONCLUSIVE, or 0 for INCONCLUSIVE with ``--fail-on fail`` (``EXIT``)."""
    if verdict == "INCONCLUSIVE" and fail_on == FailOn.fail:
        return 0
    return EXIT[verdict]


def emit(report: dict, fmt: str, out: Optional[Path], fail_on: FailOn = FailOn.inconclusive) -> int:
    """Write report.json, report.html and samples.jsonl under ``out`` (as one unit), print the chosen view
    on stdout, say on stderr where the report set is and what the verdict is, and return the exit code."""
    from ..report.console import render
    from ..report.write import to_json_text

    for note in report["config"].get("notes", []):
        say(f"note: {note}")
    if out is not None:
        write_outputs(out, report)
    fmt = getattr(fmt, "value", fmt)
    if fmt == "json":
        sys.stdout.write(to_json_text(report))
    elif fmt in ("markdown", "junit"):
        from ..report.render import render as render_view

        sys.stdout.write(render_view(report, "md" if fmt == "markdown" else "junit", getattr(fail_on, "value", fail_on)))
    else:
        render(report, stdout_console())
    code = exit_code(report["verdict"], fail_on)
    where = f", report in {out / 'report.json'} (and report.html, samples.jsonl)" if out is not None else ""
    say(f"verdict {report['verdict']} (exit {code}){where}")
    return code


def write_outputs(out: Path, report: dict) -> None:
    """samples.jsonl, report.html and report.json as one atomic unit."""
    from ..report.render import html
    from ..report.write import samples_text, to_json_text, write_files_atomic

    files = {out / "samples.jsonl": samples_text(report), out / "report.html": html(report), out / "report.json": to_json_text(report)}
    try:
        write_files_atomic(files)
    except OSError as exc:  # e.g. a full disk: nothing half-written is left, and the user is told plainly
        raise InputError(f"{out}: cannot write the report ({exc.strerror or exc})") from None


def resolve_device(device: str, remote: bool = False) -> str:
    """--device auto means cuda where there is one; cuda:N is GPU N. With a remote executor, --device cuda
    names the workers' GPUs, which this machine need not have. Also caps CPU threads at the CPUs we may use."""
    import torch

    from ..machine import usable_cpus
    from ..pipeline.types import is_device

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif not is_device(device):
        raise InputError(f"--device must be cpu, cuda, cuda:N or auto, got {device!r}")
    if device.startswith("cuda") and not remote:
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: no CUDA device is available here")
        index = int(device[5:]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise InputError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), numbered from 0")
    if torch.get_num_threads() > usable_cpus():  # never more threads than the CPUs we may run on
        torch.set_num_threads(usable_cpus())
    return device


SCHEMES_HELP = ("Comma-separated scheme names (see `schemes`). Default: fp32,rtn-int8,rtn-int4,bnb-fp4; a default that cannot "
                "run here makes the verdict at most INCONCLUSIVE, a scheme list given here does not.")


def audit_config(schemes: Optional[str], backend: str, policy: Optional[Path], device: str, dtype: str, remote: bool = False, **settings):
    """The AuditConfig of ``audit`` and of ``remediate --verify`` alike: the scheme list parsed (None: the
    defaults, recorded as such), the policy file read, the device resolved; ``settings`` are AuditConfig's
    other fields, validated there."""
    from ..pipeline.types import AuditConfig
    from ..quantize.registry import DEFAULT_SCHEMES, parse_schemes

    default = schemes is None
    names = tuple(s.name for s in parse_schemes(",".join(DEFAULT_SCHEMES) if default else schemes))  # the backend is applied when the audit resolves them
    pol, path = load_policy(policy)
    source = {"policy_source": f"policy file {path}"} if path is not None else {}
    return AuditConfig(schemes=names, default_schemes=default, backend=backend, policy=pol, device=resolve_device(device, remote),
                       dtype=dtype, **source, **settings)


def parse_batch_size(value: str) -> int | None:
    """``--batch-size``: a positive integer, or ``auto`` (None: sized from free memory, models/memory.py)."""
    if value.strip().lower() == "auto":
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise InputError(f"--batch-size must be a positive integer or auto, got {value!r}")
    return n


def load_policy(path: Optional[Path]):
    from ..policy import Policy

    return (Policy.from_toml(path), str(path)) if path is not None else (Policy(), None)


REVISION_HELP = "Revision of a Hugging Face Hub id (branch, tag or commit); other model options take org/name@REV."


def model_ref(value, flag: str, role: str, revision: Optional[str] = None, allow_pickle: bool = False, adapter: bool = False):
    """A model argument as given, a local directory or a Hub id ``org/name`` (``@REV`` or ``--revision``),
    resolved to files on this machine (models/hub.py); None stays None."""
    from ..models.hub import resolve

    if value is None:
        if revision is not None:
            raise InputError(f"--revision {revision}: no {flag} is given for it to apply to")
        return None
    real_path(Path(value), flag)
    return resolve(value, revision, role, flag, allow_pickle, adapter)


def real_path(path: Path, flag: str) -> Path:
    """``path`` resolved, or a one-line error naming ``flag``. A loop of symbolic links (``a -> b -> a``, or
    a path through one) is refused by name: ``exists()`` calls it missing, ``resolve()`` raises RuntimeError
    before Python 3.13 and passes it through after, and whatever opens it later fails with ELOOP."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{path}: {flag} leads into a loop of symbolic links") from None
    try:
        return path.resolve()
    except (OSError, RuntimeError) as exc:  # a loop made between the two calls; a name too long
        raise InputError(f"{path}: {flag} cannot be resolved ({exc})") from None


def check_out(out: Optional[Path], file: bool = False, flag: str = "--out", writes: tuple[str, ...] = ()) -> None:
    """Refuse an output directory (or, with ``file``, an output file's place) that cannot be written,
    before any work is done rather than after the audit. ``writes`` are the files written under the
    directory; one that is a directory is refused now, since replacing it would fail at the end."""
    if out is None:
        return
    real_path(out, flag)
    if not file and out.exists() and not out.is_dir():
        raise InputError(f"{out}: --out must be a directory")
    for name in writes:
        if (out / name).is_dir() and not (out / name).is_symlink():
            raise InputError(f"{out / name}: a directory where {flag} writes its {name}; move it away or choose another {flag}")
    target = out.parent if file else out
    probe = target if target.exists() else next((p for p in target.parents if p.exists()), Path("."))
    if not probe.is_dir():
        raise InputError(f"{out}: {flag} cannot be created: {probe} is a file, not a directory")
    # os.access says yes to root almost everywhere (a read-only mount, /proc), so create and remove a
    # real file where the first directory would go; nothing is left behind, not even a directory.
    try:
        fd, name = tempfile.mkstemp(dir=probe, prefix=".unlearn-audit-probe.")
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise InputError(f"{out}: {flag} is not writable ({exc.strerror or exc})") from None


def check_not_input(out: Optional[Path], flag: str, inputs: dict[str, Optional[Path]], inside: bool = False,
                    writes: tuple[str, ...] = ()) -> None:
    """Refuse an output that would overwrite an input. ``inputs`` maps how each input is named to its path;
    ``out`` is refused when it is one of them, or, with ``inside``, when it lies inside an input directory;
    ``writes`` are the file names written under an output directory, each refused when it is an input.
    Paths are compared resolved, so ``./x``, ``a/../x`` and symlinks count as the same place."""
    if out is None:
        return
    given = {name: real_path(Path(path), name) for name, path in inputs.items() if path is not None}
    for target in (out, *(out / name for name in writes)):
        resolved = real_path(target, flag)
        for name, where in given.items():
            if resolved == where:
                raise InputError(f"{target}: {flag} would overwrite the input {name} ({inputs[name]}); choose another path")
            if inside and where.is_dir() and where in resolved.parents:
                raise InputError(f"{target}: {flag} lies inside the input {name} ({inputs[name]}) and would change it; choose another path")


def check_percentile(p: float) -> None:
    if not 0 < p < 100:
        raise InputError(f"--saliency-percentile must be between 0 and 100 (the paper uses 90, 95 or 99), got {p}")


def say(message: str) -> None:
    """One unwrapped line on stderr (rich would wrap long paths onto several lines, and read a ``[bold]`` or
    ``[/]`` in a path as markup). Every message that can hold a path or user text goes through here."""
    sys.stderr.write("unlearn-audit: " + " ".join(message.split()) + "\n")
