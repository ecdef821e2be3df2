"""The entry point: runs a command and turns every outcome into one exit code and at most one line."""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import warnings

import typer

from ..machine import forced_fast_dtypes
from . import attest_cmds, audit_cmd, demo_cmd, model_cmds, report_cmds, version  # noqa: F401  (registers the commands)
from .common import InputError, app, click_exc, err, say


def _quiet_libraries() -> None:
    """Library progress bars and advisories would interleave with our stderr; our own stages suffice."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    # transformers imports torchao when it is installed; its CUDA-only kernels then log load failures.
    # bitsandbytes asks the ``kernels`` package for hub kernels, which logs a trust-check warning offline.
    for name in ("bitsandbytes", "torchao", "torch.utils._pytree", "kernels"):
        logging.getLogger(name).setLevel(logging.ERROR)


#: Commands that read only the tool's own tables and files. They load no model, so there is no library
#: to quiet, and importing transformers to quiet it would cost them seconds (as would torch, with it).
READ_ONLY = {"schemes", "schema", "report", "attest", "verify"}


def _quieted(callback):
    """``callback`` with the libraries quieted first: when the command runs, after its arguments parsed,
    so that ``--help`` and a usage error import none of them."""

    @functools.wraps(callback)
    def run(*args, **kwargs):
        _quiet_libraries()
        return callback(*args, **kwargs)

    return run


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A Python warning (numpy's RuntimeWarnings, peft's UserWarnings) as one ``warning:`` line, not the
    default two or more lines with the source, so stderr keeps its one-line-per-message promise."""
    say(f"warning: {category.__name__}: {message}")


class _Signalled(BaseException):
    """SIGINT or SIGTERM, raised like Ctrl-C so every atomic writer removes its temp files on the way out.
    Not a KeyboardInterrupt: typer turns that into a silent exit code, and the user should be told."""

    def __init__(self, signum: int) -> None:
        self.word, self.code = ("interrupted", 130) if signum == signal.SIGINT else ("terminated", 143)


def _raise_signalled(signum, frame) -> None:
    raise _Signalled(signum)


def main(argv: list[str] | None = None) -> None:
    # Process-wide settings belong to the program, not to importing the package, and only as defaults, so
    # a user's own choice stands. HF_HUB_OFFLINE is left as the user set it: only a Hub id that is not in
    # the cache is downloaded (models/hub.py); every other load passes local_files_only=True.
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    signal.signal(signal.SIGTERM, _raise_signalled)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # keep SIGINT ignored if it was
        signal.signal(signal.SIGINT, _raise_signalled)
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    command = typer.main.get_command(app)
    for name, sub in command.commands.items():
        if name not in READ_ONLY:
            sub.callback = _quieted(sub.callback)
    shown = warnings.showwarning  # put back on the way out: main() may be called from a longer-lived process
    warnings.showwarning = _warning_line
    try:
        forced_fast_dtypes()  # a misspelt override is bad input before any work, not float32 in silence
        code = command.main(args=args, prog_name="unlearn-audit", standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except click_exc.UsageError as exc:
        say(f"error: {exc.format_message()}")
        code = 2
    except InputError as exc:
        say(f"error: {exc}")
        code = 2
    except (KeyboardInterrupt, typer.Abort):
        say("interrupted")
        code = 130
    except _Signalled as exc:
        say(exc.word)
        code = exc.code
    except Exception as exc:  # a bug in the tool, not a finding: keep it apart from FAIL (exit 3)
        if debug:
            err.print_exception()
        say(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug)")
        code = 3
    finally:
        warnings.showwarning = shown
    sys.exit(code or 0)
