"""Model resolver: local dirs, cache, hub fallback, packaged weights, installation, locking.

No network: the hub client, pip and the converter are replaced by fakes; fake packages
are created on ``sys.path`` in a temp dir.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from asr_adapt.models import resolver
from asr_adapt.models.resolver import ModelNotFoundError, PackagedSource, resolve_model
from asr_adapt.registry import Registry


def _fake_model_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"x")
    return path


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def fake_packages(tmp_path, monkeypatch):
    """Registers ``tiny-test`` backed by two importable packages with data/ folders,
    and replaces the converter by one that records its calls."""
    site = tmp_path / "site"
    for i in (1, 2):
        (site / f"fakepkg_tiny_{i}" / "data").mkdir(parents=True)
        (site / f"fakepkg_tiny_{i}" / "__init__.py").write_text("")
        (site / f"fakepkg_tiny_{i}" / "data" / f"model.bin.part{i}").write_bytes(b"p")
    reg: Registry[PackagedSource] = Registry("packaged model")
    reg.register("tiny-test", PackagedSource(packages=(("fakepkg_tiny_1", "fake-tiny-1"), ("fakepkg_tiny_2", "fake-tiny-2"))))
    monkeypatch.setattr(resolver, "PACKAGED", reg)
    calls: list[tuple[list[Path], Path]] = []

    def fake_import(dirs, out, force=False, verify=True):
        calls.append((list(dirs), Path(out)))
        time.sleep(0.2)  # widen the race window for the locking test
        return _fake_model_dir(Path(out))

    monkeypatch.setattr(resolver, "import_ct2", fake_import)
    return site, calls


def test_local_directory_is_used_as_is(tmp_path):
    d = _fake_model_dir(tmp_path / "m")
    assert resolve_model(d) == d
    assert resolve_model(str(d)) == d
    (tmp_path / "ct2").mkdir()
    with pytest.raises(ModelNotFoundError, match="import-ct2"):
        resolve_model(tmp_path / "ct2")


def test_cache_hit_needs_no_source(tmp_path, monkeypatch):
    cached = _fake_model_dir(tmp_path / "models" / "whisper-base")
    monkeypatch.setattr(resolver, "_try_hub", lambda *a: pytest.fail("hub must not be tried"))
    assert resolve_model("openai/whisper-base", cache_dir=tmp_path) == cached
    monkeypatch.setenv("ASR_ADAPT_CACHE", str(tmp_path))
    assert resolve_model("whisper-base") == cached


def test_unknown_name_offline_says_what_to_do(tmp_path, offline):
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model("someorg/unknown-model", cache_dir=tmp_path)
    msg = str(e.value)
    assert "HF_HUB_OFFLINE" in msg and "import-ct2" in msg and "whisper-base" in msg


def test_hub_skipped_offline_and_timeout_bounded(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("hub contacted although HF_HUB_OFFLINE=1")

    fake_hub = types.SimpleNamespace(HfApi=boom, snapshot_download=boom)
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake_hub)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    errors: list[str] = []
    assert resolver._try_hub("openai/whisper-base", errors) is None
    assert "HF_HUB_OFFLINE" in errors[0]

    # Online but the hub never answers: give up after the probe timeout, do not hang.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    hang = types.SimpleNamespace(model_info=lambda *a, **k: time.sleep(30))
    fake_hub.HfApi = lambda: hang
    monkeypatch.setattr(resolver, "HUB_PROBE_TIMEOUT_S", 0.1)
    t0 = time.monotonic()
    errors = []
    assert resolver._try_hub("openai/whisper-base", errors) is None
    assert time.monotonic() - t0 < 10 and "TimeoutError" in errors[0]


def test_hub_success_returns_snapshot(tmp_path, monkeypatch):
    snap = _fake_model_dir(tmp_path / "snap")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    fake_hub = types.SimpleNamespace(
        HfApi=lambda: types.SimpleNamespace(model_info=lambda *a, **k: None),
        snapshot_download=lambda repo, **k: str(snap) if repo == "openai/whisper-base" else None,
    )
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake_hub)
    assert resolve_model("whisper-base", cache_dir=tmp_path / "cache") == snap


def test_packaged_import_once_into_cache(tmp_path, monkeypatch, offline, fake_packages):
    site, calls = fake_packages
    monkeypatch.syspath_prepend(str(site))
    out = resolve_model("tiny-test", cache_dir=tmp_path / "cache")
    assert out == tmp_path / "cache" / "models" / "tiny-test"
    assert [d.name for d in calls[0][0]] == ["data", "data"]
    assert {d.parent.name for d in calls[0][0]} == {"fakepkg_tiny_1", "fakepkg_tiny_2"}
    assert resolve_model("tiny-test", cache_dir=tmp_path / "cache") == out
    assert len(calls) == 1


def test_concurrent_resolves_import_once(tmp_path, monkeypatch, offline, fake_packages):
    site, calls = fake_packages
    monkeypatch.syspath_prepend(str(site))
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(resolve_model("tiny-test", cache_dir=tmp_path)))
               for _ in range(3)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(results)) == 1 and len(results) == 3


def test_missing_packages_are_a_clear_error_and_nothing_is_installed(tmp_path, monkeypatch, offline, fake_packages):
    """Resolving a name never runs pip: it says which packages to install."""
    ran = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: ran.append(a))
    with pytest.raises(ModelNotFoundError, match=r"pip install fake-tiny-1 fake-tiny-2") as e:
        resolve_model("tiny-test", cache_dir=tmp_path)
    assert "pass a local model directory" in str(e.value)
    assert ran == [] and not (tmp_path / "models" / "tiny-test").exists()
