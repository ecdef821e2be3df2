"""The audit pipeline, one module per stage, in the order ``audit.run_audit`` runs them:

- ``types``: the frozen values the stages hand each other (imports no stage);
- ``workload``: every probe's data tokenized once with the audited model's tokenizer;
- ``variant``: one scheme built from a checkpoint and probed, with its weight forensics;
- ``executor``: where variant jobs run (here, or on a Ray cluster);
- ``cache``: the resume cache of finished variants;
- ``scoring``: one variant's per-sample outputs turned into estimates with bootstrap intervals;
- ``provenance``: what the report must say about where the evidence came from, and whether the
  inputs changed while the audit ran.
"""
