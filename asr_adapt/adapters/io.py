"""Adapter-only files: per-locale safetensors, shared tensors apart, one JSON description.

Layout of an adapter directory::

    adapter_config.json            base fingerprint and size, per type: config, targets,
                                   per-locale parameter counts, % of base, provenance
    <type>.<locale>.safetensors    one locale's tensors (model parameter names as keys)
    <type>.shared.safetensors      tensors shared by all locales (S2-LoRA A, B), if any

Locales can be saved into an existing directory one at a time (checkpoint-wise merging
takes each locale from a different checkpoint); the base and, for shared tensors, their
digest must agree, otherwise locales would silently be combined with the wrong weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from asr_adapt.adapters.inject import (
    adapter_state_dict,
    add_locale,
    attach_targets,
    attached_sets,
    count_base_params,
    load_adapter_state_dict,
)
from asr_adapt.adapters.registry import AdapterError, build_config, config_to_dict, owner_of
from asr_adapt.fileio import atomic_write, atomic_write_json
from asr_adapt.models.base import InjectionPoints

log = logging.getLogger(__name__)

CONFIG_NAME = "adapter_config.json"
FORMAT = "asr-adapt-adapters"
VERSION = 1


class AdapterMismatchError(AdapterError):
    """Adapters do not fit this model (other base weights, other targets or config)."""


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:16]


def read_meta(path: str | Path) -> dict[str, Any]:
    """The parsed ``adapter_config.json`` of an adapter directory."""
    f = Path(path) / CONFIG_NAME
    if not f.is_file():
        raise FileNotFoundError(f"{path} is not an adapter directory (no {CONFIG_NAME})")
    meta = json.loads(f.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise AdapterError(f"{f} is not an {FORMAT} file")
    return meta


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor], header: dict[str, str]) -> None:
    data = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    atomic_write(path, st_save(data, metadata=header))


def save_adapters(
    model: nn.Module,
    out_dir: str | Path,
    base_fingerprint: str,
    locales: Iterable[str] | None = None,
    extra_meta: dict | None = None,
) -> Path:
    """Write the adapters of ``locales`` (default: all) of every attached type to ``out_dir``.

    extra_meta: provenance stored with each saved locale (checkpoint, step, dev WER...).
    Returns the path of ``adapter_config.json``.
    """
    out = Path(out_dir)
    sets = attached_sets(model)
    if not sets:
        raise AdapterError("no adapters are attached to this model; nothing to save")
    meta = read_meta(out) if (out / CONFIG_NAME).is_file() else None
    base_params = count_base_params(model)
    if meta is None:
        meta = {"format": FORMAT, "version": VERSION, "base_fingerprint": base_fingerprint,
                "base_params": base_params, "sets": {}}
    elif meta["base_fingerprint"] != base_fingerprint:
        raise AdapterMismatchError(
            f"{out} holds adapters for base {meta['base_fingerprint']}, this model is {base_fingerprint}; save to a new directory"
        )
    want = None if locales is None else list(locales)
    for name, aset in sets.items():
        locs = [loc for loc in aset.locales if want is None or loc in want]
        state = adapter_state_dict(model, aset.locales)
        by_loc: dict[str | None, dict[str, torch.Tensor]] = {}
        for k, v in state.items():
            spec, loc = owner_of(k)
            if spec.name == name:
                by_loc.setdefault(loc, {})[k] = v
        entry = meta["sets"].get(name)
        conf = config_to_dict(aset.config)
        if entry is None:
            entry = meta["sets"][name] = {"config": conf, "targets": aset.targets, "batch_dims": aset.batch_dims,
                                          "locales": {}, "shared": None}
        elif entry["config"] != conf or entry["targets"] != aset.targets:
            raise AdapterMismatchError(f"{out} holds {name} adapters with another config or targets; save to a new directory")
        header = {"type": name, "base_fingerprint": base_fingerprint, "config": json.dumps(conf)}
        shared = by_loc.get(None, {})
        shared_digest = _digest(shared) if shared else None
        if shared:
            if entry["shared"] and entry["shared"]["digest"] != shared_digest and set(entry["locales"]) - set(locs):
                raise AdapterMismatchError(
                    f"the shared {name} tensors differ from those saved in {out} with locales "
                    f"{sorted(set(entry['locales']) - set(locs))}; save to a new directory"
                )
            fname = f"{name}.shared.safetensors"
            _write_tensors(out / fname, shared, {**header, "locale": "shared"})
            entry["shared"] = {"file": fname, "params": sum(v.numel() for v in shared.values()), "digest": shared_digest}
        for loc in locs:
            tensors = by_loc.get(loc, {})
            fname = f"{name}.{loc}.safetensors"
            _write_tensors(out / fname, tensors, {**header, "locale": loc})
            n = sum(v.numel() for v in tensors.values())
            entry["locales"][loc] = {
                "file": fname, "params": n, "percent_of_base": round(100.0 * n / max(1, base_params), 5),
                "shared_digest": shared_digest, "provenance": dict(extra_meta or {}),
            }
    atomic_write_json(out / CONFIG_NAME, meta)
    return out / CONFIG_NAME


def load_adapters(
    model: nn.Module,
    path: str | Path,
    base_fingerprint: str,
    points: InjectionPoints | None = None,
    locales: Iterable[str] | None = None,
) -> list[str]:
    """Load saved adapters onto ``model`` (attaching them first if needed).

    base_fingerprint: the model's base fingerprint (:func:`model_fingerprint`). Returns the
    locales loaded. Raises :class:`AdapterMismatchError` for another base, other targets
    or config; ``points`` is accepted for symmetry with attaching (targets are saved by name).
    """
    path = Path(path)
    meta = read_meta(path)
    if meta["base_fingerprint"] != base_fingerprint:
        raise AdapterMismatchError(
            f"adapters in {path} were trained on base model {meta['base_fingerprint']} but this model is "
            f"{base_fingerprint}; load them onto the base they were trained on (same weights), or retrain them"
        )
    want = None if locales is None else list(locales)
    available = sorted({loc for e in meta["sets"].values() for loc in e["locales"]})
    if want is not None and set(want) - set(available):
        raise AdapterError(f"{path} has no adapters for {sorted(set(want) - set(available))}; it has {available}")
    loaded: set[str] = set()
    for name, entry in meta["sets"].items():
        locs = [loc for loc in entry["locales"] if want is None or loc in want]
        config = build_config(name, entry["config"])
        aset = attached_sets(model).get(name)
        if aset is None:
            aset = attach_targets(model, name, config, entry["targets"], entry.get("batch_dims", {}), [])
        elif config_to_dict(aset.config) != entry["config"] or aset.targets != entry["targets"]:
            raise AdapterMismatchError(
                f"the model's {name} adapters have another config or targets than {path}; load into a fresh model"
            )
        state: dict[str, torch.Tensor] = {}
        if entry.get("shared"):
            state.update(st_load((path / entry["shared"]["file"]).read_bytes()))
        for loc in locs:
            rec = entry["locales"][loc]
            if entry.get("shared") and rec.get("shared_digest") != entry["shared"]["digest"]:
                raise AdapterMismatchError(
                    f"{name} locale {loc!r} in {path} was saved with other shared tensors; re-save it with the shared set"
                )
            if loc not in aset.locales:
                add_locale(model, loc, name)
            state.update(st_load((path / rec["file"]).read_bytes()))
            loaded.add(loc)
        # A NaN or inf adapter weight (a diverged run) would turn that locale's output into
        # NaN; refuse it here, by name, rather than serve it.
        bad = sorted(k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all())
        if bad:
            raise AdapterError(f"{path}: {name} adapters hold non-finite weights in {bad[:3]}"
                               f"{' ...' if len(bad) > 3 else ''}; retrain or pick another checkpoint")
        load_adapter_state_dict(model, state, strict=True)
    return sorted(loaded)


def decode_hints(path: str | Path) -> dict:
    """Decoding settings the adapters in ``path`` were trained for (e.g. Whisper's encoder
    ``min_window_s``), recorded at save time under each locale's ``provenance["decode"]``.

    Adapters learn the context they are trained at, so a decoder should use these for the
    rows the adapters serve, and its own defaults for every other row.
    """
    hints: dict = {}
    for entry in read_meta(Path(path))["sets"].values():
        for loc in entry["locales"].values():
            hints.update((loc.get("provenance") or {}).get("decode") or {})
    return hints
