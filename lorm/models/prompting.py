"""Prompt- and prefix-tuning of the frozen backbones: the shared model pieces of L2P and CODA-Prompt
(baselines2-spec section 2.2, items 4 and 5).

``PromptedEncoder(encoder, prompt_fn)`` wraps a ``TextEncoder`` (BERT) or an ``ImageEncoder`` (timm ViT) and
takes its place as ``Classifier.encoder``. Every forward makes two passes:

1. the *query pass*, ``query(inputs)``: the pooled feature of the unprompted backbone (its own forward, so the
   packed text path) under ``no_grad`` and in eval mode;
2. the *prompted pass*: ``prompt_fn(query)`` returns the prompts of each sample, and ``prompted(inputs, prompts)``
   runs the backbone with them and pools its final hidden states.

A prompt provider returns one of

- a tensor (B, L, d): **prompt-tuning**, L tokens inserted right after the CLS token: [CLS, prompts, rest];
- ``{layer: (key_prefix, value_prefix)}``, each (B, P, d) (batch 1 broadcasts): **prefix-tuning**, P vectors
  prepended to the keys and to the values of the self-attention of that layer (0-based), after the key / value
  projections (they are in the projected space: no bias, projection or key norm applies to them; split over the
  heads like the keys); the hidden states keep their length;
- ``Prompts(tokens, prefixes)`` for both at once, or ``None`` (unprompted).

Insertion, by backbone:

- ViT prompt-tuning re-runs timm's ``forward_features``: ``patch_embed`` -> ``_pos_embed`` (CLS + position
  embeddings) -> ``patch_drop`` -> prompts inserted after CLS, with CLS's position embedding added (spec Q21, the
  intended default) -> ``norm_pre`` -> ``blocks`` -> ``norm``.
- ViT prefix-tuning replaces ``forward`` of the chosen blocks' ``attn``: q, k, v from ``qkv`` (``q_norm`` /
  ``k_norm`` on the token ones), prefixes in front of k and v, ``scaled_dot_product_attention``, ``proj``.
- BERT prompt-tuning feeds ``inputs_embeds`` = word embeddings of the ids with the prompts inserted after [CLS];
  real tokens keep their position ids 0..N-1, prompts get 0 (CLS's); token types 0; the attention mask gets ones
  at the prompts. The embedding layer adds position and type embeddings and its LayerNorm to prompts and tokens.
- BERT prefix-tuning replaces ``forward`` of ``encoder.layer[i].attention.self``: q, k, v projected as the
  original, prefixes in front on the key axis, the attention mask padded on its last axis by P attended
  positions (transformers 5.x hands it over as ``None`` when the batch has no padding: kept ``None``; boolean
  (B, 1, N, N) under "sdpa": padded with True; additive float under "eager": padded with 0), then the model's own
  attention function ("eager" or "sdpa" only).

The replaced attention forwards are installed on first use of a layer and fall back to the original forward
whenever no prefix is set, i.e. outside ``prompted`` (the query pass, any other use of the backbone). Prompted text
passes always run BERT's padded forward (``TextEncoder.hidden_states``): the packed forward of
lorm.models.packed_bert has no prompt or prefix support, and the unprompted ``TextEncoder`` keeps it.

Pooling of the prompted pass (``pooling``; default: the backbone's own feature, "cls" for a ViT and
``TextEncoder.pooling`` for text, so that empty prompts give the unprompted feature exactly):
"cls" the CLS token, "mean" the masked mean of the input's real tokens (text only; prompts excluded),
"prompts" the mean over the prompt tokens (L2P's intended classifier input), "cls+prompts" the mean over CLS and
the prompts (fed-mammoth's L2P, spec Q22).
"""

from __future__ import annotations

import types
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lorm.models.backbones import ImageEncoder, TextEncoder
from lorm.models.packed_bert import packed_unsupported_reason

__all__ = ["POOLINGS", "Prefixes", "PromptFn", "Prompts", "PromptedEncoder", "pad_key_mask"]

POOLINGS = ("cls", "mean", "prompts", "cls+prompts")

Prefixes = dict[int, tuple[Tensor, Tensor]]  # layer -> (key prefix (B, P, d), value prefix (B, P, d))


