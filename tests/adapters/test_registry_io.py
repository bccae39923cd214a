"""Registry rules, config validation, locale fallback, CLI and S2-LoRA rank report."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from asr_adapt import routing
from asr_adapt.adapters import (
    ADAPTERS,
    AdapterError,
    add_locale,
    attach_adapters,
    build_config,
    is_adapter_param,
    load_adapters,
    model_fingerprint,
    register_adapter,
    resolve_locale,
    save_adapters,
)
from asr_adapt.adapters.registry import unregister_adapter
from asr_adapt.adapters.report import rank_distribution, rank_table, write_rank_report
from tests.adapters.backbones import BACKBONES

WHISPER = BACKBONES[0]


def _spec(**changes):
    return dataclasses.replace(ADAPTERS.get("lora"), **changes)


def test_registry_rejects_duplicate_names_and_overlapping_prefixes():
    with pytest.raises(ValueError, match="already registered"):
        register_adapter(_spec(name="lora", param_prefix="zz_", bank_attr="zz_b"))
    for prefix in ("lora_", "lora_x", "lor"):
        with pytest.raises(ValueError, match="overlaps"):
            register_adapter(_spec(name="other", param_prefix=prefix, bank_attr=prefix + "b"))
    spec = register_adapter(_spec(name="tmp_ok", param_prefix="tmpok_", bank_attr="tmpok_bank"))
    try:
        assert is_adapter_param("a.tmpok_bank.el.A") and "tmp_ok" in ADAPTERS
    finally:
        unregister_adapter(spec.name)
    assert "tmp_ok" not in ADAPTERS


def test_is_adapter_param_uses_prefix_components_not_substrings():
    assert is_adapter_param("model.encoder.layers.0.lda_adapters.el.down.weight")
    assert is_adapter_param("s2lora_shared.64x64.A")
    assert not is_adapter_param("model.adapter_proj.weight")
    assert not is_adapter_param("model.encoder.my_lora_thing.weight")


def test_unknown_type_lists_known_and_config_validation():
    with pytest.raises(KeyError, match="known: lda, lora, s2lora"):
        build_config("prefix_tuning", {})
    with pytest.raises(ValueError, match="valid"):
        build_config("lora", {"rnak": 4})
    with pytest.raises(ValueError, match="rank"):
        build_config("s2lora", {"rank": 0})
    cfg = build_config("s2lora", {"rank": 8, "groups": ["encoder.attn"]})
    assert cfg.rank == 8 and cfg.groups == ("encoder.attn",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.rank = 4


def test_resolve_locale_fallback_and_single_warning(caplog):
    from asr_adapt.adapters import locales

    locales._resolve.cache_clear()  # the warn-once memory is per process: start from none, whatever ran before
    assert resolve_locale("el-GR", ["el-GR", "el"]) == "el-GR"
    assert resolve_locale("el-GR", ["el"]) == "el"
    assert resolve_locale("el_gr", ["el-GR"]) == "el-GR"
    assert resolve_locale(None, ["el"]) is None
    with caplog.at_level(logging.WARNING):
        assert resolve_locale("qq-ZZ", ["el", "ar"]) is None
        assert resolve_locale("qq-ZZ", ["el", "ar"]) is None
    assert sum("qq-ZZ" in r.message for r in caplog.records) == 1


def test_bad_group_and_locale_errors():
    model = WHISPER.build(0)
    points = WHISPER.points(model)
    with pytest.raises(ValueError, match="this backbone has"):
        attach_adapters(model, points, "lora", {}, ["el"], groups=["nope"])
    with pytest.raises(ValueError, match="invalid adapter locale"):
        attach_adapters(model, points, "lora", {}, ["el.GR"])


def test_patterns_select_targets_and_add_locale_is_identity():
    model = WHISPER.build(0)
    attach_adapters(model, WHISPER.points(model), "lora", {"rank": 2, "patterns": [r"encoder\..*q_proj$"]}, ["el"])
    names = [n for n, _ in model.named_parameters() if is_adapter_param(n)]
    assert names and all("encoder" in n and "q_proj" in n for n in names)
    kw = WHISPER.inputs(2, 0)
    with torch.no_grad():
        base = WHISPER.run(model, kw)
        add_locale(model, "sw")
        with routing.use(["sw", "sw"]):
            assert torch.equal(WHISPER.run(model, kw), base)
    with pytest.raises(AdapterError, match="already"):
        add_locale(model, "sw")


def test_lda_auto_bottleneck_hits_target_fraction(caplog):
    model = WHISPER.build(0)
    with caplog.at_level(logging.INFO):
        attach_adapters(model, WHISPER.points(model), "lda", {"target_fraction": 0.05}, ["el"], groups=["encoder"])
    from asr_adapt.adapters import adapter_info

    (row,) = adapter_info(model)
    assert abs(row["percent_of_base"] - 5.0) < 0.5
    assert any("parameters per locale" in r.message for r in caplog.records)


def test_lda_bottleneck_scale_moves_width_keeps_budget_and_round_trips(tmp_path):
    """{decoder: 3} triples the decoder's width at the same total; save/load rebuilds the widths."""
    from asr_adapt.adapters import adapter_info

    conf = {"target_fraction": 0.05, "bottleneck_scale": {r"decoder\.": 3.0}}
    model = WHISPER.build(0)
    attach_adapters(model, WHISPER.points(model), "lda", conf, ["el"], groups=["encoder", "decoder"])
    widths = {n.split(".lda_adapters.")[0]: p.shape[0] for n, p in model.named_parameters()
              if n.endswith(".lda_adapters.el.down.weight")}
    enc = {w for n, w in widths.items() if ".encoder." in n}
    dec = {w for n, w in widths.items() if ".decoder." in n}
    assert len(enc) == len(dec) == 1 and abs(dec.pop() / enc.pop() - 3.0) < 0.5
    (row,) = adapter_info(model)
    assert abs(row["percent_of_base"] - 5.0) < 0.5
    kw = WHISPER.inputs(2, 0)
    with torch.no_grad(), routing.use(["el", "el"]):
        for n, p in model.named_parameters():
            if ".lda_adapters." in n:
                p.normal_(0, 0.1)  # away from the identity, so the round trip is a real check
        want = WHISPER.run(model, kw)
    save_adapters(model, tmp_path / "ad", model_fingerprint(model))
    fresh = WHISPER.build(0)
    load_adapters(fresh, tmp_path / "ad", model_fingerprint(fresh))
    with torch.no_grad(), routing.use(["el", "el"]):
        assert torch.equal(WHISPER.run(fresh, kw), want)
    with pytest.raises(ValueError, match="bottleneck_scale"):
        build_config("lda", {"bottleneck_scale": {"decoder": 0.0}})


