"""Conformer blocks with chunk-wise attention masks, causal convolution and streaming state.

Written here rather than reusing ``torchaudio.models.conformer.ConformerLayer`` because
that layer only takes a key-padding mask (no per-chunk attention mask) and its depthwise
convolution pads symmetrically (it looks into the future) with BatchNorm; a streaming
first pass needs both a chunk mask and a causal convolution.

Block (macaron Conformer): ``x + FFN/2 -> x + MHSA(mask) -> x + Conv -> x + FFN/2 -> LN``.
Positions enter through rotary embeddings on queries and keys: attention then depends
only on relative offsets, and a key cached with its absolute rotation stays valid for
later chunks, so the KV cache needs no re-encoding.

Chunk semantics (shared by the offline mask and the streaming path): encoder frame ``t``
is in chunk ``t // C``; it attends to every frame of its own chunk and of the
``left_chunks`` chunks before it (``-1``: all of them). Streaming feeds one chunk per call
and keeps ``left_chunks * C`` keys/values per layer, plus the last ``K - 1`` inputs of each
causal convolution, so it reproduces the offline output under the same mask exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


def chunk_attention_mask(t: int, chunk_size: int, left_chunks: int = -1, device=None) -> torch.Tensor:
    """(T, T) bool, True where query frame i may attend key frame j. ``chunk_size <= 0``: full."""
    if chunk_size <= 0:
        return torch.ones(t, t, dtype=torch.bool, device=device)
    chunk = torch.arange(t, device=device) // chunk_size
    q, k = chunk[:, None], chunk[None, :]
    allowed = k <= q
    if left_chunks >= 0:
        allowed &= k >= q - left_chunks
    return allowed


class LayerCache(NamedTuple):
    """Streaming state of one block: rotated keys/values (B, H, T_k, Dh), conv inputs (B, D, K-1)."""

    k: torch.Tensor
    v: torch.Tensor
    conv: torch.Tensor


def _rotate(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding. x: (B, H, T, Dh); positions: (T,) absolute frame indices,
    or (B, T) when the rows of a batch are at different points of their streams."""
    half = x.shape[-1] // 2
    ang = positions.to(torch.float32)[..., None] * inv_freq  # (T, Dh/2) or (B, T, Dh/2)
    if ang.dim() == 3:
        ang = ang[:, None]  # (B, 1, T, Dh/2): the same angle for every head
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class MultiHeadSelfAttention(nn.Module):
    """Self-attention with separate q/k/v/out projections (each a LoRA-style target)."""

    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.h, self.dh = num_heads, d_model // num_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = dropout
        half = self.dh // 2  # derived, not learned: kept out of the state dict
        self.register_buffer("inv_freq", 10000.0 ** (-torch.arange(half, dtype=torch.float32) / half), persistent=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.h, self.dh).transpose(1, 2)

    def forward(self, x, positions, mask, past: tuple[torch.Tensor, torch.Tensor] | None = None):
        """x: (B, T, D); positions: (T,); mask: (B, 1, T, T_past + T) bool.

        Returns (B, T, D) and the keys/values (B, H, T_past + T, Dh) incl. the past ones.
        """
        q = _rotate(self._heads(self.q_proj(x)), positions, self.inv_freq)
        k = _rotate(self._heads(self.k_proj(x)), positions, self.inv_freq)
        v = self._heads(self.v_proj(x))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        b, _, t, _ = y.shape
        return self.out_proj(y.transpose(1, 2).reshape(b, t, self.h * self.dh)), (k, v)


class FeedForward(nn.Module):
    def __init__(self, d_model: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, hidden)
        self.fc2 = nn.Linear(hidden, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.dropout(F.silu(self.fc1(self.norm(x))))))


class ConvModule(nn.Module):
    """LN -> pointwise (2D) -> GLU -> depthwise conv -> LN -> SiLU -> pointwise.

    ``causal=True`` pads ``K - 1`` frames on the left only (or takes them from the cache),
    so frame t never sees t + 1. LayerNorm replaces the usual BatchNorm: batch statistics
    would mix padded frames into training and differ between chunked and full inputs.
    """

    def __init__(self, d_model: int, kernel: int, causal: bool, dropout: float) -> None:
        super().__init__()
        self.kernel, self.causal = kernel, causal
        self.norm = nn.LayerNorm(d_model)
        self.pw1 = nn.Linear(d_model, 2 * d_model)
        self.dw = nn.Conv1d(d_model, d_model, kernel, groups=d_model)
        self.dw_norm = nn.LayerNorm(d_model)
        self.pw2 = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, valid, cache: torch.Tensor | None = None):
        """x: (B, T, D); valid: (B, T) bool; cache: (B, D, K-1) previous inputs or None.

        Returns (B, T, D) and the new cache (last K-1 depthwise inputs; causal only).
        """
        h = F.glu(self.pw1(self.norm(x)), dim=-1)
        h = h.masked_fill(~valid[..., None], 0.0).transpose(1, 2)  # (B, D, T); padding must not leak
        new_cache = None
        if self.causal:
            left = cache if cache is not None else h.new_zeros(h.shape[0], h.shape[1], self.kernel - 1)
            h = torch.cat([left, h], dim=2)
            new_cache = h[:, :, h.shape[2] - (self.kernel - 1) :]
        else:
            lp = (self.kernel - 1) // 2
            h = F.pad(h, (lp, self.kernel - 1 - lp))
        h = self.dw(h).transpose(1, 2)
        return self.dropout(self.pw2(F.silu(self.dw_norm(h)))), new_cache