@dataclass
class Prompts:
    """What a prompt provider returns for a batch: prompt tokens (B, L, d) and / or per-layer prefixes."""

    tokens: Tensor | None = None
    prefixes: Prefixes | None = None

    @classmethod
    def of(cls, value: "PromptLike") -> "Prompts":
        if value is None:
            return cls()
        if isinstance(value, Prompts):
            return value
        if isinstance(value, Tensor):
            return cls(tokens=value)
        if isinstance(value, dict):
            return cls(prefixes=value)
        raise TypeError(f"PromptedEncoder: a prompt provider returns a tensor, a dict of prefixes, Prompts or None, "
                        f"not a {type(value).__name__}")


PromptLike = Union[Tensor, Prefixes, Prompts, None]
PromptFn = Callable[[Tensor], PromptLike]  # query features (B, d) -> the batch's prompts


def pad_key_mask(mask: Tensor | None, count: int) -> Tensor | None:
    """An attention mask over ``count`` more keys, placed in front and attended by every query: boolean masks
    (True = attend) are padded with True, additive float masks with 0; ``None`` (no padding) stays ``None``."""
    if mask is None or count == 0:
        return mask
    if mask.dtype == torch.bool:
        fill = True
    elif mask.is_floating_point():
        fill = 0.0
    else:
        raise TypeError(f"PromptedEncoder: cannot pad an attention mask of dtype {mask.dtype}")
    return torch.cat((mask.new_full((*mask.shape[:-1], count), fill), mask), dim=-1)


def _split_heads(prefix: Tensor, batch: int, heads: int, head_dim: int, like: Tensor) -> Tensor:
    """(B or 1, P, heads * head_dim) -> (B, heads, P, head_dim) in the dtype and device of ``like``."""
    if prefix.dim() != 3 or prefix.shape[-1] != heads * head_dim or prefix.shape[0] not in (1, batch):
        raise ValueError(f"PromptedEncoder: a prefix must be (batch or 1, length, {heads * head_dim}), "
                         f"got {tuple(prefix.shape)} for a batch of {batch}")
    prefix = prefix.to(device=like.device, dtype=like.dtype).expand(batch, -1, -1)
    return prefix.reshape(batch, prefix.shape[1], heads, head_dim).transpose(1, 2)


