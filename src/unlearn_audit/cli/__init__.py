"""The ``unlearn-audit`` command line. Exit codes: 0 PASS, 1 FAIL, 2 bad input or usage, 3 internal error (a
bug in the tool, never a finding about the model), 4 INCONCLUSIVE (0 with ``--fail-on fail``). Reports go to stdout and files;
human messages and progress bars go to stderr, progress only on a terminal.
"""

from .common import app
from .main import main

__all__ = ["app", "main"]
