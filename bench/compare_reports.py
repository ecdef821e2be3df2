"""Two report.json of the same audit, number by number: the largest per-sample difference and where.

    python bench/compare_reports.py A/report.json B/report.json TOLERANCE

Exits 0 when every per-sample value agrees within TOLERANCE and the verdicts are equal (bench/gpu_check.sh
uses it for CUDA run twice, tolerance 0, and for CUDA against the CPU in float32)."""

import json
import sys


def main() -> int:
    a, b = (json.load(open(p)) for p in sys.argv[1:3])
    tol = float(sys.argv[3])
    worst, where = 0.0, None
    for x, y in zip(a["samples"], b["samples"], strict=True):
        assert (x["variant"], x["model"], x["probe"], x["metric"]) == (y["variant"], y["model"], y["probe"], y["metric"])
        for u, v in zip(x["values"], y["values"], strict=True):
            if u is not None and v is not None and abs(u - v) > worst:
                worst, where = abs(u - v), (x["variant"], x["model"], x["probe"], x["split"], x["metric"])
    verdicts = (a["verdict"], b["verdict"])
    print(f"largest per-sample difference {worst:.3g} at {where}; tolerance {tol}; verdicts {verdicts}")
    return 0 if worst <= tol and verdicts[0] == verdicts[1] else 1


if __name__ == "__main__":
    sys.exit(main())
