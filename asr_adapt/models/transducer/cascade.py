"""Cascaded encoder: conv subsampling (4x or 8x) -> causal first pass (streams) -> non-causal second pass.

The first pass sees only its chunk and left context, so its output can be decoded while
audio arrives. The second pass runs full-context Conformer blocks on the first pass's
output once the utterance (or a segment) is complete, and is decoded with the same
prediction network and joiner for a more accurate final result.

Streaming contract (:meth:`CascadedEncoder.streaming_forward`): feed normalised feature
frames in pieces of any size; subsampled frames are buffered until a whole encoder chunk
(``chunk_size`` frames) is available, so the chunk grid — and therefore the output — is
the same as the offline first pass under ``chunk_attention_mask(T, chunk_size, left)``,
whatever the piece sizes. ``final=True`` flushes the last, partial chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from asr_adapt.models.transducer.config import TransducerConfig
from asr_adapt.models.transducer.encoder import ConformerEncoder, EncoderState, LayerCache
from asr_adapt.models.transducer.frontend import Conv2dSubsampling


class EncoderOutput(NamedTuple):
    """first: (B, T, D) causal pass; second: (B, T, D) or None; lengths: (B,) frames."""

    first: torch.Tensor
    second: torch.Tensor | None
    lengths: torch.Tensor


@dataclass
class StreamingState:
    """Everything the first pass carries between calls (batch dim first everywhere).

    subsampling: (B, T_s, F) feature frames not yet consumed by the subsampling convs;
    pending: (B, T_p, D) subsampled frames waiting for a complete chunk;
    feat_frames: (B,) valid feature frames received so far per row;
    emitted: encoder frames returned so far (an int: one chunk grid for the batch; a (B,)
    tensor for streams at different points sharing a batch, see :meth:`stack`);
    encoder: the per-layer KV and convolution caches.
    """

    subsampling: torch.Tensor
    pending: torch.Tensor
    feat_frames: torch.Tensor
    emitted: int | torch.Tensor
    chunk_size: int
    encoder: EncoderState

    def shape_key(self) -> tuple:
        """States with equal keys can be stacked (their per-row buffers have one length)."""
        return self.subsampling.shape[1:], self.pending.shape[1:], self.chunk_size, self.encoder.keep

    @classmethod
    def stack(cls, states: list[StreamingState]) -> StreamingState:
        """One batch from single-row states of streams at different points (equal :meth:`shape_key`).

        KV caches of different lengths are left-padded with frames marked invalid, which the
        attention mask gives exactly zero weight; offsets and emitted counts become per row.
        """
        width = max(s.encoder.valid.shape[1] for s in states)

        def pad(t: torch.Tensor, fill) -> torch.Tensor:  # left-pad dim 2 (k, v) or 1 (valid) to ``width``
            dim = 2 if t.dim() == 4 else 1
            missing = width - t.shape[dim]
            if not missing:
                return t
            shape = list(t.shape)
            shape[dim] = missing
            return torch.cat([t.new_full(shape, fill), t], dim=dim)

        layers = [LayerCache(torch.cat([pad(s.encoder.layers[i].k, 0) for s in states]),
                             torch.cat([pad(s.encoder.layers[i].v, 0) for s in states]),
                             torch.cat([s.encoder.layers[i].conv for s in states]))
                  for i in range(len(states[0].encoder.layers))]
        enc = EncoderState(layers, torch.cat([pad(s.encoder.valid, False) for s in states]),
                           torch.tensor([int(s.encoder.offset) for s in states]), states[0].encoder.keep)
        return cls(torch.cat([s.subsampling for s in states]), torch.cat([s.pending for s in states]),
                   torch.cat([s.feat_frames for s in states]), torch.tensor([int(s.emitted) for s in states]),
                   states[0].chunk_size, enc)

    def unstack(self, cache_lengths: list[int]) -> list[StreamingState]:
        """Single-row states again; ``cache_lengths[i]``: row i's real cached frames."""
        out = []
        for i, n in enumerate(cache_lengths):
            e = self.encoder
            layers = [LayerCache(c.k[i : i + 1, :, c.k.shape[2] - n :], c.v[i : i + 1, :, c.v.shape[2] - n :],
                                 c.conv[i : i + 1]) for c in e.layers]
            enc = EncoderState(layers, e.valid[i : i + 1, e.valid.shape[1] - n :], int(e.offset[i]), e.keep)
            out.append(StreamingState(self.subsampling[i : i + 1], self.pending[i : i + 1],
                                      self.feat_frames[i : i + 1], int(self.emitted[i]), self.chunk_size, enc))
        return out

    def to_dict(self) -> dict:
        """Plain tensors/ints (loadable with ``torch.load(weights_only=True)``)."""
        e = self.encoder
        return {
            "subsampling": self.subsampling, "pending": self.pending, "feat_frames": self.feat_frames,
            "emitted": self.emitted, "chunk_size": self.chunk_size,
            "enc_k": [c.k for c in e.layers], "enc_v": [c.v for c in e.layers],
            "enc_conv": [c.conv for c in e.layers], "enc_valid": e.valid,
            "enc_offset": e.offset, "enc_keep": e.keep,
        }

    @classmethod
    def from_dict(cls, d: dict) -> StreamingState:
        layers = [LayerCache(k, v, c) for k, v, c in zip(d["enc_k"], d["enc_v"], d["enc_conv"])]
        enc = EncoderState(layers, d["enc_valid"], int(d["enc_offset"]), int(d["enc_keep"]))
        return cls(d["subsampling"], d["pending"], d["feat_frames"], int(d["emitted"]), int(d["chunk_size"]), enc)