def test_cli_info_and_rank_report(tmp_path, capsys):
    from asr_adapt.cli.main import main

    model = WHISPER.build(0)
    attach_adapters(model, WHISPER.points(model), "s2lora", {"rank": 4}, ["el", "ar-EG"], groups=["encoder.attn"])
    with torch.no_grad():  # el: 3 used ranks in every matrix, ar-EG: none
        for n, p in model.named_parameters():
            if n.endswith("s2lora_lambdas.el"):
                p.copy_(torch.tensor([0.5, 0.0, -0.2, 1e-5]) + torch.tensor([0, 0, 0, 0.1]))
    save_adapters(model, tmp_path / "ad", model_fingerprint(model))
    assert main(["adapters", "info", str(tmp_path / "ad")]) == 0
    out = capsys.readouterr().out
    assert "ar-EG" in out and "(shared)" in out and "s2lora" in out
    rows = rank_distribution(tmp_path / "ad")
    assert {r["nonzero"] for r in rows if r["locale"] == "el"} == {3}
    assert {r["nonzero"] for r in rows if r["locale"] == "ar-EG"} == {0}
    assert len(rows) == 2 * 8 and {r["layer"] for r in rows} == {0, 1}
    assert "| locale | kind |" in rank_table(rows)
    paths = write_rank_report(tmp_path / "ad", tmp_path / "rep")
    assert (tmp_path / "rep" / "ranks-el.png").stat().st_size > 1000 and len(paths) == 4


def test_save_locales_separately_then_load_subset(tmp_path):
    model = WHISPER.build(0)
    attach_adapters(model, WHISPER.points(model), "s2lora", {"rank": 4}, ["el", "sw"])
    fp = model_fingerprint(model)
    save_adapters(model, tmp_path, fp, locales=["el"], extra_meta={"ckpt": "a"})
    save_adapters(model, tmp_path, fp, locales=["sw"], extra_meta={"ckpt": "b"})
    with torch.no_grad():
        model.s2lora_shared["64x64"].A.add_(1.0)  # shared pair changed: locales would mix weights
    with pytest.raises(AdapterError, match="shared"):
        save_adapters(model, tmp_path, fp, locales=["sw"])
    fresh = WHISPER.build(0)
    assert load_adapters(fresh, tmp_path, fp, WHISPER.points(fresh), locales=["sw"]) == ["sw"]
    with pytest.raises(AdapterError, match="has no adapters"):
        load_adapters(fresh, tmp_path, fp, WHISPER.points(fresh), locales=["de"])
