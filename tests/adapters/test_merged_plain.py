"""Merged means merged: a merged LoRA/S2-LoRA locale leaves plain linears (no hooks) that
compute what the routed adapter computed, convert to int8 like any other linear, and unmerge
back to the exact original weights, hooks and routing. Tiny random Whisper, CPU."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from torch import nn

from asr_adapt import routing
from asr_adapt.adapters import (
    AdapterError,
    adapter_state_dict,
    attach_adapters,
    attached_sets,
    is_adapter_param,
    load_adapters,
    merge_locale,
    model_fingerprint,
    save_adapters,
    unmerge,
)
from asr_adapt.models.whisper import (
    WhisperBackbone,
    load_whisper_tokenizer,
    packaged_tokenizer_dir,
    tiny_config,
)
from asr_adapt.models.whisper_compute import Int8Linear

LOCALES = ["el-GR", "de-DE", "ar-EG", "sw-KE"]
MERGEABLE = ["lora", "s2lora"]
QV = r"(q_proj|v_proj)$"


@pytest.fixture(scope="module")
def tokenizer():
    return load_whisper_tokenizer(packaged_tokenizer_dir())


def _model(tokenizer, adapter: str | None = None, conf: dict | None = None) -> WhisperBackbone:
    torch.manual_seed(0)
    model = WhisperBackbone.from_config(tiny_config(), tokenizer)
    if adapter is not None:
        attach_adapters(model, model.injection_points(), adapter, {"rank": 4, **(conf or {})}, LOCALES)
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():  # far from the identity, so adapted rows really differ
            for n, p in model.named_parameters():
                if is_adapter_param(n):
                    p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return model


def _feats(model: WhisperBackbone, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    return torch.randn(batch, model.config.num_mel_bins, 200, generator=g)


def _logits(model: WhisperBackbone, feats: torch.Tensor, route=None) -> torch.Tensor:
    """(B, V) first-step logits, through encoder and decoder, routed by ``route`` (None: not routed)."""
    with torch.no_grad(), routing.use(route) if route is not None else contextlib.nullcontext():
        enc = model.encode(feats)
        prompts = torch.tensor([model.prompt("en")] * feats.shape[0])
        return model.decoder_logits(prompts, enc, model.new_cache())


def _targets(model: nn.Module, adapter: str) -> list[str]:
    return attached_sets(model)[adapter].targets


def _hooks(model: nn.Module) -> dict[str, tuple[list, list]]:
    """Every module's forward hooks and forward pre-hooks, as (id, hook) lists."""
    return {n: (list(m._forward_hooks.items()), list(m._forward_pre_hooks.items())) for n, m in model.named_modules()}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("adapter", MERGEABLE)
def test_merged_linears_are_plain_and_unmerge_restores_everything(tokenizer, adapter):
    model = _model(tokenizer, adapter)  # every linear of every block
    feats = _feats(model)
    base = _logits(_model(tokenizer), feats)
    routed = _logits(model, feats, ["de-DE", "de-DE"])
    mixed = _logits(model, feats, ["el-GR", None])
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    hooks = _hooks(model)
    targets = _targets(model, adapter)
    assert all(hooks[t][0] for t in targets)  # unmerged: each adapted linear runs its bank's hook

    assert merge_locale(model, "de-DE") == "de-DE"
    for t in targets:
        m = model.get_submodule(t)
        assert type(m) is nn.Linear and not m._forward_hooks and not m._forward_pre_hooks, t
    merged = _logits(model, feats)
    assert _rel(merged, routed) < 1e-4 and _rel(merged, base) > 1e-2
    assert torch.equal(_logits(model, feats, ["de-DE", "de"]), merged)  # the merged locale may be routed
    for bad in (["el-GR", "de-DE"], ["de-DE", None]):
        with pytest.raises(AdapterError, match="unmerge"):
            _logits(model, feats, bad)

    assert unmerge(model) and not unmerge(model)
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())
    assert _hooks(model) == hooks  # the same hooks, in the same order, and no guard left
    assert torch.equal(_logits(model, feats, ["de-DE", "de-DE"]), routed)
    assert torch.equal(_logits(model, feats, ["el-GR", None]), mixed)


def test_unmerge_keeps_the_order_of_other_types_hooks(tokenizer):
    model = _model(tokenizer, "lora", {"patterns": [QV]})
    attach_adapters(model, model.injection_points(), "s2lora", {"rank": 4, "patterns": [QV]}, LOCALES)
    feats = _feats(model)
    route = ["ar-EG", "sw-KE"]
    both = _logits(model, feats, route)
    hooks = _hooks(model)
    merge_locale(model, "el-GR", adapter="lora")
    for t in _targets(model, "lora"):
        m = model.get_submodule(t)
        assert list(m._forward_hooks.values()) == [m.s2lora_lambdas.hook]  # only the unmerged type's
    unmerge(model, adapter="lora")
    assert _hooks(model) == hooks
    assert torch.equal(_logits(model, feats, route), both)


def test_a_copy_merges_and_unmerges_on_its_own(tokenizer):
    model = _model(tokenizer, "lora", {"patterns": [QV]})
    merge_locale(model, "el-GR")
    merged_hooks = _hooks(model)
    twin = copy.deepcopy(model)
    assert unmerge(twin)
    assert _hooks(model) == merged_hooks  # the original is still merged, hooks untouched
    assert all(model.get_submodule(t)._forward_hooks == {} for t in _targets(model, "lora"))
    assert all(twin.get_submodule(t)._forward_hooks for t in _targets(twin, "lora"))


@pytest.mark.parametrize("adapter", MERGEABLE)
def test_int8_after_merge_quantises_the_adapted_linears(tokenizer, adapter):
    model = _model(tokenizer, adapter, {"patterns": [QV]})
    feats = _feats(model)
    base = _logits(_model(tokenizer), feats)
    merge_locale(model, "el-GR")
    merged = _logits(model, feats)
    state = {k: v.clone() for k, v in adapter_state_dict(model).items()}

    assert model.set_compute_type("int8") == []  # nothing kept in float32 for adapters
    targets = _targets(model, adapter)
    assert all(isinstance(model.get_submodule(t), Int8Linear) for t in targets)
    saved = adapter_state_dict(model)  # the bank moved with its linear: same names, same tensors
    assert saved.keys() == state.keys() and all(torch.equal(saved[k], v) for k, v in state.items())
    q = _logits(model, feats)
    assert _rel(q, merged) < 5e-2 and _rel(q, base) > 5 * _rel(q, merged)  # int8 of the merged model
    with pytest.raises(AdapterError, match="unmerge"):
        _logits(model, feats, ["de-DE", "el-GR"])
    with pytest.raises(AdapterError, match="load the model again"):
        unmerge(model)
    assert attached_sets(model)[adapter].merged == "el-GR"  # refused unmerge left it merged


@pytest.mark.parametrize("adapter", MERGEABLE)
def test_merge_after_save_and_load_is_bit_exact(tokenizer, adapter, tmp_path):
    model = _model(tokenizer, adapter)
    fingerprint = model_fingerprint(model)
    save_adapters(model, tmp_path / "bundle", fingerprint)
    merge_locale(model, "ar-EG")
    save_adapters(model, tmp_path / "while_merged", fingerprint)  # adapters, not merged weights
    for bundle in ("bundle", "while_merged"):
        loaded = _model(tokenizer)
        load_adapters(loaded, tmp_path / bundle, fingerprint, loaded.injection_points())
        merge_locale(loaded, "ar")
        assert all(torch.equal(p, model.get_parameter(n)) for n, p in loaded.named_parameters()), bundle
