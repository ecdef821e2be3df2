"""The probe registry: which probes an audit runs, in this order.

Adding a probe takes three steps, all in one new file under ``probes/`` plus its test:

1. Subclass ``probes.base.Probe``: give it a ``name``, the ``paper`` that defines it, and the ``steps``
   (split, role) it runs on: "evidence" and "utility" splits run on the original model too.
2. Implement ``prepare`` (tokenize once per audit), ``run`` (one variant, through the narrow model
   interface only) and ``score`` (per-sample values to ``Result``s with bootstrap intervals).
3. Declare what the verdict checks (``checks``, each naming its tolerance in ``policy.Policy``) and what
   the report's table shows (``columns``), then add the class to ``PROBES`` below.

Everything downstream (the variant job, the scoring, the policy's checks, the report's columns and
the resume cache's key) reads this table; nothing else names a probe.
"""

from __future__ import annotations

from .base import KINDS, ROLES, CheckSpec, Probe, Step
from .knowmem import KnowMem
from .mink import MinK
from .verbmem import VerbMem

PROBES: dict[str, Probe] = {p.name: p for p in (VerbMem(), KnowMem(), MinK())}


def plan(roles: tuple[str, ...] = ROLES) -> list[tuple[Probe, Step]]:
    """Every (probe, split) a variant runs, by role first and registry order within a role: the forget-set
    evidence of every probe, then utility, then the audited-only baselines."""
    steps = [(ROLES.index(s.role), i, j, p, s) for i, p in enumerate(PROBES.values()) for j, s in enumerate(p.steps)
             if s.role in roles]
    return [(p, s) for *_, p, s in sorted(steps, key=lambda t: t[:3])]


def checks() -> list[tuple[str, CheckSpec]]:
    """(probe name, check) for every check, by kind first (memorisation, recovery, retention), then probe."""
    specs = [(KINDS.index(c.kind), i, p.name, c) for i, p in enumerate(PROBES.values()) for c in p.checks]
    return [(name, c) for *_, name, c in sorted(specs, key=lambda t: t[:2])]
