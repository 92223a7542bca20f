import gc
import weakref

import pytest
from conftest import load_minilm
import torch
from torch import nn

from lorm.models.lora import BERT_TARGETS, inject_lora, lora_layers
from lorm.models.stats import InputStatistics


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class _Capture:
    """Independent capture of module inputs (the test's own pre-hooks)."""

    def __init__(self, modules):
        self.inputs = {n: [] for n in modules}
        self.handles = [m.register_forward_pre_hook(self._hook(n)) for n, m in modules.items()]

    def _hook(self, name):
        def h(module, args):
            self.inputs[name].append(args[0].detach().clone())

        return h

    def remove(self):
        for h in self.handles:
            h.remove()


def _tiny_tokens_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 6), nn.GELU(), nn.Linear(6, 4))


@pytest.fixture(scope="module")
def minilm():
    tok, model = load_minilm()
    inject_lora(model, BERT_TARGETS, rank=2, generator=_gen(0))
    for layer in lora_layers(model).values():
        with torch.no_grad():
            layer.lora_B.normal_(std=0.01, generator=_gen(1))
    return tok, model


def test_full_and_diag_match_captured_inputs():
    model = _tiny_tokens_model()
    mods = {"first": model[0], "last": model[2]}
    cap = _Capture(mods)
    with InputStatistics(mods, kinds="full") as full, torch.no_grad():
        for i in range(3):
            model(torch.randn(4, 7, 5, generator=_gen(i)))  # (batch, tokens, d): flattened
    with InputStatistics(mods, kinds={"first": "diag", "last": "diag"}) as diag:
        for i in range(3):
            model(torch.randn(4, 7, 5, generator=_gen(i)))  # grad mode on: still fine
    cap.remove()
    res_full, res_diag = full.results(), diag.results()
    for name in mods:
        X = torch.cat([x.reshape(-1, x.shape[-1]) for x in cap.inputs[name][:3]]).double()
        G = X.T @ X
        d_in = X.shape[1]
        assert res_full[name].shape == (d_in, d_in) and res_full[name].dtype == torch.float32
        assert res_diag[name].shape == (d_in,) and res_diag[name].dtype == torch.float32
        torch.testing.assert_close(res_full[name].double(), G, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(res_diag[name].double(), torch.diagonal(G), atol=1e-4, rtol=1e-5)
        assert full.num_tokens[name] == diag.num_tokens[name] == 3 * 4 * 7
        assert not res_diag[name].requires_grad
    # results are clones
    res_full["first"].zero_()
    assert full.results()["first"].abs().sum() > 0
    full.reset()
    assert full.num_tokens["first"] == 0
    assert torch.all(full.results()["first"] == 0)


def test_mixed_kinds_and_validation():
    model = _tiny_tokens_model()
    mods = {"first": model[0], "last": model[2]}
    with InputStatistics(mods, kinds={"first": "full", "last": "diag"}) as st:
        model(torch.randn(3, 5))
    r = st.results()
    assert r["first"].shape == (5, 5) and r["last"].shape == (6,)
    with pytest.raises(ValueError, match="kind"):
        InputStatistics(mods, kinds="triangular")
    with pytest.raises(ValueError, match="missing"):
        InputStatistics(mods, kinds={"first": "full"})
    # a module that saw nothing: zeros of the right size
    st2 = InputStatistics(mods, kinds="full")
    assert st2.results()["last"].shape == (6, 6)


def test_hooks_removed_after_context_and_on_exception():
    model = _tiny_tokens_model()
    mods = {"first": model[0], "last": model[2]}
    with InputStatistics(mods) as st:
        assert len(model[0]._forward_pre_hooks) == 1
        model(torch.randn(2, 5))
    assert len(model[0]._forward_pre_hooks) == 0 and len(model[2]._forward_pre_hooks) == 0
    n = st.num_tokens["first"]
    model(torch.randn(2, 5))  # outside the context: nothing accumulated
    assert st.num_tokens["first"] == n == 2
    with pytest.raises(RuntimeError, match="boom"):
        with InputStatistics(mods):
            model(torch.randn(2, 5))
            raise RuntimeError("boom")
    assert len(model[0]._forward_pre_hooks) == 0 and len(model[2]._forward_pre_hooks) == 0


def test_no_reference_to_activations():
    model = _tiny_tokens_model()
    mods = {"first": model[0]}
    with InputStatistics(mods, kinds="full") as st, torch.no_grad():
        x = torch.randn(4, 5)
        ref = weakref.ref(x)
        model(x)
        del x
        gc.collect()
        assert ref() is None


def test_low_precision_inputs_accumulate_in_float32():
    # fp16 inputs whose sum of squares (~1e7) overflows fp16 (max 65504)
    lin = nn.Linear(4, 3).half()
    x = torch.full((1000, 4), 100.0, dtype=torch.float16)
    with InputStatistics({"l": lin}, kinds="full") as full, InputStatistics({"l": lin}, kinds="diag") as diag:
        with torch.no_grad():
            lin(x)
    G = x.double().T @ x.double()
    for st, expected in ((full, G), (diag, torch.diagonal(G))):
        r = st.results()["l"]
        assert r.dtype == torch.float32
        assert torch.isfinite(r).all()
        torch.testing.assert_close(r.double(), expected, atol=0, rtol=1e-6)


def test_autocast_bf16_inputs_gram_in_float32():
    model = _tiny_tokens_model()
    mods = {"last": model[2]}
    cap = _Capture(mods)
    with InputStatistics(mods, kinds="full") as st, torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(torch.randn(64, 3, 5, generator=_gen(0)))
    cap.remove()
    x = cap.inputs["last"][0]
    assert x.dtype == torch.bfloat16  # the hooked input really is low precision
    X = x.reshape(-1, x.shape[-1]).double()
    r = st.results()["last"]
    assert r.dtype == torch.float32
    # a bf16 matmul would be off by ~1e-2 relative; fp32 accumulation is exact to ~1e-6
    torch.testing.assert_close(r.double(), X.T @ X, atol=1e-4, rtol=1e-5)


def test_token_mask_shapes():
    model = _tiny_tokens_model()
    mods = {"first": model[0]}
    x = torch.randn(2, 4, 5, generator=_gen(0))
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    with InputStatistics(mods, kinds="full") as st:
        st.set_token_mask(mask)
        model(x)
        assert st.num_tokens["first"] == 4
        st.set_token_mask(torch.ones(2, 5))
        with pytest.raises(ValueError, match="does not match"):
            model(x)
        model(torch.randn(3, 5))  # 2-D input: mask ignored
        assert st.num_tokens["first"] == 7
        st.set_token_mask(None)
        model(x)
        assert st.num_tokens["first"] == 15
    kept = x[mask.bool()].double()
    # first (masked) batch + 2-D batch + unmasked batch; check only that the masked part is right:
    st2 = InputStatistics(mods, kinds="full")
    with st2:
        st2.set_token_mask(mask)
        model(x)
    torch.testing.assert_close(st2.results()["first"].double(), kept.T @ kept, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError):
        st2.set_token_mask(torch.ones(4))


def test_minilm_padding_excluded(minilm):
    tok, model = minilm
    sentences = ["a cat", "the quick brown fox jumps over the lazy dog", "hello there, world"]
    batch = tok(sentences, padding=True, return_tensors="pt")
    mask = batch["attention_mask"]
    assert (mask == 0).any()  # there is padding
    layers = lora_layers(model)
    names = ["encoder.layer.0.attention.self.query", "encoder.layer.3.output.dense", "encoder.layer.5.output.dense"]
    mods = {n: layers[n] for n in names}
    cap = _Capture(mods)
    with InputStatistics(mods, kinds="full") as full, InputStatistics(mods, kinds="diag") as diag:
        full.set_token_mask(mask)
        diag.set_token_mask(mask)
        with torch.no_grad():
            model(**batch)
    cap.remove()
    # the same sentences one by one, without padding
    with InputStatistics(mods, kinds="full") as single, torch.no_grad():
        for s in sentences:
            model(**tok([s], return_tensors="pt"))
    n_valid = int(mask.sum())
    for name in names:
        x = cap.inputs[name][0]
        assert x.shape[:2] == mask.shape
        X = x[mask.bool()].double()
        G = X.T @ X
        Xall = x.reshape(-1, x.shape[-1]).double()
        assert not torch.allclose(Xall.T @ Xall, G, rtol=1e-3)  # padding would have mattered
        torch.testing.assert_close(full.results()[name].double(), G, atol=1e-3, rtol=1e-5)
        torch.testing.assert_close(diag.results()[name].double(), torch.diagonal(G), atol=1e-3, rtol=1e-5)
        assert full.num_tokens[name] == diag.num_tokens[name] == single.num_tokens[name] == n_valid
        torch.testing.assert_close(single.results()[name].double(), G, atol=1e-2, rtol=1e-4)
