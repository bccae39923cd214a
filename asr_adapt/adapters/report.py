"""What an adapter set costs (:func:`adapter_info`) and how S2-LoRA spends its ranks.

The rank distribution counts, per adapted matrix and locale, the entries of lambda with
``|lambda| > eps``: the L1 penalty drives most to zero, and where the non-zero ranks sit
(which layers, attention vs feed-forward) is the paper's main analysis.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from torch import nn

from asr_adapt.adapters.inject import adapter_state_dict, attached_sets, count_base_params
from asr_adapt.adapters.io import read_meta
from asr_adapt.adapters.registry import is_adapter_param, owner_of
from asr_adapt.fileio import atomic_write

LAMBDA_ATTR = "s2lora_lambdas"


def adapter_info(path_or_model: str | Path | nn.Module) -> list[dict[str, Any]]:
    """Rows ``{locale, type, params, percent_of_base}``; shared tensors as locale ``"(shared)"``."""
    if isinstance(path_or_model, nn.Module):
        model = path_or_model
        base = count_base_params(model)
        counts: dict[tuple[str, str], int] = {}
        for name, p in model.named_parameters():
            if is_adapter_param(name):
                spec, loc = owner_of(name)
                key = (loc or "(shared)", spec.name)
                counts[key] = counts.get(key, 0) + p.numel()
        for aset in attached_sets(model).values():  # a locale could own no tensor of a type
            for loc in aset.locales:
                counts.setdefault((loc, aset.adapter), 0)
        items = counts.items()
    else:
        meta = read_meta(path_or_model)
        base = meta["base_params"]
        items = []
        for name, entry in meta["sets"].items():
            if entry.get("shared"):
                items.append((("(shared)", name), entry["shared"]["params"]))
            items += [((loc, name), rec["params"]) for loc, rec in entry["locales"].items()]
    return [
        {"locale": loc, "type": typ, "params": n, "percent_of_base": 100.0 * n / max(1, base)}
        for (loc, typ), n in sorted(items)
    ]


def format_info(rows: list[dict[str, Any]]) -> str:
    """Plain-text table of :func:`adapter_info` rows."""
    lines = [f"{'locale':<12} {'type':<8} {'params':>12} {'% of base':>10}"]
    lines += [f"{r['locale']:<12} {r['type']:<8} {r['params']:>12,} {r['percent_of_base']:>10.4f}" for r in rows]
    return "\n".join(lines)


def _lambdas(source: str | Path | nn.Module) -> dict[str, torch.Tensor]:
    if isinstance(source, nn.Module):
        return {k: v for k, v in adapter_state_dict(source).items() if f".{LAMBDA_ATTR}." in k}
    path = Path(source)
    entry = read_meta(path)["sets"].get("s2lora")
    if entry is None:
        raise ValueError(f"{path} holds no S2-LoRA adapters")
    out = {}
    for rec in entry["locales"].values():
        out.update(st_load((path / rec["file"]).read_bytes()))
    return out


def _layer_and_kind(matrix: str) -> tuple[int | None, str]:
    """``"model.encoder.layers.3.self_attn.q_proj"`` -> ``(3, "model.encoder.layers.N.self_attn.q_proj")``."""
    m = re.search(r"(^|\.)(\d+)(\.|$)", matrix)
    if m is None:
        return None, matrix
    return int(m.group(2)), matrix[: m.start(2)] + "N" + matrix[m.end(2):]


def rank_distribution(source: str | Path | nn.Module, eps: float = 1e-3) -> list[dict[str, Any]]:
    """Rows ``{locale, matrix, kind, layer, rank, nonzero}`` for every S2-LoRA lambda."""
    rows = []
    for name, lam in sorted(_lambdas(source).items()):
        matrix, _, locale = name.rpartition(f".{LAMBDA_ATTR}.")
        layer, kind = _layer_and_kind(matrix)
        rows.append({"locale": locale, "matrix": matrix, "kind": kind, "layer": layer, "rank": lam.numel(),
                     "nonzero": int((lam.detach().abs() > eps).sum())})
    return rows


def rank_table(rows: list[dict[str, Any]], fmt: str = "markdown") -> str:
    """The rank distribution as Markdown or CSV."""
    cols = ["locale", "kind", "layer", "rank", "nonzero"]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()
    if fmt != "markdown":
        raise ValueError(f"format must be 'markdown' or 'csv', got {fmt!r}")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join("" if r[c] is None else str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def rank_heatmap(rows: list[dict[str, Any]], out_png: str | Path, locale: str | None = None) -> Path:
    """Heat map of non-zero ranks: matrix kind (y) x layer (x), for one locale (default: first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        raise ValueError("no S2-LoRA lambdas to plot")
    locale = locale or rows[0]["locale"]
    sel = [r for r in rows if r["locale"] == locale]
    kinds = sorted({r["kind"] for r in sel})
    layers = sorted({r["layer"] for r in sel if r["layer"] is not None}) or [0]
    grid = torch.full((len(kinds), len(layers)), float("nan"))
    for r in sel:
        grid[kinds.index(r["kind"]), layers.index(r["layer"] if r["layer"] is not None else layers[0])] = r["nonzero"]
    label_w = 0.065 * max(len(k) for k in kinds)  # inches for the y tick labels
    fig, ax = plt.subplots(figsize=(2.5 + label_w + 0.5 * len(layers), 1.5 + 0.3 * len(kinds)))
    im = ax.imshow(grid.numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=max(r["rank"] for r in sel))
    ax.set_xticks(range(len(layers)), [str(x) for x in layers])
    ax.set_yticks(range(len(kinds)), kinds, fontsize=7)
    ax.set_xlabel("layer")
    ax.set_title(f"S2-LoRA non-zero ranks ({locale})")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    out_png = Path(out_png)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(out_png, buf.getvalue())
    return out_png


def write_rank_report(source, out_dir: str | Path, eps: float = 1e-3, locales: Iterable[str] | None = None) -> list[Path]:
    """Write ``ranks.md``, ``ranks.csv`` and ``ranks-<locale>.png`` into ``out_dir``."""
    out = Path(out_dir)
    rows = rank_distribution(source, eps)
    atomic_write(out / "ranks.md", rank_table(rows, "markdown"))
    atomic_write(out / "ranks.csv", rank_table(rows, "csv"))
    paths = [out / "ranks.md", out / "ranks.csv"]
    for loc in locales or sorted({r["locale"] for r in rows}):
        paths.append(rank_heatmap(rows, out / f"ranks-{loc}.png", loc))
    return paths
