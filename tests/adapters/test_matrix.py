"""Every registered adapter type through every check, on every test backbone."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from asr_adapt import routing
from asr_adapt.adapters import (
    ADAPTERS,
    AdapterError,
    AdapterMismatchError,
    adapter_info,
    adapter_state_dict,
    attach_adapters,
    freeze_base,
    is_adapter_param,
    load_adapters,
    merge_locale,
    model_fingerprint,
    regularization_loss,
    save_adapters,
    unmerge,
)
from tests.adapters.backbones import BACKBONES

# Small configs so the matrix stays fast; a new type without an entry runs with its defaults.
CONFIGS = {"lda": {"bottleneck": 8}, "lora": {"rank": 4}, "s2lora": {"rank": 4}}
LOCALES = ["el", "ar-EG", "sw"]
TYPES = ADAPTERS.names()


@pytest.fixture(params=BACKBONES, ids=lambda b: b.name)
def backbone(request):
    return request.param


@pytest.fixture(params=TYPES)
def adapter(request):
    return request.param


def _attach(bb, adapter, seed=0):
    model = bb.build(seed)
    attach_adapters(model, bb.points(model), adapter, CONFIGS.get(adapter, {}), LOCALES, batch_dims=bb.batch_dims)
    return model


def _perturb(model, seed=1):
    """Move every adapter away from the identity so outputs depend on the adapters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if is_adapter_param(n):
                p.add_(0.3 * torch.randn(p.shape, generator=g))


def _of_locale(name: str, locale: str) -> bool:
    """An adapter parameter of ``locale`` (``...lora_adapters.sw.A``, ``...s2lora_lambdas.sw``)."""
    return is_adapter_param(name) and (f".{locale}." in name or name.endswith(f".{locale}"))


def _out(bb, model, kw, locales=None):
    with torch.no_grad():
        if locales is None:
            return bb.run(model, kw)
        with routing.use(locales):
            return bb.run(model, kw)


def test_identity_at_start(backbone, adapter):
    kw = backbone.inputs(3, 0)
    base = _out(backbone, backbone.build(0), kw)
    model = _attach(backbone, adapter)
    assert (_out(backbone, model, kw, ["el", "ar-EG", "sw"]) - base).abs().max() < 1e-6


def test_adapters_do_nothing_without_routing(backbone, adapter):
    kw = backbone.inputs(2, 0)
    base = _out(backbone, backbone.build(0), kw)
    model = _attach(backbone, adapter)
    _perturb(model)
    assert torch.equal(_out(backbone, model, kw), base)
    assert not torch.allclose(_out(backbone, model, kw, ["el", "el"]), base, atol=1e-4)