class ConformerBlock(nn.Module):
    """One Conformer block. Forward returns ``(y (B, T, D), LayerCache)``.

    Adapters attach as forward hooks on this module; both the offline and the streaming
    encoder call it through ``__call__``, so a hook sees every frame in either mode.
    """

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, kernel: int, causal: bool, dropout: float):
        super().__init__()
        self.ffn1 = FeedForward(d_model, ffn_dim, dropout)
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = MultiHeadSelfAttention(d_model, num_heads, dropout)
        self.conv = ConvModule(d_model, kernel, causal, dropout)
        self.ffn2 = FeedForward(d_model, ffn_dim, dropout)
        self.final_norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, positions, mask, valid, cache: LayerCache | None = None):
        """x: (B, T, D); positions: (T,); mask: (B, 1, T, T_k + T); valid: (B, T) bool."""
        x = x + 0.5 * self.ffn1(x)
        past = None if cache is None else (cache.k, cache.v)
        a, (k, v) = self.attn(self.attn_norm(x), positions, mask, past)
        x = x + self.dropout(a)
        c, conv_cache = self.conv(x, valid, None if cache is None else cache.conv)
        x = x + c
        x = x + 0.5 * self.ffn2(x)
        return self.final_norm(x), LayerCache(k, v, conv_cache)


@dataclass
class EncoderState:
    """Streaming state of a :class:`ConformerEncoder` (all tensors have batch dim B first).

    layers: one :class:`LayerCache` per block; valid: (B, T_k) which cached frames are real;
    offset: frames already consumed (absolute position of the next frame): an int, or a (B,)
    tensor when streams at different points share a batch (see ``StreamingState.stack``);
    keep: cached frames kept per layer (``left_chunks * C``; -1: all).
    """

    layers: list[LayerCache]
    valid: torch.Tensor
    offset: int | torch.Tensor
    keep: int


class ConformerEncoder(nn.Module):
    """A stack of :class:`ConformerBlock`; ``causal`` selects the streaming first pass."""

    def __init__(self, num_layers, d_model, num_heads, ffn_dim, kernel, causal: bool, dropout: float):
        super().__init__()
        self.causal, self.num_heads, self.kernel = causal, num_heads, kernel
        self.layers = nn.ModuleList(
            ConformerBlock(d_model, num_heads, ffn_dim, kernel, causal, dropout) for _ in range(num_layers)
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, chunk_size: int = -1, left_chunks: int = -1):
        """x: (B, T, D), lengths: (B,) -> (B, T, D) under the chunk mask (``chunk_size<=0``: full)."""
        b, t, _ = x.shape
        valid = torch.arange(t, device=x.device)[None, :] < lengths[:, None]
        mask = chunk_attention_mask(t, chunk_size, left_chunks, x.device)[None] & valid[:, None, :]
        # Every frame also sees itself so padded rows never softmax over nothing (NaN).
        mask = (mask | torch.eye(t, dtype=torch.bool, device=x.device)).unsqueeze(1)
        positions = torch.arange(t, device=x.device)
        for layer in self.layers:
            x, _ = layer(x, positions, mask, valid)
        return x

    def init_state(self, batch: int, chunk_size: int, left_chunks: int, device=None, dtype=None) -> EncoderState:
        if not self.causal:
            raise RuntimeError("only a causal encoder can stream")
        d = self.layers[0].attn.h * self.layers[0].attn.dh
        dh = self.layers[0].attn.dh
        empty = torch.zeros(batch, self.num_heads, 0, dh, device=device, dtype=dtype)
        conv = torch.zeros(batch, d, self.kernel - 1, device=device, dtype=dtype)
        layers = [LayerCache(empty, empty, conv) for _ in self.layers]
        keep = -1 if left_chunks < 0 else left_chunks * chunk_size
        return EncoderState(layers, torch.zeros(batch, 0, dtype=torch.bool, device=device), 0, keep)

    def streaming_forward(self, x: torch.Tensor, lengths: torch.Tensor, state: EncoderState):
        """One chunk. x: (B, C, D) (frames of this chunk), lengths: (B,) valid frames in it.

        Returns (B, C, D) and the new state; every frame of the chunk sees the whole chunk
        and the cached left context, exactly as :meth:`forward` with chunk size C.
        """
        b, t, _ = x.shape
        valid = torch.arange(t, device=x.device)[None, :] < lengths[:, None]
        new = valid[:, None, :] | torch.eye(t, dtype=torch.bool, device=x.device)[None]
        mask = torch.cat([state.valid[:, None, :].expand(b, t, -1), new], dim=2).unsqueeze(1)
        positions = torch.arange(t, device=x.device)
        positions = positions + (state.offset[:, None].to(x.device) if torch.is_tensor(state.offset) else state.offset)
        caches = []
        for layer, cache in zip(self.layers, state.layers):
            x, c = layer(x, positions, mask, valid, cache)
            caches.append(self._trim(c, state.keep))
        all_valid = torch.cat([state.valid, valid], dim=1)
        if state.keep >= 0:
            all_valid = all_valid[:, all_valid.shape[1] - min(state.keep, all_valid.shape[1]) :]
        return x, EncoderState(caches, all_valid, state.offset + t, state.keep)

    @staticmethod
    def _trim(c: LayerCache, keep: int) -> LayerCache:
        if keep < 0:
            return c
        n = c.k.shape[2]
        start = n - min(keep, n)
        return LayerCache(c.k[:, :, start:], c.v[:, :, start:], c.conv)
