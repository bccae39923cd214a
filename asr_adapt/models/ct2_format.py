"""Reader and writer for the CTranslate2 ``model.bin`` format (binary version 6).

The layout (all integers little-endian)::

    uint32 binary_version                     (6)
    string spec_name                          e.g. "WhisperSpec"
    uint32 spec_revision
    uint32 n_variables
    n_variables x {
        string name                           e.g. "encoder/layer_0/ffn/linear_0/weight"
        uint8  rank, rank x uint32 dims
        uint8  dtype id                       (see DTYPES)
        uint32 n_bytes, n_bytes raw data      (C order)
    }
    uint32 n_aliases
    n_aliases x {string alias, string target}

A *string* is ``uint16 length (including the trailing NUL), UTF-8 bytes, NUL``.

The reader is used to import real CTranslate2 / faster-whisper checkpoints without the
ctranslate2 runtime; the writer exists so that tests (and round-trip checks) can produce a
genuine file from weights they built themselves.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from asr_adapt.fileio import atomic_open

BINARY_VERSION = 6

# CTranslate2's dtype ids, in its own order (index == id). bfloat16 has no numpy dtype:
# it is read as raw uint16 and widened to float32 by shifting into the high half.
DTYPES: tuple[str, ...] = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_NUMPY_DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "int8": np.dtype("i1"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<u2"),
}


class CT2FormatError(ValueError):
    """The file is not a CTranslate2 model this reader understands."""


@dataclass
class CT2Model:
    """The content of one ``model.bin``.

    variables: name -> array as stored (int8/float16 kept as they are; see
        :func:`dequantize` for float32 weights). bfloat16 arrays are already widened to float32.
    aliases: alias name -> target variable name (CTranslate2 stores each duplicate tensor
        once and aliases the others to it).
    """

    spec_name: str
    revision: int
    variables: dict[str, np.ndarray] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    version: int = BINARY_VERSION

    def get(self, name: str) -> np.ndarray:
        """A variable by name, following aliases (chains included)."""
        seen = set()
        while name in self.aliases and name not in self.variables:
            if name in seen:
                raise CT2FormatError(f"alias cycle at {name!r}")
            seen.add(name)
            name = self.aliases[name]
        try:
            return self.variables[name]
        except KeyError:
            raise KeyError(f"CTranslate2 variable {name!r} not found") from None

    def __contains__(self, name: object) -> bool:
        return name in self.variables or name in self.aliases

    def names(self) -> list[str]:
        """All variable and alias names."""
        return sorted(set(self.variables) | set(self.aliases))


# ----------------------------------------------------------------------------- reading


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise CT2FormatError(f"file truncated: wanted {n} bytes, got {len(data)}")
    return data


def _read_u(f: BinaryIO, fmt: str) -> int:
    return struct.unpack("<" + fmt, _read_exact(f, struct.calcsize(fmt)))[0]


def _read_string(f: BinaryIO) -> str:
    n = _read_u(f, "H")
    raw = _read_exact(f, n)
    if n == 0 or raw[-1] != 0:
        raise CT2FormatError("malformed string (missing NUL terminator)")
    return raw[:-1].decode("utf-8")


def read_ct2(source: str | os.PathLike | BinaryIO | Iterable[str | os.PathLike]) -> CT2Model:
    """Read a CTranslate2 ``model.bin``.

    ``source`` is a path, an open binary file, or a sequence of paths whose concatenation
    is the file (``model.bin.part1``, ``model.bin.part2``: the parts are streamed, never
    joined on disk).
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            return _read(f)
    if hasattr(source, "read"):
        return _read(source)  # type: ignore[arg-type]
    with _ConcatReader([Path(p) for p in source]) as f:  # type: ignore[union-attr]
        return _read(f)


def _read(f: BinaryIO) -> CT2Model:
    version = _read_u(f, "I")
    if version != BINARY_VERSION:
        # Versions < 6 have a different variable layout; refuse rather than misread.
        raise CT2FormatError(f"unsupported CTranslate2 binary version {version} (expected {BINARY_VERSION})")
    model = CT2Model(spec_name=_read_string(f), revision=_read_u(f, "I"), version=version)
    for _ in range(_read_u(f, "I")):
        name = _read_string(f)
        rank = _read_u(f, "B")
        shape = tuple(_read_u(f, "I") for _ in range(rank))
        type_id = _read_u(f, "B")
        if type_id >= len(DTYPES):
            raise CT2FormatError(f"{name}: unknown dtype id {type_id}")
        dtype = DTYPES[type_id]
        n_bytes = _read_u(f, "I")
        expected = int(np.prod(shape, dtype=np.int64)) * _NUMPY_DTYPES[dtype].itemsize
        if n_bytes != expected:
            raise CT2FormatError(f"{name}: {n_bytes} bytes for shape {shape} {dtype} (expected {expected})")
        arr = np.frombuffer(_read_exact(f, n_bytes), dtype=_NUMPY_DTYPES[dtype]).reshape(shape)
        if dtype == "bfloat16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        model.variables[name] = arr
    for _ in range(_read_u(f, "I")):
        alias = _read_string(f)
        model.aliases[alias] = _read_string(f)
    return model


