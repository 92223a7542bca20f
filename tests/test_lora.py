import math
import os
import re

import pytest
from conftest import load_minilm
import torch
import torch.nn.functional as F
from torch import nn

from lorm.models.lora import (
    BERT_TARGETS,
    VIT_TARGETS,
    LoRALinear,
    fold_lora,
    get_factors,
    inject_lora,
    lora_layers,
    set_factors,
    set_trainable,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _layer(d_in=7, d_out=5, r=3, seed=0, nonzero=True) -> LoRALinear:
    torch.manual_seed(seed)
    layer = LoRALinear(nn.Linear(d_in, d_out), r, generator=_gen(seed))
    if nonzero:
        with torch.no_grad():
            layer.lora_A.normal_(generator=_gen(seed + 100))
            layer.lora_B.normal_(generator=_gen(seed + 200))
    return layer


def _tiny_mlp(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 3))


@pytest.fixture(scope="module")
def vit():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=4, num_classes=10, depth=2
    ).eval()


@pytest.fixture(scope="module")
def minilm():
    tok, model = load_minilm()
    return tok, model


# ---------------------------------------------------------------------- LoRALinear
def test_forward_equals_base_plus_lora_path():
    layer = _layer()
    x = torch.randn(4, 2, 7)
    A, B = layer.lora_A, layer.lora_B
    expected = layer.base(x) + (x @ A.T) @ B.T
    out = layer(x)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)
    dense = F.linear(x, layer.base.weight + B @ A, layer.base.bias)
    torch.testing.assert_close(out, dense, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.delta_weight(), B @ A)
    assert (layer.in_features, layer.out_features, layer.rank) == (7, 5, 3)
    assert not layer.base.weight.requires_grad and not layer.base.bias.requires_grad
    assert layer.lora_A.requires_grad and layer.lora_B.requires_grad


def test_rank_validation():
    with pytest.raises(ValueError):
        LoRALinear(nn.Linear(3, 3), 0)
    with pytest.raises(TypeError):
        LoRALinear(nn.Conv1d(3, 3, 1), 1)


def test_reset_lora_init_and_determinism():
    d_in, d_out, r = 50, 20, 4
    base = nn.Linear(d_in, d_out)
    layer = LoRALinear(base, r, generator=_gen(1))
    bound = 1 / math.sqrt(d_in)
    assert torch.all(layer.lora_B == 0)
    assert layer.lora_A.abs().max() <= bound
    assert layer.lora_A.abs().max() > 0.5 * bound  # actually spread over the range
    a1 = layer.lora_A.detach().clone()
    layer.reset_lora(_gen(1))
    torch.testing.assert_close(layer.lora_A.detach(), a1, atol=0, rtol=0)
    layer.reset_lora(_gen(2))
    assert not torch.equal(layer.lora_A.detach(), a1)
    # independent of the global RNG
    torch.manual_seed(123)
    l2 = LoRALinear(nn.Linear(d_in, d_out), r, generator=_gen(1))
    torch.testing.assert_close(l2.lora_A.detach(), a1, atol=0, rtol=0)
    # B kaiming uses fan_in = r
    layer.reset_lora(_gen(3), a_init="zeros", b_init="kaiming")
    assert torch.all(layer.lora_A == 0)
    assert layer.lora_B.abs().max() <= 1 / math.sqrt(r)
    assert layer.lora_B.abs().max() > 0
    with pytest.raises(ValueError):
        layer.reset_lora(_gen(0), a_init="normal")


@pytest.mark.parametrize("train_A", [False, True])
def test_set_trainable_one_step(train_A):
    torch.manual_seed(0)
    model = _tiny_mlp()
    layers = inject_lora(model, [r"0", r"2"], rank=2, generator=_gen(0))
    for layer in layers.values():  # B nonzero so that A gets a gradient
        with torch.no_grad():
            layer.lora_B.normal_(generator=_gen(5))
    set_trainable(model, A=train_A, B=not train_A)
    head = model[4]
    assert head.weight.requires_grad  # non-LoRA params untouched
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    F.cross_entropy(model(x), y).backward()
    opt.step()
    after = dict(model.named_parameters())
    for name in layers:
        a, b = f"{name}.lora_A", f"{name}.lora_B"
        w0, bias = f"{name}.base.weight", f"{name}.base.bias"
        trained, frozen = (a, b) if train_A else (b, a)
        assert not torch.equal(after[trained].detach(), before[trained])
        assert torch.equal(after[frozen].detach(), before[frozen])
        assert after[frozen].grad is None
        for n in (w0, bias):
            assert torch.equal(after[n].detach(), before[n])
            assert after[n].grad is None
    assert not torch.equal(after["4.weight"].detach(), before["4.weight"])