class CascadedEncoder(nn.Module):
    def __init__(self, cfg: TransducerConfig) -> None:
        super().__init__()
        self.n_mels = cfg.n_mels
        self.subsampling = Conv2dSubsampling(cfg.n_mels, cfg.subsampling_channels, cfg.d_model, cfg.dropout,
                                             stack=cfg.subsampling // 4)
        block = dict(d_model=cfg.d_model, num_heads=cfg.num_heads, ffn_dim=cfg.ffn_dim,
                     kernel=cfg.conv_kernel, dropout=cfg.dropout)
        self.first_pass = ConformerEncoder(cfg.first_pass_layers, causal=True, **block)
        self.second_pass = (
            ConformerEncoder(cfg.second_pass_layers, causal=False, **block) if cfg.second_pass_layers else None
        )

    @property
    def passes(self) -> list[str]:
        return ["first_pass"] + (["second_pass"] if self.second_pass is not None else [])

    def forward(
        self, feats: torch.Tensor, lengths: torch.Tensor, chunk_size: int = -1, left_chunks: int = -1,
        second_pass: bool = True,
    ) -> EncoderOutput:
        """feats: (B, T_f, F) normalised features, lengths: (B,) -> :class:`EncoderOutput`.

        The first pass runs under the chunk mask (``chunk_size <= 0``: full attention);
        the second pass always sees the whole first-pass output.
        """
        x, lens = self.subsampling(feats, lengths)
        first = self.first_pass(x, lens, chunk_size, left_chunks)
        second = self.second_pass(first, lens) if second_pass and self.second_pass is not None else None
        return EncoderOutput(first, second, lens)

    def init_state(self, batch: int, chunk_size: int, left_chunks: int = -1, device=None) -> StreamingState:
        """Fresh state for ``batch`` streams with chunks of ``chunk_size`` encoder frames."""
        if chunk_size < 1:
            raise ValueError("streaming needs chunk_size >= 1 encoder frames")
        dtype = self.subsampling.out.weight.dtype
        d = self.subsampling.out.out_features
        return StreamingState(
            subsampling=self.subsampling.init_cache(batch, self.n_mels, device, dtype),
            pending=torch.zeros(batch, 0, d, device=device, dtype=dtype),
            feat_frames=torch.zeros(batch, dtype=torch.long, device=device),
            emitted=0,
            chunk_size=chunk_size,
            encoder=self.first_pass.init_state(batch, chunk_size, left_chunks, device, dtype),
        )

    def streaming_forward(
        self, x: torch.Tensor, lengths: torch.Tensor, state: StreamingState, final: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, StreamingState]:
        """x: (B, T_c, F) next normalised feature frames, lengths: (B,) valid frames among them.

        Returns (B, T_o, D) first-pass frames completed by this call (T_o is a multiple of
        the chunk size unless ``final``), (B,) how many of them are valid per row, and the
        new state. Rows that ended earlier just get zero valid frames.
        """
        sub, sub_cache = self.subsampling.streaming_forward(x, state.subsampling)
        pending = torch.cat([state.pending, sub], dim=1)
        feat_frames = state.feat_frames + lengths.to(state.feat_frames.device)
        c = state.chunk_size
        n_chunks = pending.shape[1] // c
        enc_state, outs, emitted = state.encoder, [], state.emitted
        total_valid = self.subsampling.output_lengths(feat_frames)  # encoder frames this row has so far
        bounds = [(i * c, (i + 1) * c) for i in range(n_chunks)]
        if final and pending.shape[1] > n_chunks * c:
            bounds.append((n_chunks * c, pending.shape[1]))
        for lo, hi in bounds:
            chunk_lens = (total_valid - (emitted + lo)).clamp(0, hi - lo)
            y, enc_state = self.first_pass.streaming_forward(pending[:, lo:hi], chunk_lens, enc_state)
            outs.append(y)
        used = bounds[-1][1] if bounds else 0
        out = torch.cat(outs, dim=1) if outs else pending.new_zeros(pending.shape[0], 0, pending.shape[2])
        out_lens = (total_valid - emitted).clamp(0, used)
        new_state = StreamingState(sub_cache, pending[:, used:], feat_frames, emitted + used, c, enc_state)
        return out, out_lens, new_state
