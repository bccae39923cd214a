"""A lean Whisper decoder step: preallocated KV cache, SDPA, the layers' own modules called directly.

Hugging Face's ``WhisperDecoder.forward`` rebuilds per call what a search step does not
need: a causal mask, position ids, cache bookkeeping (``DynamicCache`` grows its K/V by
concatenation, a copy of the whole cache per token). :func:`step_logits` computes the same
function with a :class:`StaticKV` cache: self-attention K/V are written into buffers sized
once for the search, cross-attention K/V are projected from the encoder states once.

Adapters keep working: every projection, norm and embedding is called as the module it is,
so hooks on linear layers (unmerged LoRA/S2-LoRA) run as usual, and the hooks of the
modules whose ``forward`` this replaces (a decoder layer's LDA hook, the routing guard a
merged adapter leaves on a layer or attention module) are run here with the same arguments
``forward`` would give them: ``(hidden_states,)`` in, the block's output tensor out.
:func:`supported` says when a model has hooks this cannot run (hooks taking keyword
arguments, pre-hooks that replace the input of a module it bypasses); the search then uses
Hugging Face's path.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from asr_adapt.models.whisper_compute import COMPUTE_TYPES

_SDPA = nn.functional.scaled_dot_product_attention


class StaticKV:
    """Decoder KV cache with a fixed capacity.

    self_k[l], self_v[l]: (B, H, T_max, dh) buffers, the first :attr:`length` positions filled
    (the same for every row: a search feeds all rows one token per step).
    cross_k[l], cross_v[l]: (B, H, S, dh) projections of the encoder states, set on the first
    call of :func:`step_logits`, stored (and attended over) in ``cross_dtype``.
    """

    def __init__(self, n_layers: int, batch: int, heads: int, head_dim: int, max_len: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                 cross_dtype: torch.dtype | None = None) -> None:
        shape = (batch, heads, max_len, head_dim)
        self.self_k = [torch.empty(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.self_v = [torch.empty(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.cross_dtype = cross_dtype or dtype
        self.cross_k: list[torch.Tensor] = []
        self.cross_v: list[torch.Tensor] = []
        self.length = 0

    @property
    def batch(self) -> int:
        return self.self_k[0].shape[0]

    @property
    def capacity(self) -> int:
        return self.self_k[0].shape[2]

    def reorder_self(self, idx: torch.Tensor) -> None:
        """Self-attention K/V of rows ``idx`` (any order, repeats allowed): beams follow their parents."""
        n = self.length
        for bufs in (self.self_k, self.self_v):
            for i, buf in enumerate(bufs):
                new = buf.new_empty((len(idx), *buf.shape[1:]))
                new[:, :, :n] = buf[idx, :, :n]
                bufs[i] = new

    def select_cross(self, idx: torch.Tensor) -> None:
        """Cross-attention K/V of rows ``idx``."""
        self.cross_k = [k[idx] for k in self.cross_k]
        self.cross_v = [v[idx] for v in self.cross_v]

    def batch_select_indices(self, idx: torch.Tensor) -> None:
        """Keep rows ``idx`` of everything (the name and meaning of Hugging Face's cache method)."""
        self.reorder_self(idx)
        self.select_cross(idx)

    def batch_repeat_interleave(self, k: int) -> None:
        """Each row ``k`` times consecutively (beam expansion), as Hugging Face's cache method."""
        idx = torch.arange(self.batch, device=self.self_k[0].device).repeat_interleave(k)
        self.batch_select_indices(idx)


def _pre_hooks(module: nn.Module, args: tuple) -> None:
    for hid, hook in module._forward_pre_hooks.items():
        if hook(module, args) is not None:
            raise RuntimeError(f"{type(module).__name__} pre-hook {hid} changed its input; the lean step cannot run it")


def _post_hooks(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
    for hook in module._forward_hooks.values():
        res = hook(module, args, out)
        if res is not None:
            out = res
    return out


def _bypassed(backbone) -> list[nn.Module]:
    """Modules whose ``forward`` the lean step replaces (their hooks are run by hand)."""
    mods: list[nn.Module] = [backbone.decoder]
    for layer in backbone.decoder.layers:
        mods += [layer, layer.self_attn, layer.encoder_attn]
    return mods


def supported(backbone) -> bool:
    """Whether :func:`step_logits` computes what ``backbone.decoder`` does (no unsupported hooks)."""
    for mod in _bypassed(backbone):
        if mod._forward_hooks_with_kwargs or mod._forward_pre_hooks_with_kwargs:
            return False
        if mod is backbone.decoder and (mod._forward_hooks or mod._forward_pre_hooks):
            return False  # the decoder's own hooks expect Hugging Face's output object
    return True


def new_cache(backbone, batch: int, max_len: int, device: torch.device | None = None) -> StaticKV:
    """An empty :class:`StaticKV` for ``batch`` rows and at most ``max_len`` decoder positions."""
    cfg = backbone.config
    heads = cfg.decoder_attention_heads
    return StaticKV(cfg.decoder_layers, batch, heads, cfg.d_model // heads, max_len, device=device or backbone.device,
                    cross_dtype=COMPUTE_TYPES.get(backbone.compute_type).cross_attention)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, U, D) -> (B, H, U, dh)."""
    b, u, d = x.shape
    return x.view(b, u, heads, d // heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """(B, H, U, dh) -> (B, U, D)."""
    b, h, u, dh = x.shape
    return x.transpose(1, 2).reshape(b, u, h * dh)


def fuse_self_attention(backbone, convert: Sequence[str], make) -> dict[int, nn.Module]:
    """``make`` applied to each decoder layer's q, k and v projections stacked into one linear
    layer (k has no bias: zeros), for the layers whose three projections are all in ``convert``
    (float32 modules about to be converted). Returns {layer index: fused module}."""
    out = {}
    names = set(convert)
    for i, layer in enumerate(backbone.decoder.layers):
        attn = layer.self_attn
        parts = [f"decoder.layers.{i}.self_attn.{p}_proj" for p in "qkv"]
        if not all(n in names for n in parts):
            continue
        mods = [attn.q_proj, attn.k_proj, attn.v_proj]
        fused = nn.Linear(mods[0].in_features, sum(m.out_features for m in mods), device=mods[0].weight.device)
        with torch.no_grad():
            fused.weight.copy_(torch.cat([m.weight for m in mods]))
            fused.bias.copy_(torch.cat([m.bias if m.bias is not None else torch.zeros_like(m.weight[:, 0])
                                        for m in mods]))
        out[i] = make(fused)
    return out


def _qkv(backbone, attn, layer: int, h: torch.Tensor):
    """q, k, v projections of ``h``: one fused call where the model has one for this layer and the
    three projections are still the modules it replaces, without hooks (an adapter's hook must run)."""
    fused = backbone.fused_qkv.get(layer)
    if fused is not None:
        module, (q, k, v) = fused
        if (attn.q_proj is q and attn.k_proj is k and attn.v_proj is v
                and not (q._forward_hooks or k._forward_hooks or v._forward_hooks or q._forward_pre_hooks
                         or k._forward_pre_hooks or v._forward_pre_hooks)):
            return module(h).split(q.out_features, dim=-1)
    return attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)


def _self_attention(backbone, attn, h: torch.Tensor, layer: int, cache: StaticKV, start: int) -> torch.Tensor:
    _pre_hooks(attn, (h,))
    heads = attn.num_heads
    u = h.shape[1]
    q, k, v = _qkv(backbone, attn, layer, h)
    q = _heads(q * attn.scaling, heads)
    cache.self_k[layer][:, :, start : start + u] = _heads(k, heads)
    cache.self_v[layer][:, :, start : start + u] = _heads(v, heads)
    k = cache.self_k[layer][:, :, : start + u]
    v = cache.self_v[layer][:, :, : start + u]
    if u == 1:
        out = _SDPA(q, k, v, scale=1.0)
    elif start == 0:
        out = _SDPA(q, k, v, is_causal=True, scale=1.0)
    else:  # several new tokens after cached ones: each sees the cache and the new tokens up to itself
        allowed = torch.arange(start + u, device=h.device)[None, :] <= torch.arange(start, start + u, device=h.device)[:, None]
        out = _SDPA(q, k, v, attn_mask=allowed, scale=1.0)
    return attn.out_proj(_merge(out))


def _cross_attention(attn, h: torch.Tensor, layer: int, cache: StaticKV, enc: torch.Tensor | None) -> torch.Tensor:
    _pre_hooks(attn, (h,))
    heads = attn.num_heads
    dtype = cache.cross_dtype
    if len(cache.cross_k) <= layer:
        cache.cross_k.append(_heads(attn.k_proj(enc), heads).to(dtype).contiguous())
        cache.cross_v.append(_heads(attn.v_proj(enc), heads).to(dtype).contiguous())
    q = _heads(attn.q_proj(h) * attn.scaling, heads).to(dtype)
    out = _SDPA(q, cache.cross_k[layer], cache.cross_v[layer], scale=1.0)
    return attn.out_proj(_merge(out).to(h.dtype))


def step_logits(backbone, input_ids: torch.Tensor, encoder_states: torch.Tensor | None, cache: StaticKV) -> torch.Tensor:
    """Next-token logits (B, V) after ``input_ids`` (B, U), appended to ``cache`` (updated in place).

    ``encoder_states`` (B, S, D) are read on the first call only (cross-attention K/V are
    cached); equal to ``backbone.decoder_logits`` with Hugging Face's cache.
    """
    dec = backbone.decoder
    start, u = cache.length, input_ids.shape[1]
    if start + u > cache.capacity:
        raise ValueError(f"decoder cache holds {cache.capacity} positions; {start + u} needed")
    x = dec.embed_tokens(input_ids) + dec.embed_positions.weight[start : start + u]
    for i, layer in enumerate(dec.layers):
        args = (x,)
        _pre_hooks(layer, args)
        x = x + _self_attention(backbone, layer.self_attn, layer.self_attn_layer_norm(x), i, cache, start)
        x = x + _cross_attention(layer.encoder_attn, layer.encoder_attn_layer_norm(x), i, cache, encoder_states)
        x = x + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(x))))
        x = _post_hooks(layer, args, x)
    cache.length = start + u
    return backbone.proj_out(dec.layer_norm(x[:, -1])).float()


def search_cache(backbone, batch: int, max_len: int):
    """The cache a search should use: a :class:`StaticKV` where :func:`supported`, else Hugging Face's."""
    if supported(backbone):
        return new_cache(backbone, batch, max_len)
    return backbone.new_cache()


def reorder_beams(cache, idx: torch.Tensor, rows: Sequence[int] | None) -> None:
    """Beam step on either cache type: self-attention K/V follow ``idx``; cross-attention K/V keep
    ``rows`` (``None``: all rows stay)."""
    if isinstance(cache, StaticKV):
        cache.reorder_self(idx)
        if rows is not None:
            cache.select_cross(torch.as_tensor(rows, device=idx.device))
        return
    cache.self_attention_cache.reorder_cache(idx)
    if rows is not None:
        cache.cross_attention_cache.batch_select_indices(torch.as_tensor(rows, device=idx.device))
