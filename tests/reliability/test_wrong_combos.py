"""Case 5: wrong combinations. Adapters for another base model, a locale without adapter,
an unknown adapter type in a training config, an output directory that cannot be written."""

from __future__ import annotations

import logging
import os

import pytest
import soundfile as sf
import torch
import yaml

from asr_adapt.adapters import (
    attach_adapters,
    build_config,
    is_adapter_param,
    model_fingerprint,
    save_adapters,
)
from asr_adapt.cli.main import main
from asr_adapt.fileio import read_jsonl
from asr_adapt.models.whisper import (
    WhisperBackbone,
    load_whisper_tokenizer,
    packaged_tokenizer_dir,
    tiny_config,
)
from tests.reliability.helpers import FAST, tone
from tests.training.helpers import make_data


def _bundle(backbone, out, locales=("el-GR",)):
    attach_adapters(backbone, backbone.injection_points(), "lora", build_config("lora", {"rank": 2}), list(locales))
    torch.manual_seed(3)
    with torch.no_grad():  # non-identity adapters, so using them or not shows in the output
        for n, p in backbone.named_parameters():
            if is_adapter_param(n):
                p.add_(torch.randn_like(p))
    save_adapters(backbone, out, model_fingerprint(backbone))
    return out


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    d = tmp_path_factory.mktemp("combos") / "in"
    d.mkdir()
    for i in range(2):
        sf.write(d / f"u{i}.wav", tone(1.0, seed=i), 16000)
    return d


def _decode(audio, out, model, *extra):
    return main(["decode", str(audio), "-o", str(out), "--model", str(model), *FAST, *extra])


def test_adapters_on_another_base_model_is_a_one_line_error(audio, tiny_model, tmp_path, capsys):
    torch.manual_seed(7)
    other = WhisperBackbone.from_config(tiny_config(), load_whisper_tokenizer(packaged_tokenizer_dir()))
    bundle = _bundle(other, tmp_path / "other-bundle")
    capsys.readouterr()
    assert _decode(audio, tmp_path / "out", tiny_model, "--lang", "el-GR", "--adapters", str(bundle)) == 2
    stderr = capsys.readouterr().err
    err = [line for line in stderr.splitlines() if line.startswith("error")]
    assert len(err) == 1 and "Traceback" not in stderr
    assert "trained on base model" in err[0] and "load them onto the base they were trained on" in err[0]


def test_locale_without_adapter_falls_back_to_the_base_with_a_warning(audio, tiny_model, tmp_path, caplog):
    bundle = _bundle(WhisperBackbone.from_pretrained(str(tiny_model)), tmp_path / "bundle")
    assert _decode(audio, tmp_path / "base", tiny_model, "--lang", "sw-KE") == 0
    with caplog.at_level(logging.WARNING):
        assert _decode(audio, tmp_path / "sw", tiny_model, "--lang", "sw-KE", "--adapters", str(bundle)) == 0
    assert "no adapter for locale 'sw-KE'" in caplog.text and "use the base model" in caplog.text
    assert _decode(audio, tmp_path / "el", tiny_model, "--lang", "el-GR", "--adapters", str(bundle)) == 0

    def scores(d):
        return [(r["text"], r["avg_logprob"]) for r in sorted(read_jsonl(d / "hyp.jsonl"), key=lambda r: r["utt_id"])]

    assert scores(tmp_path / "sw") == scores(tmp_path / "base")  # the base model, exactly
    assert scores(tmp_path / "el") != scores(tmp_path / "base")  # (and adapters do change the output)


def test_unknown_adapter_type_in_config_lists_the_known_ones(tiny_model, tmp_path, capsys):
    data = make_data(tmp_path / "d", per_locale=1)
    cfg = {"trainer": {"accelerator": "cpu", "max_steps": 1, "logger": False},
           "model": {"class_path": "asr_adapt.training.module.WhisperAdaptationModule",
                     "init_args": {"model": str(tiny_model), "adapter": "loha", "locales": ["el-GR"]}},
           "data": {"train": [str(data)], "dev": [str(data)]}}
    conf = tmp_path / "conf.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    assert main(["train", "fit", "--config", str(conf), "--trainer.default_root_dir", str(tmp_path / "exp")]) == 2
    err = capsys.readouterr().err
    assert "error: invalid config" in err and "Traceback" not in err
    assert "unknown adapter type 'loha'; known: lda, lora, s2lora" in err
    assert not (tmp_path / "exp" / "checkpoints").exists()


def test_output_under_a_file_is_a_one_line_error(audio, tiny_model, tmp_path, capsys):
    blocker = tmp_path / "results.txt"
    blocker.write_text("a file where a directory is expected\n")
    capsys.readouterr()
    assert _decode(audio, blocker / "out", tiny_model, "--lang", "en") == 2
    stderr = capsys.readouterr().err
    err = [line for line in stderr.splitlines() if line.startswith("error")]
    assert len(err) == 1 and "Traceback" not in stderr and "Not a directory" in err[0]


def test_read_only_output_directory_is_a_one_line_error(audio, tiny_model, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        try:
            (ro / "probe").write_text("x")
            writable = True
            (ro / "probe").unlink()
        except PermissionError:
            writable = False
        if writable:
            pytest.skip("permissions do not stop this user (root); covered by test_output_under_a_file_is_a_one_line_error")
        capsys.readouterr()
        assert _decode(audio, ro / "out", tiny_model, "--lang", "en") == 2
        stderr = capsys.readouterr().err
        err = [line for line in stderr.splitlines() if line.startswith("error")]
        assert len(err) == 1 and "Traceback" not in stderr and "Permission denied" in err[0]
    finally:
        ro.chmod(0o700)
        assert os.access(ro, os.W_OK)
