"""Prompt- and prefix-tuning (lorm.models.prompting), the TextEncoder's inputs_embeds path and FederatedFull's
trainable subset: checked on a tiny random BertModel (both attention implementations), MiniLM and the tiny ViT."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lorm.federated.comm import payload_bytes
from lorm.federated.training import Runtime, generator
from lorm.models.backbones import TextEncoder, _build_vit_tiny_test
from lorm.models.prompting import Prompts, PromptedEncoder, pad_key_mask

LENGTHS = {"padded": [7, 4, 2], "unpadded": [7, 7, 7]}  # real tokens per row ([CLS] ... [SEP]); batch width 7
VOCAB, CLS, SEP, PAD = 60, 1, 2, 0


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(lengths, seed: int = 0, pad_seed: int | None = None) -> dict:
    """Token ids [CLS, random words, SEP, padding]; padded positions hold PAD, or random ids with ``pad_seed``."""
    width = max(lengths)
    ids = torch.randint(3, VOCAB, (len(lengths), width), generator=_gen(seed))
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    ids[:, 0] = CLS
    ids[torch.arange(len(lengths)), torch.tensor(lengths) - 1] = SEP
    filler = (torch.full_like(ids, PAD) if pad_seed is None
              else torch.randint(3, VOCAB, ids.shape, generator=_gen(pad_seed)))
    return {"input_ids": torch.where(mask.bool(), ids, filler), "attention_mask": mask}


def _tiny_bert(implementation: str) -> TextEncoder:
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=48, max_position_embeddings=32, pad_token_id=PAD,
                     attn_implementation=implementation)
    torch.manual_seed(0)
    return TextEncoder(BertModel(cfg).eval())


def _prefixes(layers, length: int, batch: int, dim: int, seed: int = 5) -> dict:
    gen = _gen(seed)
    return {i: (torch.randn(batch, length, dim, generator=gen), torch.randn(batch, length, dim, generator=gen))
            for i in layers}


def _exact(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def _attention_over(q, k, v, pk, pv, key_mask, scale):
    """softmax(q [pk; k]^T * scale, padded keys excluded) [pv; v], per head: q, k, v (B, H, N, hd), prefixes
    (B, H, P, hd), key_mask (B, N) of attended token keys."""
    keys, values = torch.cat((pk, k), 2), torch.cat((pv, v), 2)
    scores = q @ keys.transpose(-1, -2) * scale
    attended = torch.cat((torch.ones(key_mask.shape[0], pk.shape[2], dtype=torch.bool), key_mask.bool()), 1)
    scores = scores.masked_fill(~attended[:, None, None, :], float("-inf"))
    return scores.softmax(-1) @ values


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    return x.reshape(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def bert(request) -> TextEncoder:
    return _tiny_bert(request.param)


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    encoder, _ = _build_vit_tiny_test({})
    return encoder.eval()


@pytest.fixture(scope="module")
def minilm():
    from conftest import load_minilm

    tok, model = load_minilm()
    return tok, TextEncoder(model)


# ------------------------------------------------------------------------------------------------ BERT


@pytest.mark.parametrize("layout", ["padded", "unpadded"])
def test_bert_empty_prompts_and_prefixes_give_the_unprompted_model(bert, layout):
    inputs = _batch(LENGTHS[layout])
    reference = bert.bert(**inputs).last_hidden_state  # the model's own padded forward
    wrapped = PromptedEncoder(bert)
    d = reference.shape[-1]
    empty_tokens = torch.zeros(3, 0, d)
    for prompts in (None, empty_tokens, _prefixes([0, 1], 0, 3, d),
                    Prompts(tokens=empty_tokens, prefixes=_prefixes([1], 0, 3, d))):
        hidden, _, count = wrapped.hidden_states(inputs, prompts)
        assert count == 0
        _exact(hidden, reference)
        _exact(wrapped.prompted(inputs, prompts), TextEncoder(bert.bert, packed=False)(inputs))
    assert bert.packed  # the unprompted encoder's default: the packed forward, equal up to rounding
    torch.testing.assert_close(wrapped.prompted(inputs, empty_tokens), bert(inputs), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layout", ["padded", "unpadded"])
def test_bert_prefix_attention_is_attention_over_prefix_and_token_keys(bert, layout):
    inputs = _batch(LENGTHS[layout])
    sa = bert.bert.encoder.layer[1].attention.self
    seen = {}

    def hook(module, args, kwargs, output):
        seen.update(hidden=args[0], mask=kwargs.get("attention_mask"), out=output[0])

    handle = sa.register_forward_hook(hook, with_kwargs=True)
    try:
        prefixes = _prefixes([1], 3, 3, 32)
        PromptedEncoder(bert).hidden_states(inputs, prefixes)
    finally:
        handle.remove()
    # the three forms of transformers' mask: None without padding, boolean under sdpa, additive float under eager
    mask = seen["mask"]
    if layout == "unpadded":
        assert mask is None
    else:
        assert mask.dtype == (torch.bool if bert.bert.config._attn_implementation == "sdpa" else torch.float32)
    h, heads = seen["hidden"], sa.num_attention_heads
    with torch.no_grad():
        q, k, v = (_heads(layer(h), heads) for layer in (sa.query, sa.key, sa.value))
        pk, pv = (_heads(p, heads) for p in prefixes[1])
        expected = _attention_over(q, k, v, pk, pv, inputs["attention_mask"], sa.scaling)
    torch.testing.assert_close(seen["out"], expected.transpose(1, 2).reshape(h.shape), rtol=1e-5, atol=1e-6)
    assert sa._lorm_prefix is None  # cleared after the pass


def test_bert_padded_token_ids_do_not_reach_prompted_outputs(bert):
    base, changed = _batch(LENGTHS["padded"]), _batch(LENGTHS["padded"], pad_seed=9)
    assert not torch.equal(base["input_ids"], changed["input_ids"])
    wrapped = PromptedEncoder(bert)
    tokens = torch.randn(3, 4, 32, generator=_gen(3))
    for prompts in (tokens, _prefixes([0, 1], 3, 3, 32), Prompts(tokens, _prefixes([0], 2, 1, 32))):
        a, real, count = wrapped.hidden_states(base, prompts)
        b, _, _ = wrapped.hidden_states(changed, prompts)
        keep = real.bool() if count else base["attention_mask"].bool()
        keep[:, 1:1 + count] = True  # prompts are real positions too
        torch.testing.assert_close(a[keep], b[keep], rtol=1e-6, atol=1e-6)
        for pooling in ("cls", "mean") + (("prompts", "cls+prompts") if count else ()):
            torch.testing.assert_close(wrapped.prompted(base, prompts, pooling),
                                       wrapped.prompted(changed, prompts, pooling), rtol=1e-6, atol=1e-6)
        # and the prompts do act on the real tokens
        assert not torch.allclose(a[:, 0], bert.bert(**base).last_hidden_state[:, 0], atol=1e-4)


def test_bert_prompt_tokens_follow_cls_at_position_zero_with_a_mask_of_ones(bert):
    inputs = _batch(LENGTHS["padded"])
    emb = bert.bert.embeddings
    seen = {}
    handle = emb.register_forward_hook(lambda m, args, kwargs, out: seen.update(kwargs, out=out), with_kwargs=True)
    try:
        tokens = torch.randn(3, 2, 32, generator=_gen(4))
        wrapped = PromptedEncoder(bert)
        hidden, real, count = wrapped.hidden_states(inputs, tokens)
    finally:
        handle.remove()
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    words = emb.word_embeddings(ids)
    _exact(seen["inputs_embeds"], torch.cat((words[:, :1], tokens, words[:, 1:]), 1))
    assert seen["position_ids"].tolist() == [[0, 0, 0, 1, 2, 3, 4, 5, 6]] * 3
    assert seen.get("token_type_ids") is None  # the embedding layer's default: type 0
    with torch.no_grad():  # the prompts get CLS's position and type embedding and the LayerNorm
        expected = emb.LayerNorm(tokens + emb.position_embeddings.weight[0] + emb.token_type_embeddings.weight[0])
    torch.testing.assert_close(seen["out"][:, 1:3], expected)
    assert count == 2 and real.tolist() == torch.cat((mask[:, :1], torch.zeros(3, 2, dtype=torch.long),
                                                      mask[:, 1:]), 1).tolist()
    # the extended attention mask: equal to running BERT on the prompted embeddings with ones at the prompts
    full = torch.cat((mask[:, :1], torch.ones(3, 2, dtype=torch.long), mask[:, 1:]), 1)
    reference = bert.bert(inputs_embeds=seen["inputs_embeds"], position_ids=seen["position_ids"],
                          attention_mask=full).last_hidden_state
    _exact(hidden, reference)
    # poolings
    w = real.unsqueeze(-1).float()
    torch.testing.assert_close(wrapped.prompted(inputs, tokens, "mean"), (hidden * w).sum(1) / w.sum(1))
    torch.testing.assert_close(wrapped.prompted(inputs, tokens, "prompts"), hidden[:, 1:3].mean(1))
    torch.testing.assert_close(wrapped.prompted(inputs, tokens, "cls+prompts"), hidden[:, :3].mean(1))
    _exact(wrapped.prompted(inputs, tokens, "cls"), hidden[:, 0])


def test_key_mask_padding_keeps_none_and_attends_the_prefix():
    assert pad_key_mask(None, 3) is None
    boolean = torch.tensor([[[[True, False]]]])
    assert pad_key_mask(boolean, 2).tolist() == [[[[True, True, True, False]]]]
    additive = torch.tensor([[[[0.0, -1e9]]]])
    assert pad_key_mask(additive, 1).tolist() == [[[[0.0, 0.0, -1e9]]]]


def test_query_is_the_unprompted_feature_in_eval_mode_without_gradient():
    encoder = _tiny_bert("sdpa")  # hidden and attention dropout 0.1: train and eval mode differ
    inputs = _batch(LENGTHS["padded"])
    expected = encoder(inputs)

    class Provider(nn.Module):
        def __init__(self):
            super().__init__()
            self.tokens = nn.Parameter(torch.randn(1, 2, 32, generator=_gen(1)))

        def forward(self, query):
            self.query = query
            return self.tokens

    wrapped = PromptedEncoder(encoder, Provider(), pooling="prompts").train()
    query = wrapped.query(inputs)
    _exact(query, expected)
    assert not query.requires_grad and all(m.training for m in wrapped.modules())
    wrapped.requires_grad_(False)
    wrapped.prompt.tokens.requires_grad_(True)
    wrapped(inputs).sum().backward()
    _exact(wrapped.prompt.query, expected)
    assert wrapped.prompt.tokens.grad is not None and wrapped.prompt.tokens.grad.abs().sum() > 0


def test_minilm_inputs_embeds_path_equals_the_ids_path(minilm):
    tok, encoder = minilm
    enc = tok(["a dog", "the quick brown fox jumps over the lazy dog", "x y"], padding=True, return_tensors="pt")
    inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    embeds = {"inputs_embeds": encoder.bert.get_input_embeddings()(inputs["input_ids"]),
              "attention_mask": inputs["attention_mask"]}
    packed = encoder(inputs)
    encoder.packed = False
    try:
        padded = encoder(inputs)
    finally:
        encoder.packed = True
    _exact(encoder(embeds), padded)  # inputs_embeds always runs the padded forward
    positions = torch.arange(inputs["input_ids"].shape[1]).expand(3, -1)
    _exact(encoder({**embeds, "position_ids": positions}), padded)
    torch.testing.assert_close(encoder(embeds), packed, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        encoder.hidden_states({**embeds, "input_ids": inputs["input_ids"]})


def test_minilm_prompts_and_prefixes_keep_padding_out(minilm):
    tok, encoder = minilm
    enc = tok(["a red door", "the cat sat on the mat near the river"], padding=True, return_tensors="pt")
    inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    changed = {**inputs, "input_ids": torch.where(inputs["attention_mask"].bool(), inputs["input_ids"], 1037)}
    wrapped = PromptedEncoder(encoder)
    gen = _gen(7)
    prompts = Prompts(torch.randn(2, 5, 384, generator=gen),
                      {i: (torch.randn(2, 4, 384, generator=gen), torch.randn(2, 4, 384, generator=gen))
                       for i in range(5)})
    a = wrapped.prompted(inputs, prompts)
    torch.testing.assert_close(a, wrapped.prompted(changed, prompts), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(a, encoder(inputs), atol=1e-3)
    _exact(wrapped.prompted(inputs, torch.zeros(2, 0, 384)), wrapped.prompted(inputs, None))


# ------------------------------------------------------------------------------------------------ ViT


def test_vit_empty_prompts_and_prefixes_give_the_unprompted_model(vit):
    images = torch.randn(2, 3, 32, 32, generator=_gen(0))
    reference = vit(images)  # final-LayerNorm CLS token of timm's own forward
    wrapped = PromptedEncoder(vit)
    d = reference.shape[-1]
    assert all(b.attn.fused_attn for b in vit.vit.blocks)  # timm's own forward uses the same SDPA kernel
    for prompts in (None, torch.zeros(2, 0, d), _prefixes([0, 1], 0, 2, d),
                    Prompts(torch.zeros(1, 0, d), _prefixes([1], 0, 1, d))):
        _exact(wrapped.prompted(images, prompts), reference)


def test_vit_prefix_attention_is_attention_over_prefix_and_token_keys(vit):
    images = torch.randn(2, 3, 32, 32, generator=_gen(1))
    attn = vit.vit.blocks[1].attn
    seen = {}
    handle = attn.register_forward_hook(lambda m, args, out: seen.update(x=args[0], out=out))
    try:
        prefixes = _prefixes([1], 3, 2, 192)
        PromptedEncoder(vit).hidden_states(images, prefixes)
    finally:
        handle.remove()
    x, heads = seen["x"], attn.num_heads
    with torch.no_grad():
        q, k, v = (_heads(t, heads) for t in attn.qkv(x).chunk(3, dim=-1))
        pk, pv = (_heads(p, heads) for p in prefixes[1])
        ctx = _attention_over(q, k, v, pk, pv, torch.ones(x.shape[:2]), attn.scale)
        expected = attn.proj(ctx.transpose(1, 2).reshape(x.shape))
    torch.testing.assert_close(seen["out"], expected, rtol=1e-5, atol=1e-5)
    assert attn._lorm_prefix is None
    # unprompted use of the backbone afterwards is unchanged
    _exact(PromptedEncoder(vit).prompted(images), vit(images))


def test_vit_prompt_tokens_follow_cls_with_its_position_embedding(vit):
    images = torch.randn(2, 3, 32, 32, generator=_gen(2))
    net = vit.vit
    seen = {}
    handle = net.blocks[0].register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    try:
        tokens = torch.randn(2, 3, 192, generator=_gen(3))
        wrapped = PromptedEncoder(vit)
        hidden, real, count = wrapped.hidden_states(images, tokens)
    finally:
        handle.remove()
    with torch.no_grad():
        patches = net.patch_embed(images) + net.pos_embed[:, 1:]
        cls = net.cls_token + net.pos_embed[:, :1]
        expected = torch.cat((cls.expand(2, -1, -1), tokens + net.pos_embed[:, :1], patches), 1)
    torch.testing.assert_close(seen["x"], net.norm_pre(expected))
    assert count == 3 and real is None and hidden.shape == (2, 1 + 3 + 64, 192)
    torch.testing.assert_close(wrapped.prompted(images, tokens, "prompts"), hidden[:, 1:4].mean(1))
    torch.testing.assert_close(wrapped.prompted(images, tokens, "cls+prompts"), hidden[:, :4].mean(1))
    assert not torch.allclose(wrapped.prompted(images, tokens), vit(images), atol=1e-4)
    with pytest.raises(ValueError, match="for text backbones"):
        PromptedEncoder(vit, pooling="mean")


# ------------------------------------------------------------------------------------------------ FederatedFull


@pytest.fixture(scope="module")
def image_setup():
    from conftest import tiny_image_setup

    return tiny_image_setup("tiny-prompting", train_per_class=4, test_per_class=1, rounds=1, threads=1)


class SharedPrompt(nn.Module):
    """The same two prompt tokens for every sample."""

    def __init__(self, dim: int):
        super().__init__()
        self.tokens = nn.Parameter(0.02 * torch.randn(1, 2, dim, generator=_gen(11)))

    def forward(self, query: torch.Tensor) -> torch.Tensor:
        return self.tokens


def test_federated_full_trains_uploads_and_counts_only_trainable_parameters(image_setup, monkeypatch):
    from lorm.config import method_config
    from lorm.methods.base import RunContext
    from lorm.methods.fedavg import FedAvg
    from lorm.models.backbones import build_classifier
    import lorm.methods.full as full

    class PromptFedAvg(FedAvg):
        def attach_modules(self):
            dim = self.model.head.in_features
            self.model.encoder = PromptedEncoder(self.model.encoder, SharedPrompt(dim), pooling="prompts")

        def trainable(self, name):
            return name.startswith(("encoder.prompt.", "head."))

    cfg, train, ranges, clients, num_classes = image_setup
    cfg = method_config(copy.deepcopy(cfg), "fedavg")
    model = build_classifier(cfg["model"], num_classes, generator=generator(0, 0), lora=False)
    ctx = RunContext(model, train, cfg, Runtime.from_config(cfg["runtime"], 4), 0, ranges, clients)
    algo = PromptFedAvg(ctx)
    trainable = {"encoder.prompt.tokens", "head.weight", "head.bias"}
    named = dict(model.named_parameters())
    assert set(algo.params) == set(algo.global_params) == trainable
    assert {n for n, p in named.items() if p.requires_grad} == trainable
    frozen = {n: p.detach().clone() for n, p in named.items() if n not in trainable}
    assert len(frozen) > 20 and all(n.startswith("encoder.backbone.vit.") for n in frozen)
    start = {n: p.clone() for n, p in algo.global_params.items()}

    optimised = []
    real_train = full.train_local

    def recording_train(model, data, indices, groups, **kw):
        optimised.extend(p for g in groups for p in g["params"])
        return real_train(model, data, indices, groups, **kw)

    monkeypatch.setattr(full, "train_local", recording_train)
    state = algo.broadcast(0, 0)
    uploads = [algo.client_update(k, 0, 0, state) for k in range(2)]
    assert {id(p) for p in optimised} == {id(named[n]) for n in trainable} and len(optimised) == 2 * 3
    size = sum(named[n].numel() for n in trainable)
    assert payload_bytes(state) == 4 * size
    for upload in uploads:
        assert set(upload["params"]) == trainable
        assert payload_bytes(upload) == 4 * size + 8  # the ledger counts exactly this
    algo.aggregate(0, 0, uploads)
    algo.deploy()
    assert set(algo.global_params) == trainable
    for n in trainable:
        assert not torch.equal(algo.global_params[n], start[n]), n
    for n, p in model.named_parameters():
        if n in frozen:
            _exact(p, frozen[n])
