"""Inline SVG charts for the HTML report: no scripts, no fonts, no external files, so the report opens
offline and prints to PDF. Every chart has a title and a text description, and series differ by
shape and dash pattern as well as colour (no colour-only signal)."""

from __future__ import annotations

from html import escape

import numpy as np

W, ROW, LEFT, RIGHT = 640, 26, 130, 70


def _svg(width: int, height: int, title: str, desc: str, body: list[str]) -> str:
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img" aria-labelledby="t d"><title>{escape(title)}</title><desc>{escape(desc)}</desc>'
            + "".join(body) + "</svg>")


def interval_bars(rows: list[dict], threshold: float | None, title: str, desc: str, lo: float = 0.0, hi: float = 1.0) -> str:
    """One horizontal bar per row (``label``, ``value``, ``ci_low``, ``ci_high``) with CI whiskers and an
    optional dashed threshold line."""
    lo = min([lo] + [r["ci_low"] for r in rows if r.get("ci_low") is not None])
    hi = max([hi] + [r["ci_high"] for r in rows if r.get("ci_high") is not None] + ([threshold] if threshold else []))
    span = (hi - lo) or 1.0
    x = lambda v: LEFT + (v - lo) / span * (W - LEFT - RIGHT)  # noqa: E731
    height = 30 + ROW * len(rows) + 24
    body = [f'<line x1="{x(0):.1f}" y1="20" x2="{x(0):.1f}" y2="{height - 24}" stroke="#555"/>']
    for i, r in enumerate(rows):
        y = 24 + i * ROW
        v = r.get("value")
        body.append(f'<text x="{LEFT - 6}" y="{y + 14}" text-anchor="end" font-size="12">{escape(r["label"])}</text>')
        if v is None:
            body.append(f'<text x="{LEFT + 4}" y="{y + 14}" font-size="12">not measured</text>')
            continue
        x0, x1 = sorted((x(0), x(v)))
        fill = "#b33" if r.get("failed") else "#4a6fa5"
        body.append(f'<rect x="{x0:.1f}" y="{y + 4}" width="{max(x1 - x0, 1):.1f}" height="14" fill="{fill}"/>')
        if r.get("ci_low") is not None and r.get("ci_high") is not None:
            a, b = x(r["ci_low"]), x(r["ci_high"])
            body.append(f'<line x1="{a:.1f}" y1="{y + 11}" x2="{b:.1f}" y2="{y + 11}" stroke="#000" stroke-width="1.5"/>')
            body += [f'<line x1="{e:.1f}" y1="{y + 6}" x2="{e:.1f}" y2="{y + 16}" stroke="#000"/>' for e in (a, b)]
        mark = " ✗" if r.get("failed") else ""
        body.append(f'<text x="{W - RIGHT + 4}" y="{y + 14}" font-size="12">{v:.3f}{mark}</text>')
    if threshold is not None:
        t = x(threshold)
        body.append(f'<line x1="{t:.1f}" y1="18" x2="{t:.1f}" y2="{height - 20}" stroke="#b33" stroke-dasharray="5 3"/>')
        body.append(f'<text x="{t:.1f}" y="{height - 6}" text-anchor="middle" font-size="11">threshold {threshold:g}</text>')
    return _svg(W, height, title, desc, body)