class _ConcatReader(io.RawIOBase):
    """Reads several files one after the other as one stream."""

    def __init__(self, paths: list[Path]) -> None:
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"missing model part(s): {', '.join(missing)}")
        self._paths = list(paths)
        self._f: BinaryIO | None = None

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        chunks: list[bytes] = []
        while n < 0 or n > 0:
            if self._f is None:
                if not self._paths:
                    break
                self._f = open(self._paths.pop(0), "rb")
            chunk = self._f.read(n)
            if not chunk:
                self._f.close()
                self._f = None
                continue
            chunks.append(chunk)
            if n > 0:
                n -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        super().close()


# ------------------------------------------------------------------------ dequantising


def dequantize(model: CT2Model) -> dict[str, np.ndarray]:
    """float32 copies of every floating-point weight, with aliases resolved.

    An int8 weight ``W_q`` comes with ``<prefix>/weight_scale`` (one scale per output row,
    or a scalar): CTranslate2 quantises as ``W_q = round(W * scale)``, so ``W = W_q / scale``.
    float16/bfloat16 are widened. Integer variables without a scale (scalar flags such as
    ``encoder/num_heads``) are returned unchanged; ``weight_scale`` entries are consumed.
    """
    out: dict[str, np.ndarray] = {}
    for name in model.names():
        if name.endswith("/weight_scale"):
            continue
        arr = model.get(name)
        scale_name = name[: -len("weight")] + "weight_scale" if name.endswith("/weight") else None
        if scale_name and scale_name in model:
            scale = model.get(scale_name).astype(np.float32)
            w = arr.astype(np.float32)
            if scale.ndim == 1 and w.ndim >= 1:
                scale = scale.reshape((-1,) + (1,) * (w.ndim - 1))
            out[name] = w / scale
        elif arr.dtype.kind == "f":
            out[name] = arr.astype(np.float32, copy=False)
        else:
            out[name] = arr
    return out


# ----------------------------------------------------------------------------- writing


def _write_string(f: BinaryIO, s: str) -> None:
    raw = s.encode("utf-8") + b"\0"
    f.write(struct.pack("<H", len(raw)))
    f.write(raw)


def write_ct2(
    path: str | os.PathLike,
    variables: Mapping[str, np.ndarray],
    spec_name: str = "WhisperSpec",
    revision: int = 3,
    aliases: Mapping[str, str] | None = None,
) -> None:
    """Write a ``model.bin`` atomically.

    ``variables``: name -> numpy array of a supported dtype (float32, int8, int16, int32,
    float16; float64 is narrowed to float32). ``aliases``: alias -> existing variable name.
    """
    aliases = dict(aliases or {})
    for alias, target in aliases.items():
        if target not in variables:
            raise KeyError(f"alias {alias!r} points to unknown variable {target!r}")
    with atomic_open(path, "wb") as f:
        f.write(struct.pack("<I", BINARY_VERSION))
        _write_string(f, spec_name)
        f.write(struct.pack("<I", revision))
        f.write(struct.pack("<I", len(variables)))
        for name, value in variables.items():
            arr = np.asarray(value)
            if arr.dtype == np.float64:
                arr = arr.astype(np.float32)
            if arr.dtype.name not in DTYPES or arr.dtype.name == "bfloat16":
                raise TypeError(f"{name}: dtype {arr.dtype} cannot be written")
            # astype(order="C") rather than ascontiguousarray, which turns scalars into 1-d arrays.
            arr = arr.astype(_NUMPY_DTYPES[arr.dtype.name], order="C", copy=False)
            _write_string(f, name)
            f.write(struct.pack("<B", arr.ndim))
            for dim in arr.shape:
                f.write(struct.pack("<I", dim))
            f.write(struct.pack("<B", DTYPES.index(arr.dtype.name)))
            f.write(struct.pack("<I", arr.nbytes))
            f.write(arr.tobytes())
        f.write(struct.pack("<I", len(aliases)))
        for alias, target in aliases.items():
            _write_string(f, alias)
            _write_string(f, target)


def quantize_int8(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row int8 quantisation as CTranslate2 does it: ``(W_q (int8), scale (float32, rows))``."""
    w = np.asarray(weight, dtype=np.float32)
    amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    scale = np.where(amax > 0, 127.0 / np.maximum(amax, 1e-30), 1.0).astype(np.float32)
    q = np.clip(np.rint(w * scale.reshape((-1,) + (1,) * (w.ndim - 1))), -127, 127).astype(np.int8)
    return q, scale