def _vit_prefix_attention(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
    """timm ``Attention.forward`` with the prefix in ``self._lorm_prefix`` prepended to keys and values."""
    prefix = self._lorm_prefix
    if prefix is None:
        return type(self).forward(self, x, attn_mask=attn_mask, is_causal=is_causal)
    if attn_mask is not None or is_causal:
        raise ValueError("PromptedEncoder: ViT prefix-tuning takes no attention mask")
    B, N, _ = x.shape
    heads, head_dim = self.num_heads, self.head_dim
    gate = self.gate(x).sigmoid() if getattr(self, "gate", None) is not None else None
    q, k, v = self.qkv(x).reshape(B, N, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = self.q_norm(q), self.k_norm(k)
    k = torch.cat((_split_heads(prefix[0], B, heads, head_dim, k), k), dim=2)
    v = torch.cat((_split_heads(prefix[1], B, heads, head_dim, v), v), dim=2)
    x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
    x = x.transpose(1, 2).reshape(B, N, heads * head_dim)
    if getattr(self, "norm", None) is not None:
        x = self.norm(x)
    if gate is not None:
        x = x * gate
    return self.proj_drop(self.proj(x))


def _bert_prefix_self_attention(self, hidden_states: Tensor, attention_mask: Tensor | None = None, cache=None,
                                **kwargs):
    """transformers 5.x ``BertSelfAttention.forward`` with the prefix in ``self._lorm_prefix`` prepended to keys
    and values and the attention mask padded accordingly."""
    prefix = self._lorm_prefix
    if prefix is None:
        return type(self).forward(self, hidden_states, attention_mask=attention_mask, cache=cache, **kwargs)
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.bert.modeling_bert import eager_attention_forward

    implementation = self.config._attn_implementation
    if cache is not None or implementation not in ("eager", "sdpa"):
        raise ValueError(f"PromptedEncoder: BERT prefix-tuning supports the eager and sdpa attention of an encoder "
                         f"without cache, not {implementation!r}" + (" with a cache" if cache is not None else ""))
    input_shape = hidden_states.shape[:-1]
    hidden_shape = (*input_shape, -1, self.attention_head_size)
    q = self.query(hidden_states).view(hidden_shape).transpose(1, 2)
    k = self.key(hidden_states).view(hidden_shape).transpose(1, 2)
    v = self.value(hidden_states).view(hidden_shape).transpose(1, 2)
    batch, heads, head_dim = q.shape[0], self.num_attention_heads, self.attention_head_size
    k = torch.cat((_split_heads(prefix[0], batch, heads, head_dim, k), k), dim=2)
    v = torch.cat((_split_heads(prefix[1], batch, heads, head_dim, v), v), dim=2)
    attention_mask = pad_key_mask(attention_mask, prefix[0].shape[1])
    attention = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
    out, weights = attention(self, q, k, v, attention_mask, dropout=self.dropout.p if self.training else 0.0,
                             scaling=self.scaling, **kwargs)
    return out.reshape(*input_shape, -1).contiguous(), weights


class PromptedEncoder(nn.Module):
    """A frozen backbone encoder run with per-sample prompts from ``prompt_fn`` (see the module docstring).

    ``prompt_fn`` (query features (B, d) -> prompts) is kept as ``prompt``, a submodule when it is an ``nn.Module``
    (its parameters are then ``prompt.*`` of this module, the backbone's ``backbone.*``). ``pooling`` is the
    prompted pass's feature (one of POOLINGS; None: the backbone's own). ``query_eval`` (default): the query pass
    runs in eval mode also in training, i.e. without dropout (a deterministic query for the key matching: our
    choice; MiniLM has dropout 0.1, ViT-B/16 none); False: in the wrapper's current mode."""

    def __init__(self, encoder: nn.Module, prompt_fn: PromptFn | None = None, pooling: str | None = None,
                 query_eval: bool = True):
        super().__init__()
        if isinstance(encoder, TextEncoder):
            self.kind = "text"
            reason = packed_unsupported_reason(encoder.bert)  # the same checks: BERT layout, absolute positions
            if reason is not None:
                raise ValueError(f"PromptedEncoder: the text encoder is not supported ({reason})")
            default = encoder.pooling
        elif isinstance(encoder, ImageEncoder):
            self.kind = "image"
            vit = encoder.vit
            if (getattr(vit, "cls_token", None) is None or getattr(vit, "num_prefix_tokens", 1) != 1
                    or getattr(vit, "global_pool", "token") != "token" or getattr(vit, "attn_pool", None) is not None
                    or not isinstance(getattr(vit, "fc_norm", nn.Identity()), nn.Identity)):
                raise ValueError("PromptedEncoder: the ViT must pool its CLS token (global_pool 'token', one prefix "
                                 "token, no attention pool or fc_norm)")
            default = "cls"
        else:
            raise TypeError(f"PromptedEncoder: wraps a TextEncoder or an ImageEncoder, not a {type(encoder).__name__}")
        pooling = pooling or default
        self._check_pooling(pooling)
        self.backbone = encoder
        self.prompt = prompt_fn
        self.pooling = pooling
        self.query_eval = query_eval

    # ---- the two passes ---------------------------------------------------------------------------------
    def forward(self, inputs) -> Tensor:
        if self.prompt is None:
            raise RuntimeError("PromptedEncoder: no prompt provider set (attribute prompt)")
        return self.prompted(inputs, self.prompt(self.query(inputs)))

    @torch.no_grad()
    def query(self, inputs) -> Tensor:
        """The pooled feature of the unprompted, frozen backbone (its own forward), without gradient."""
        modes = [(m, m.training) for m in self.backbone.modules()] if self.query_eval else []
        if self.query_eval:
            self.backbone.eval()
        try:
            return self.backbone(inputs)
        finally:
            for m, mode in modes:
                m.training = mode

    def prompted(self, inputs, prompts: PromptLike = None, pooling: str | None = None) -> Tensor:
        """The pooled feature of the backbone run with ``prompts``."""
        pooling = pooling or self.pooling
        self._check_pooling(pooling)
        hidden, real, count = self.hidden_states(inputs, prompts)
        if pooling in ("prompts", "cls+prompts") and count == 0:
            raise ValueError(f"PromptedEncoder: pooling {pooling!r} needs prompt tokens")
        if pooling == "cls":
            return hidden[:, 0]
        if pooling == "prompts":
            return hidden[:, 1:1 + count].mean(1)
        if pooling == "cls+prompts":
            return hidden[:, :1 + count].mean(1)
        weights = real.unsqueeze(-1).to(hidden.dtype)  # "mean" (text)
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)

    def hidden_states(self, inputs, prompts: PromptLike = None) -> tuple[Tensor, Tensor | None, int]:
        """Final hidden states of the prompted backbone: ``(hidden, real, L)``, ``hidden`` (B, N + L, d) with the
        L prompt tokens at positions 1..L, ``real`` the mask of the input's real tokens in that layout (text:
        prompts and padding 0) or None (image)."""
        prompts = Prompts.of(prompts)
        with self._prefixes(prompts.prefixes or {}):
            if self.kind == "text":
                return self._text_hidden(inputs, prompts.tokens)
            return self._vit_hidden(inputs, prompts.tokens)

    # ---- prompt-tuning --------------------------------------------------------------------------------------
    def _check_tokens(self, tokens: Tensor, batch: int, dim: int) -> None:
        if tokens.dim() != 3 or tokens.shape[0] not in (1, batch) or tokens.shape[-1] != dim:
            raise ValueError(f"PromptedEncoder: prompt tokens must be (batch or 1, length, {dim}), "
                             f"got {tuple(tokens.shape)} for a batch of {batch}")

    def _text_hidden(self, inputs: dict, tokens: Tensor | None) -> tuple[Tensor, Tensor, int]:
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        if tokens is None:
            return self.backbone.hidden_states({"input_ids": ids, "attention_mask": mask}), mask, 0
        bert = self.backbone.bert
        words = bert.get_input_embeddings()(ids)  # (B, N, d)
        batch, seq, dim = words.shape
        self._check_tokens(tokens, batch, dim)
        count = tokens.shape[1]
        tokens = tokens.to(words.dtype).expand(batch, -1, -1)
        embeds = torch.cat((words[:, :1], tokens, words[:, 1:]), dim=1)
        positions = torch.arange(seq, device=ids.device)
        position_ids = torch.cat((positions[:1], positions.new_zeros(count), positions[1:])).expand(batch, -1)
        ones = mask.new_ones(batch, count)
        full = torch.cat((mask[:, :1], ones, mask[:, 1:]), dim=1)
        real = torch.cat((mask[:, :1], torch.zeros_like(ones), mask[:, 1:]), dim=1)
        hidden = self.backbone.hidden_states(
            {"inputs_embeds": embeds, "position_ids": position_ids, "attention_mask": full})
        return hidden, real, count

    def _vit_hidden(self, images: Tensor, tokens: Tensor | None) -> tuple[Tensor, None, int]:
        vit = self.backbone.vit
        x = vit.patch_drop(vit._pos_embed(vit.patch_embed(images)))
        count = 0
        if tokens is not None:
            self._check_tokens(tokens, x.shape[0], x.shape[-1])
            count = tokens.shape[1]
            tokens = tokens.to(x.dtype).expand(x.shape[0], -1, -1)
            if vit.pos_embed is not None and not getattr(vit, "no_embed_class", False):
                tokens = tokens + vit.pos_embed[:, :1].to(x.dtype)  # CLS's position embedding (spec Q21)
            x = torch.cat((x[:, :1], vit.pos_drop(tokens), x[:, 1:]), dim=1)
        x = vit.norm(vit.blocks(vit.norm_pre(x)))
        return x, None, count

    # ---- prefix-tuning --------------------------------------------------------------------------------------
    def attention_module(self, layer: int) -> nn.Module:
        """The self-attention module of ``layer`` (0-based), with the prefix-aware forward installed."""
        if self.kind == "text":
            layers, replacement = self.backbone.bert.encoder.layer, _bert_prefix_self_attention
        else:
            layers, replacement = self.backbone.vit.blocks, _vit_prefix_attention
        if not 0 <= layer < len(layers):
            raise ValueError(f"PromptedEncoder: prefix for layer {layer}, the backbone has layers 0..{len(layers) - 1}")
        module = layers[layer].attention.self if self.kind == "text" else layers[layer].attn
        if not hasattr(module, "_lorm_prefix"):
            module._lorm_prefix = None
            module.forward = types.MethodType(replacement, module)
        return module

    @contextmanager
    def _prefixes(self, prefixes: Prefixes):
        """Set the prefixes on their attention modules for the duration of one prompted pass."""
        modules = []
        try:
            for layer, pair in prefixes.items():
                key, value = pair
                if key.shape[:-1] != value.shape[:-1]:
                    raise ValueError(f"PromptedEncoder: layer {layer}: key prefix {tuple(key.shape)} and value "
                                     f"prefix {tuple(value.shape)} differ in batch or length")
                module = self.attention_module(int(layer))
                module._lorm_prefix = (key, value)
                modules.append(module)
            yield
        finally:
            for module in modules:
                module._lorm_prefix = None

    def _check_pooling(self, pooling: str) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"PromptedEncoder: unknown pooling {pooling!r} (one of {', '.join(POOLINGS)})")
        if pooling == "mean" and self.kind == "image":
            raise ValueError("PromptedEncoder: pooling 'mean' is for text backbones (a ViT pools its CLS token)")
