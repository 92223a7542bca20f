"""Packed ("unpadded") forward of a Hugging Face BERT encoder: the Linear layers see real tokens only.

A batch of glosses padded to its longest one carries about twice as many positions as real tokens (random
training batches of 16: 2.1x on WordNet-40), and in the padded forward every padded position goes through
every Linear layer. Here the real tokens of the batch are gathered once into a (n_tokens, d) matrix (row-major
order of the attention mask, i.e. the order of ``x[mask]``) and stay packed through every encoder layer:
query / key / value, the attention output dense, the intermediate dense, the output dense, the LayerNorms,
the activation, the residuals and the dropouts all run on (n_tokens, d). Only the attention itself is
computed on the padded layout: q, k and v are scattered to (batch * heads, seq, head_dim) (zeros at padded
positions), ``softmax(q k^T * scaling + key-padding bias) v`` is computed with batched matmuls (the additive
``finfo.min`` bias of transformers' eager attention; its "sdpa" attention computes the same), and the context
of the real tokens is gathered back to packed form.

The BertModel's own modules and weights are used: the query / key / value / dense Linears, LayerNorms and
``intermediate`` (dense + activation) are called as modules, so LoRA layers injected into them, their forward
(pre-)hooks, ``lora_layers`` and checkpoints are unchanged; only the hooked inputs become 2-D (n_tokens, d)
tensors of real tokens instead of (batch, seq, d) ones (``InputStatistics`` takes 2-D inputs as they are, so its
token mask has nothing left to remove and the sums are the same). Hooks on the container modules
(``BertSelfAttention``, ``BertSelfOutput``, ``BertOutput``, ``BertLayer``) do not fire.

Train mode keeps every dropout of the padded forward, with the same probabilities and places: the embeddings
dropout (inside ``BertEmbeddings``), the attention-probabilities dropout and the two hidden dropouts (after the
attention output dense and the output dense, before the residual LayerNorm). The latter three draw their masks
with :func:`fast_dropout` (a third of ``bernoulli_``'s cost on CPU); the random draws differ from the padded
forward's anyway (other shapes), the global RNG stays the only source (seeded runs are reproducible).

The BertPooler (tanh dense on the CLS token, unused by ``TextEncoder``) is not computed.

Measured on the default experiment (bench/bench_text_path.py, 1 CPU thread): about 2x the padded forward's
training samples/s; torch.compile and a fused q/k/v matmul did not help and are not used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["packed_unsupported_reason", "packed_bert_hidden", "packed_pool", "fast_dropout"]


def packed_unsupported_reason(bert: nn.Module) -> str | None:
    """Why the packed forward cannot reproduce ``bert`` (None: it can): encoder-only BERT layout with absolute
    positions, self-attention only."""
    cfg = getattr(bert, "config", None)
    if cfg is None or not all(hasattr(bert, a) for a in ("embeddings", "encoder")):
        return "not a Hugging Face BertModel"
    if getattr(cfg, "is_decoder", False) or getattr(cfg, "add_cross_attention", False):
        return "decoder / cross-attention configuration"
    if getattr(cfg, "position_embedding_type", "absolute") not in (None, "absolute"):
        return f"position_embedding_type {cfg.position_embedding_type!r}"
    for layer in bert.encoder.layer:
        att = getattr(layer, "attention", None)
        sa = getattr(att, "self", None)
        if sa is None or not all(hasattr(sa, a) for a in ("query", "key", "value", "scaling", "dropout")):
            return "unexpected BertLayer layout"
        if hasattr(sa, "distance_embedding") or getattr(att, "is_cross_attention", False):
            return "relative-position or cross attention"
        if not all(hasattr(layer, a) for a in ("intermediate", "output")) or not hasattr(att, "output"):
            return "unexpected BertLayer layout"
        first = bert.encoder.layer[0].attention.self
        if (sa.num_attention_heads, sa.attention_head_size) != (first.num_attention_heads, first.attention_head_size):
            return "layers with different attention shapes"
    return None


def fast_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """``F.dropout`` with a cheaper mask on CPU: keep each element with probability 1 - p (p rounded to a
    multiple of 2^-31), scale the kept ones by 1 / (1 - p). One 32-bit draw per element from the global RNG
    (``random_``) costs about a third of ``bernoulli_``'s; other devices use ``F.dropout``."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, True)
    draws = torch.empty(x.shape, dtype=torch.int32, device=x.device).random_()  # uniform on [0, 2^31)
    keep = (draws >= int(round(p * 2.0**31))).to(x.dtype).mul_(1.0 / (1.0 - p))
    return x * keep


