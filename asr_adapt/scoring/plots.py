"""PNG plots of scoring results (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: reports are written on headless machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from asr_adapt.fileio import atomic_open  # noqa: E402


def _save(fig, out_png: str | Path) -> Path:
    out_png = Path(out_png)
    with atomic_open(out_png, "wb") as f:
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out_png


def grouped_bars(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    out_png: str | Path,
    *,
    errors: Mapping[str, Sequence[tuple[float, float] | None]] | None = None,
    ylabel: str = "error rate (%)",
    title: str = "",
) -> Path:
    """Bars for each label, one colour per series; ``errors[series][i]`` is an optional
    (lo, hi) interval drawn as an error bar around ``series[series][i]``."""
    n = max(1, len(series))
    x = np.arange(len(labels))
    width = 0.8 / n
    # About a quarter inch per bar, capped: 7 locales x 8 systems must stay readable on a screen.
    fig, ax = plt.subplots(figsize=(min(20.0, max(6.0, 0.25 * len(labels) * n + 3)), 4.5))
    for k, (name, values) in enumerate(series.items()):
        vals = np.asarray(values, dtype=float)
        yerr = None
        ivs = (errors or {}).get(name)
        if ivs is not None and any(iv is not None for iv in ivs):
            lo = [v - iv[0] if iv else 0.0 for v, iv in zip(vals, ivs)]
            hi = [iv[1] - v if iv else 0.0 for v, iv in zip(vals, ivs)]
            yerr = np.clip(np.array([lo, hi]), 0.0, None)
        ax.bar(x + (k - (n - 1) / 2) * width, vals, width, label=name, yerr=yerr, capsize=3)
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.set_ylim(top=ax.get_ylim()[1] * 1.15)  # headroom for the legend
    ax.legend(fontsize="small", ncol=min(4, n), loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out_png)


def plot_locale_wer(report, out_png: str | Path) -> Path:
    """Per-locale headline error rate of a :class:`ScoreReport` (with CI error bars when
    bootstrapped), next to the baseline's when the report has one."""
    rows = report.rows()
    labels = [r.label for r in rows]
    series = {report.name: [r.rate for r in rows]}
    errors = {report.name: [(r.ci.lo, r.ci.hi) if r.ci else None for r in rows]}
    if report.baseline is not None:
        series = {report.baseline: [r.comparison.baseline for r in rows], **series}
    return grouped_bars(labels, series, out_png, errors=errors,
                        ylabel="WER / CER (%)", title=f"{report.name} ({report.normaliser})")


def plot_wer_vs_latency(rows: Sequence[Mapping], out_png: str | Path) -> Path:
    """Streaming trade-off: one line per (locale, system) through its operating points.

    ``rows``: mappings with ``locale``, ``system`` (or ``chunk``: a chunk-size label),
    ``latency_ms`` and ``wer``; points of one line are joined in latency order.
    """
    lines: dict[str, list[tuple[float, float, str]]] = {}
    for r in rows:
        system = str(r.get("system", r.get("chunk", "")))
        key = f"{r['locale']} / {system}" if system else str(r["locale"])
        lines.setdefault(key, []).append((float(r["latency_ms"]), float(r["wer"]), str(r.get("chunk", ""))))
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for key, pts in sorted(lines.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=key)
        for lat, wer, chunk in pts:
            if chunk:
                ax.annotate(chunk, (lat, wer), textcoords="offset points", xytext=(3, 3), fontsize=7)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("WER (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out_png)