def test_only_adapters_train_and_get_grads(backbone, adapter):
    model = _attach(backbone, adapter)
    n_train, n_total = freeze_base(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(is_adapter_param(n) for n in trainable)
    assert n_train == sum(p.numel() for n, p in model.named_parameters() if n in trainable)
    assert n_total == sum(p.numel() for p in model.parameters())
    model.train()
    with routing.use(["el", "ar-EG"]):
        out = backbone.run(model, backbone.inputs(2, 0))
    (out.square().mean() + regularization_loss(model)).backward()
    assert all(p.grad is None for n, p in model.named_parameters() if not is_adapter_param(n))

    def grad_norm(locale):
        return sum(p.grad.abs().sum().item() for n, p in model.named_parameters()
                   if f".{locale}." in n + "." and p.grad is not None)

    assert grad_norm("el") > 0 and grad_norm("ar-EG") > 0
    assert grad_norm("sw") == 0  # no row routed to sw: its adapter must not learn


def test_save_load_roundtrip_is_exact(backbone, adapter, tmp_path):
    model = _attach(backbone, adapter)
    freeze_base(model)
    _perturb(model)
    fp = model_fingerprint(model)
    save_adapters(model, tmp_path, fp, extra_meta={"step": 7})
    files = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert f"{adapter}.el.safetensors" in files
    saved = {}
    for f in tmp_path.glob("*.safetensors"):
        saved.update(load_file(f))
    assert saved and all(is_adapter_param(k) for k in saved)
    assert set(saved) == {n for n, p in model.named_parameters() if p.requires_grad}
    meta = json.loads((tmp_path / "adapter_config.json").read_text())
    assert meta["sets"][adapter]["locales"]["el"]["provenance"] == {"step": 7}
    assert [r["params"] for r in adapter_info(tmp_path) if r["locale"] == "el"] == [
        sum(v.numel() for k, v in adapter_state_dict(model, ["el"]).items() if ".el." in k + ".")]

    fresh = backbone.build(0)
    assert model_fingerprint(fresh) == fp
    assert load_adapters(fresh, tmp_path, fp, backbone.points(fresh)) == sorted(LOCALES)
    kw = backbone.inputs(3, 2)
    locs = ["el", "sw", "ar-EG"]
    assert torch.equal(_out(backbone, fresh, kw, locs), _out(backbone, model, kw, locs))


def test_load_onto_other_base_fails(backbone, adapter, tmp_path):
    model = _attach(backbone, adapter)
    save_adapters(model, tmp_path, model_fingerprint(model))
    other = backbone.build(123)
    with pytest.raises(AdapterMismatchError) as e:
        load_adapters(other, tmp_path, model_fingerprint(other), backbone.points(other))
    assert "\n" not in str(e.value) and "load them onto the base" in str(e.value)


def test_mixed_batch_routing_equals_single_locale_runs(backbone, adapter):
    model = _attach(backbone, adapter)
    _perturb(model)
    kw = backbone.inputs(4, 3)
    locs = ["el", "ar-EG", "el", "sw"]
    mixed = _out(backbone, model, kw, locs)
    for i, loc in enumerate(locs):
        alone = _out(backbone, model, kw, [loc] * 4)
        assert torch.allclose(mixed[i], alone[i], atol=1e-5), (i, loc)


def test_updates_through_data_are_seen_by_the_next_call(backbone, adapter):
    # A fused optimiser step or ``p.data`` arithmetic changes weights without bumping their
    # version counter; whatever the adapters derive from their weights must still follow.
    model = _attach(backbone, adapter)
    _perturb(model)
    kw = backbone.inputs(3, 7)
    locs = ["el", "sw", "el"]
    first = _out(backbone, model, kw, locs)
    assert torch.equal(_out(backbone, model, kw, locs), first)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if is_adapter_param(n):
                p.data.mul_(1.5)
    again = _out(backbone, model, kw, locs)
    assert not torch.allclose(again, first, atol=1e-4)
    with torch.enable_grad(), routing.use(locs):
        graded = backbone.run(model, kw).detach()
    assert torch.allclose(again, graded, atol=1e-6)
    assert torch.equal(_out(backbone, copy.deepcopy(model), kw, locs), again)


def test_one_locales_non_finite_weights_stay_in_its_rows(backbone, adapter):
    # Rows are independent: an adapter whose activations overflow breaks its own rows, never
    # another locale's rows or rows without an adapter (no inf * 0 across locales). LoRA's
    # up-projection B is left finite: all locales share one up-GEMM, and non-finite saved
    # weights are refused at load (next test).
    model = _attach(backbone, adapter)
    _perturb(model)
    kw = backbone.inputs(3, 8)
    clean = _out(backbone, model, kw, ["el", None, "ar-EG"])
    with torch.no_grad():
        for n, p in model.named_parameters():
            if _of_locale(n, "sw") and not n.endswith(".B"):
                p.fill_(float("inf"))
    out = _out(backbone, model, kw, ["el", None, "sw"])
    assert torch.isfinite(out[:2]).all() and torch.equal(out[:2], clean[:2])


def test_non_finite_saved_weights_are_refused_at_load(backbone, adapter, tmp_path):
    model = _attach(backbone, adapter)
    _perturb(model)
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if _of_locale(n, "sw")).view(-1)[0] = float("nan")
    save_adapters(model, tmp_path, model_fingerprint(model))
    fresh = backbone.build(0)
    with pytest.raises(AdapterError, match="non-finite weights"):
        load_adapters(fresh, tmp_path, model_fingerprint(fresh), backbone.points(fresh))


def test_rows_without_adapter_equal_base_and_language_fallback(backbone, adapter):
    kw = backbone.inputs(3, 4)
    base = _out(backbone, backbone.build(0), kw)
    model = _attach(backbone, adapter)
    _perturb(model)
    out = _out(backbone, model, kw, ["el-GR", "xx-YY", None])
    assert torch.equal(out[1:], base[1:])  # bit-identical: their adapter terms are exact zeros
    el = _out(backbone, model, kw, ["el", "el", "el"])
    assert torch.allclose(out[0], el[0], atol=1e-6)  # el-GR falls back to the el adapter
    assert not torch.allclose(out[0], base[0], atol=1e-4)


def test_merge_equals_routed_and_unmerge_restores(backbone, adapter):
    model = _attach(backbone, adapter)
    _perturb(model)
    kw = backbone.inputs(2, 5)
    if not ADAPTERS.get(adapter).mergeable:
        with pytest.raises(AdapterError, match="cannot be merged"):
            merge_locale(model, "el")
        return
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    routed = _out(backbone, model, kw, ["ar-EG", "ar-EG"])
    assert merge_locale(model, "ar-EG") == "ar-EG"
    with pytest.raises(AdapterError, match="already merged"):
        merge_locale(model, "el")
    merged = _out(backbone, model, kw)
    assert ((merged - routed).norm() / routed.norm()).item() < 1e-4
    merged_routed = _out(backbone, model, kw, ["ar-EG", "ar-EG"])  # hooks are off while merged
    assert torch.allclose(merged_routed, merged)
    with pytest.raises(AdapterError, match="unmerge"):
        _out(backbone, model, kw, ["el", "ar-EG"])
    assert unmerge(model) and not unmerge(model)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert torch.equal(_out(backbone, model, kw, ["ar-EG", "ar-EG"]), routed)


def test_training_reduces_loss(backbone, adapter):
    model = _attach(backbone, adapter)
    freeze_base(model)
    model.train()
    kw = backbone.inputs(4, 6)
    teacher = _attach(backbone, adapter)  # a reachable target: the same structure, other adapters
    _perturb(teacher, seed=5)
    locs = ["el", "el", "ar-EG", "ar-EG"]
    target = _out(backbone, teacher, kw, locs)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(20):
        with routing.use(locs):
            loss = (backbone.run(model, kw) - target).square().mean()
        opt.zero_grad()
        (loss + regularization_loss(model)).backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