class _Layout:
    """Where the packed tokens go in the head-major padded layout of the attention, computed once per batch.

    Rows of ``head_dim`` values: the packed projections (n, 3, heads, head_dim) land in a zero buffer
    (3 * batch * heads * seq, head_dim) = q, k, v of shape (batch * heads, seq, head_dim) at ``scatter``; the
    context (batch * heads * seq, head_dim) is read back to (n, heads * head_dim) at ``gather``. One index copy
    each way, no transpose copies."""

    def __init__(self, token_index: Tensor, mask: Tensor, heads: int, head_dim: int, dtype: torch.dtype):
        batch, seq = mask.shape
        self.batch, self.seq, self.heads, self.head_dim = batch, seq, heads, head_dim
        b = torch.div(token_index, seq, rounding_mode="floor")
        pos = token_index - b * seq
        head = torch.arange(heads, device=token_index.device)
        gather = (b[:, None] * heads + head[None, :]) * seq + pos[:, None]  # (n, heads)
        self.gather = gather.reshape(-1)
        part = torch.arange(3, device=token_index.device) * (batch * heads * seq)
        self.scatter = (part[None, :, None] + gather[:, None, :]).reshape(-1)  # (n, 3, heads)
        self.key_bias = None  # additive key-padding mask, as transformers' eager attention: finfo.min
        if token_index.numel() < batch * seq:
            bias = torch.zeros(batch, 1, seq, dtype=dtype, device=mask.device)
            self.key_bias = bias.masked_fill_(~mask.unsqueeze(1), torch.finfo(dtype).min).repeat_interleave(heads, 0)


def _attention(sa: nn.Module, h: Tensor, lay: _Layout) -> Tensor:
    """BertSelfAttention on packed tokens: the projections on (n, d), softmax(q k^T * scaling + mask) v on the
    padded layout (batch * heads, seq, head_dim), attention-probabilities dropout in train mode; the context of
    the real tokens, (n, d), is returned."""
    n, hd = h.shape[0], lay.head_dim
    bh, seq = lay.batch * lay.heads, lay.seq
    # the modules' own forwards (LoRA, hooks); the scaling goes on the packed queries (n x d, not the scores)
    qkv = torch.cat((sa.query(h) * sa.scaling, sa.key(h), sa.value(h)), dim=1)  # (n, 3 * heads * head_dim)
    padded = qkv.new_zeros(3 * bh * seq, hd)  # padded positions: zeros (masked keys, discarded queries)
    padded.index_copy_(0, lay.scatter, qkv.view(-1, hd))
    q, k, v = padded.view(3, bh, seq, hd).unbind(0)
    kt = k.transpose(1, 2)
    scores = torch.bmm(q, kt) if lay.key_bias is None else torch.baddbmm(lay.key_bias.to(q.dtype), q, kt)
    probs = fast_dropout(scores.softmax(-1), sa.dropout.p, sa.training)
    ctx = torch.bmm(probs.to(v.dtype), v)  # (batch * heads, seq, head_dim)
    return ctx.view(-1, hd).index_select(0, lay.gather).view(n, -1)


def _residual_block(block: nn.Module, x: Tensor, residual: Tensor) -> Tensor:
    """BertSelfOutput / BertOutput: LayerNorm(dropout(dense(x)) + residual), with the block's own modules."""
    return block.LayerNorm(fast_dropout(block.dense(x), block.dropout.p, block.dropout.training) + residual)


def packed_bert_hidden(bert: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Final hidden states of the real tokens of a padded batch.

    Returns ``(hidden, row, lengths)``: ``hidden`` (n_tokens, d) in the row-major order of the mask (the order of
    ``x[mask]``), ``row`` (n_tokens,) the batch row of each token, ``lengths`` (batch,) real tokens per row.
    Position ids are the padded ones (0..seq-1 of each row), as in ``BertModel.forward``."""
    batch, seq = input_ids.shape
    mask = attention_mask.bool()
    flat = mask.reshape(-1)
    lengths = mask.sum(1)
    token_index = flat.nonzero().squeeze(1)  # (n,) positions of the real tokens in the flattened batch
    positions = bert.embeddings.position_ids[0, :seq].to(input_ids.device)
    ids = input_ids.reshape(-1).index_select(0, token_index).reshape(1, -1)
    pos = positions.repeat(batch).index_select(0, token_index).reshape(1, -1)
    h = bert.embeddings(input_ids=ids, position_ids=pos)[0]  # (n, d): word + token type 0 + position, LN, dropout
    layers = list(bert.encoder.layer)
    if layers:
        sa = layers[0].attention.self
        lay = _Layout(token_index, mask, sa.num_attention_heads, sa.attention_head_size, h.dtype)
    for layer in layers:
        ctx = _attention(layer.attention.self, h, lay)
        a = _residual_block(layer.attention.output, ctx, h)  # dense, dropout, LayerNorm(. + h)
        h = _residual_block(layer.output, layer.intermediate(a), a)  # dense, act; dense, dropout, LN(. + a)
    row = torch.div(token_index, seq, rounding_mode="floor")
    return h, row, lengths


def packed_pool(hidden: Tensor, row: Tensor, lengths: Tensor, pooling: str = "mean") -> Tensor:
    """(batch, d) pooled features from packed hidden states: the mean over a row's real tokens, or its first
    real token ("cls": position 0 under right padding, the tokenizer's)."""
    batch = lengths.shape[0]
    if pooling == "cls":
        starts = torch.cumsum(lengths, 0) - lengths
        return hidden.index_select(0, starts.clamp_max(max(hidden.shape[0] - 1, 0)))
    sums = hidden.new_zeros(batch, hidden.shape[1]).index_add(0, row, hidden)
    return sums / lengths.to(hidden.dtype).clamp_min(1.0).unsqueeze(1)