def test_inject_lora_vit(vit):
    import copy

    model = copy.deepcopy(vit)
    x = torch.randn(2, 3, 32, 32)
    ref = model(x)
    layers = inject_lora(model, VIT_TARGETS, rank=4, generator=_gen(0))
    expected = [f"blocks.{i}.{s}" for i in range(2) for s in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")]
    assert list(layers) == expected
    assert list(lora_layers(model)) == expected
    d = 192
    shapes = {"attn.qkv": (3 * d, d), "attn.proj": (d, d), "mlp.fc1": (4 * d, d), "mlp.fc2": (d, 4 * d)}
    for name, layer in layers.items():
        d_out, d_in = shapes[name.split(".", 2)[2]]
        assert layer.lora_A.shape == (4, d_in) and layer.lora_B.shape == (d_out, 4)
        assert model.get_submodule(name) is layer
    # B = 0: the injected model reproduces the base model; head and others not frozen by inject_lora
    torch.testing.assert_close(model(x), ref, atol=1e-6, rtol=1e-6)
    assert model.head.weight.requires_grad
    with pytest.raises(ValueError, match="already carry LoRA"):
        inject_lora(model, VIT_TARGETS, rank=4)


def test_inject_lora_nonmatching_pattern_raises():
    model = _tiny_mlp()
    with pytest.raises(ValueError, match=r"match no nn\.Linear") as info:
        inject_lora(model, [r"0", r"blocks\.\d+\.attn\.qkv"], rank=2)
    assert "'0'" in str(info.value)  # lists available names
    assert lora_layers(model) == {}  # nothing replaced on failure
    with pytest.raises(ValueError):
        inject_lora(model, [r"1"], rank=2)  # a GELU, not a Linear


def test_inject_lora_minilm(minilm):
    import copy

    tok, base = minilm
    model = copy.deepcopy(base)
    batch = tok(["a short sentence", "another, somewhat longer sentence here"], padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = model(**batch).last_hidden_state
    layers = inject_lora(model, BERT_TARGETS, rank=2, generator=_gen(0))
    suffixes = [
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    ]
    expected = [f"encoder.layer.{i}.{s}" for i in range(6) for s in suffixes]
    assert list(layers) == expected
    assert len(layers) == 36
    assert not any("pooler" in n for n in layers)
    assert isinstance(model.pooler.dense, nn.Linear) and not isinstance(model.pooler.dense, LoRALinear)
    for name, layer in layers.items():
        assert layer.in_features == (1536 if name.endswith(".output.dense") and "attention" not in name else 384)
    with torch.no_grad():
        out = model(**batch).last_hidden_state
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_bert_targets_fullmatch_only():
    names = [
        "encoder.layer.0.attention.output.dense",
        "encoder.layer.0.output.dense",
        "pooler.dense",
        "encoder.layer.0.attention.output.LayerNorm",
        "x.encoder.layer.0.output.dense",
    ]
    hit = [n for n in names if any(re.fullmatch(p, n) for p in BERT_TARGETS)]
    assert hit == names[:2]


# ---------------------------------------------------------------------- factors
def test_get_set_factors_roundtrip_and_errors():
    model = _tiny_mlp()
    inject_lora(model, [r"0", r"2"], rank=2, generator=_gen(0))
    f = get_factors(model)
    assert set(f) == {"0", "2"} and set(f["0"]) == {"A", "B"}
    assert not f["0"]["A"].requires_grad
    f["0"]["A"].add_(1.0)  # a clone: the model is not affected
    assert not torch.equal(model[0].lora_A.detach(), f["0"]["A"])
    new = {n: {"A": torch.randn_like(v["A"]), "B": torch.randn_like(v["B"])} for n, v in f.items()}
    set_factors(model, new, which=("B",))
    torch.testing.assert_close(model[2].lora_B.detach(), new["2"]["B"])
    assert not torch.equal(model[2].lora_A.detach(), new["2"]["A"])
    set_factors(model, new)
    torch.testing.assert_close(model[2].lora_A.detach(), new["2"]["A"])
    assert model[2].lora_A.requires_grad  # still a trainable parameter
    bad = {n: dict(v) for n, v in new.items()}
    bad["2"]["A"] = torch.zeros(3, 8)
    with pytest.raises(ValueError, match=r"2\.A.*\(3, 8\).*\(2, 8\)"):
        set_factors(model, bad)
    with pytest.raises(KeyError):
        set_factors(model, {"0": new["0"]})


# ---------------------------------------------------------------------- delta and folding
def test_set_delta_cached_once():
    layer = _layer(nonzero=False)
    x = torch.randn(3, 7)
    delta = torch.randn(5, 7, generator=_gen(9))
    w0 = layer.base.weight.detach().clone()
    layer.set_delta(delta)
    assert layer.has_delta
    torch.testing.assert_close(layer(x), F.linear(x, w0 + delta, layer.base.bias), atol=1e-6, rtol=1e-6)
    cached = layer.effective_weight()
    ptr = cached.data_ptr()
    out1 = layer(x)
    # If W0 + delta were recomputed per forward, changing W0 would change the output.
    with torch.no_grad():
        layer.base.weight.zero_()
    out2 = layer(x)
    assert layer.effective_weight() is cached and cached.data_ptr() == ptr
    torch.testing.assert_close(out1, out2, atol=0, rtol=0)
    with torch.no_grad():
        layer.base.weight.copy_(w0)
    # LoRA path is kept on top of the delta
    with torch.no_grad():
        layer.lora_A.normal_(generator=_gen(1))
        layer.lora_B.normal_(generator=_gen(2))
    BA = layer.lora_B @ layer.lora_A
    torch.testing.assert_close(layer(x), F.linear(x, w0 + delta + BA, layer.base.bias), atol=1e-5, rtol=1e-5)
    assert "_w_eff" not in layer.state_dict()
    layer.set_delta(None)
    assert not layer.has_delta
    torch.testing.assert_close(layer(x), F.linear(x, w0 + BA, layer.base.bias), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="delta has shape"):
        layer.set_delta(torch.zeros(7, 5))


@pytest.mark.parametrize("with_delta", [False, True])
def test_fold_lora_reproduces_outputs_mlp(with_delta):
    model = _tiny_mlp()
    layers = inject_lora(model, [r"0", r"2"], rank=3, generator=_gen(0))
    for i, layer in enumerate(layers.values()):
        with torch.no_grad():
            layer.lora_B.normal_(generator=_gen(10 + i))
        if with_delta:
            layer.set_delta(0.1 * torch.randn(layer.out_features, layer.in_features, generator=_gen(20 + i)))
    x = torch.randn(10, 6)
    with torch.no_grad():
        ref = model(x)
    out_model = fold_lora(model)
    assert out_model is model
    assert lora_layers(model) == {}
    assert type(model[0]) is nn.Linear and type(model[2]) is nn.Linear
    assert not model[0].weight.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("with_delta", [False, True])
def test_fold_lora_reproduces_outputs_vit(vit, with_delta):
    import copy

    model = copy.deepcopy(vit)
    layers = inject_lora(model, VIT_TARGETS, rank=4, generator=_gen(0))
    for i, layer in enumerate(layers.values()):
        with torch.no_grad():
            layer.lora_B.normal_(std=0.02, generator=_gen(10 + i))
        if with_delta:
            g = _gen(20 + i)
            layer.set_delta(0.02 * torch.randn(layer.out_features, layer.in_features, generator=g))
    x = torch.randn(2, 3, 32, 32, generator=_gen(7))
    with torch.no_grad():
        ref = model(x)
        fold_lora(model)
        out = model(x)
    assert lora_layers(model) == {}
    assert type(model.blocks[0].attn.qkv) is nn.Linear
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_fold_single_layer():
    layer = _layer()
    x = torch.randn(4, 7)
    folded = fold_lora(layer)
    assert type(folded) is nn.Linear
    torch.testing.assert_close(folded(x), layer(x), atol=1e-5, rtol=1e-5)