def distributions(forget: list[float], holdout: list[float], title: str) -> str:
    """Histograms of per-document Min-K% scores: forget as filled bars, holdout as a dashed outline."""
    f, h = np.asarray(forget, float), np.asarray(holdout, float)
    both = np.concatenate([f, h])
    both = both[np.isfinite(both)]
    if both.size == 0:
        return ""
    lo, hi = float(both.min()), float(both.max())
    if hi <= lo:  # one value: a bin around it
        span, limit = max(abs(lo), 1.0) * 1e-6, float(np.finfo(np.float64).max)
        lo, hi = max(lo - span, -limit), min(hi + span, limit)
    t = np.linspace(0.0, 1.0, 21)
    # lo·(1−t) + hi·t never overflows where hi − lo would (scores of ±1e308 in a hand-made report), and the
    # running maximum keeps the edges in order where rounding at such magnitudes would not
    edges = np.maximum.accumulate(lo * (1 - t) + hi * t)
    cf, ch = np.histogram(f, edges)[0], np.histogram(h, edges)[0]
    top = max(cf.max(), ch.max(), 1)
    width, height, pad = 300, 150, 24
    bw = (width - 2 * pad) / 20
    body = []
    for i in range(20):
        x = pad + i * bw
        hf = cf[i] / top * (height - 2 * pad)
        body.append(f'<rect x="{x:.1f}" y="{height - pad - hf:.1f}" width="{bw - 1:.1f}" height="{hf:.1f}" fill="#4a6fa5" opacity="0.7"/>')
    pts = " ".join(f"{pad + i * bw:.1f},{height - pad - ch[i] / top * (height - 2 * pad):.1f} "
                   f"{pad + (i + 1) * bw:.1f},{height - pad - ch[i] / top * (height - 2 * pad):.1f}" for i in range(20))
    body.append(f'<polyline points="{pts}" fill="none" stroke="#c60" stroke-width="2" stroke-dasharray="4 2"/>')
    body.append(f'<text x="{pad}" y="14" font-size="11">■ forget  ┅ holdout (Min-K% 40 log-likelihood)</text>')
    body.append(f'<text x="{pad}" y="{height - 6}" font-size="10">{edges[0]:.2f}</text>')
    body.append(f'<text x="{width - pad}" y="{height - 6}" font-size="10" text-anchor="end">{edges[-1]:.2f}</text>')
    mean = lambda a: f"{a.mean():.3f}" if a.size else "–"  # a hand-made report may leave one split empty  # noqa: E731
    desc = f"forget n={f.size} mean {mean(f)}; holdout n={h.size} mean {mean(h)}"
    return _svg(width, height, title, desc, body)


def roc(forget: list[float], holdout: list[float], title: str) -> str:
    """ROC of "holdout scores higher than forget" (MUSE's AUC direction), with the chance diagonal."""
    f, h = np.asarray(forget, float), np.asarray(holdout, float)
    if f.size == 0 or h.size == 0:
        return ""
    thresholds = np.unique(np.concatenate([f, h]))[::-1]
    tpr = [0.0] + _at_or_above(h, thresholds).tolist()
    fpr = [0.0] + _at_or_above(f, thresholds).tolist()
    size, pad = 150, 20
    pts = " ".join(f"{pad + a * (size - 2 * pad):.1f},{size - pad - b * (size - 2 * pad):.1f}" for a, b in zip(fpr, tpr))
    body = [f'<rect x="{pad}" y="{pad}" width="{size - 2 * pad}" height="{size - 2 * pad}" fill="none" stroke="#555"/>',
            f'<line x1="{pad}" y1="{size - pad}" x2="{size - pad}" y2="{pad}" stroke="#999" stroke-dasharray="3 3"/>',
            f'<polyline points="{pts}" fill="none" stroke="#4a6fa5" stroke-width="2"/>',
            f'<text x="{pad}" y="{size - 4}" font-size="10">FPR (forget)</text>',
            f'<text x="4" y="{pad - 6}" font-size="10">TPR (holdout)</text>']
    return _svg(size, size, title, "ROC curve of the Min-K% 40 membership score; the dashed diagonal is chance", body)


def _at_or_above(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """The share of ``values`` at or above each threshold (a NaN is never), by binary search: comparing
    every value with every threshold is quadratic, and minutes for a report with 100,000 scores."""
    ranked = np.sort(values[~np.isnan(values)])
    return (ranked.size - np.searchsorted(ranked, thresholds, side="left")) / values.size
