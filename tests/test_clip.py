"""CLIP backbone (KnOTS spec 2, 8.1-8.3, 9.2): tiny random-init CLIP offline, LoRA targets, text heads, joint
label space, Hits@k, and the fast offline failure of clip-vit-b32.  Nothing here downloads."""

import time

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")

from lorm.models import backbones  # noqa: E402
from lorm.models.backbones import BackboneError, BackboneSpec, Classifier, build_classifier  # noqa: E402
from lorm.models.clip import (  # noqa: E402
    CLIP_PREFIX,
    CLIP_TEMPLATES,
    CLIP_VISION_TARGETS,
    GENERIC_TEMPLATES,
    TINY_CLIP,
    backbone_specs,
    build_clip_text,
    build_clip_tokenizer,
    build_clip_vision,
    hits_at_k,
    install_head,
    joint_head,
    load_clip_model,
    templates_for,
    text_head,
    tiny_clip_tokenizer,
)
from lorm.models.lora import LoRALinear, inject_lora, lora_layers  # noqa: E402

TINY = {"backbone": "clip-tiny-test", "lora_rank": 2}
S = TINY_CLIP["image_size"]
D = TINY_CLIP["projection_dim"]
L = TINY_CLIP["num_hidden_layers"]


@pytest.fixture(scope="module")
def clip():
    return load_clip_model(TINY)


@pytest.fixture(scope="module")
def tok():
    return tiny_clip_tokenizer()


def _images(n=3, seed=0):
    return torch.randn(n, 3, S, S, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------- vision tower
def test_tiny_clip_builds_offline_unit_norm_embeddings():
    encoder, dim = build_clip_vision(TINY)
    assert dim == D
    assert not any(p.requires_grad for p in encoder.parameters())
    with torch.no_grad():
        z = encoder(_images())
    assert z.shape == (3, D)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(3))


def test_tiny_init_is_seeded_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, _ = build_clip_vision(TINY)
    assert torch.equal(state, torch.get_rng_state())
    b, _ = build_clip_vision(TINY)
    c, _ = build_clip_vision({**TINY, "init_seed": 1})
    x = _images()
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        assert not torch.allclose(a(x), c(x))


def test_embedding_is_normalised_projection_of_pooled_cls(clip):
    encoder, _ = build_clip_vision(TINY, clip_model=clip)
    x = _images(2)
    with torch.no_grad():
        out = clip.get_image_features(pixel_values=x)
        ref = out if isinstance(out, torch.Tensor) else out.pooler_output  # tensor in 4.x, ModelOutput in 5.x
        torch.testing.assert_close(encoder(x), F.normalize(ref, dim=-1))


def test_lora_targets_vision_tower_only(clip):
    names = [n for n, m in clip.named_modules() if isinstance(m, torch.nn.Linear)]
    assert any(n.startswith("text_model.") and n.endswith("q_proj") for n in names)  # the text tower has them too
    model = load_clip_model(TINY)
    layers = inject_lora(model, ["vision_model\\." + t for t in CLIP_VISION_TARGETS], rank=2,
                         generator=torch.Generator().manual_seed(0))
    assert len(layers) == 4 * L
    assert all(n.startswith("vision_model.encoder.layers.") for n in layers)
    assert not any("text_model" in n or "mlp" in n or "projection" in n for n in lora_layers(model))
    assert {n.rsplit(".", 1)[1] for n in layers} == {"q_proj", "k_proj", "v_proj", "out_proj"}
    h = TINY_CLIP["hidden_size"]
    assert all(tuple(m.base.weight.shape) == (h, h) for m in layers.values())


def test_spec_and_build_classifier_integration(monkeypatch):
    specs = backbone_specs()
    assert set(specs) == {"clip-vit-b32", "clip-tiny-test"}
    spec = specs["clip-tiny-test"]
    assert isinstance(spec, BackboneSpec) and spec.modality == "image" and spec.image_size == S
    assert spec.prefix == CLIP_PREFIX and spec.lora_targets == CLIP_VISION_TARGETS
    assert specs["clip-vit-b32"].image_size == 224
    from lorm.models import clip as clip_module

    assert set(clip_module.BACKBONE_SPECS) == set(specs)
    monkeypatch.setitem(backbones.BACKBONES, "clip-tiny-test", spec)  # what backbones.py will register
    model = build_classifier(TINY, num_classes=5, generator=torch.Generator().manual_seed(0))
    assert isinstance(model, Classifier)
    names = list(lora_layers(model))
    assert len(names) == 4 * L
    assert all(n.startswith("encoder.vision_model.encoder.layers.") for n in names)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(n.startswith("head.") or ".lora_" in n for n in trainable)
    assert model(_images(2)).shape == (2, 5)


def test_lora_with_zero_B_leaves_outputs_unchanged():
    encoder, _ = build_clip_vision(TINY)
    x = _images()
    with torch.no_grad():
        before = encoder(x)
        layers = inject_lora(encoder, ["vision_model\\." + t for t in CLIP_VISION_TARGETS], rank=3,
                             generator=torch.Generator().manual_seed(1))
        assert all(isinstance(m, LoRALinear) and m.lora_B.abs().sum() == 0 for m in layers.values())
        assert torch.equal(encoder(x), before)
        for m in layers.values():  # sanity: a non-zero B does change the output
            m.lora_B.normal_(generator=torch.Generator().manual_seed(2))
        assert not torch.allclose(encoder(x), before)


# ---------------------------------------------------------------------- tokenizer and text head
def test_tiny_tokenizer_matches_tiny_text_config(clip, tok):
    batch = tok(["A photo of a Cat.", "hi"], padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids[0, 0] == TINY_CLIP["bos_token_id"] and ids[0, -1] == TINY_CLIP["eos_token_id"]
    assert int(ids.max()) < clip.config.text_config.vocab_size
    assert clip.config.text_config.eos_token_id == tok.eos_token_id
    assert mask[1].sum() == 4  # bos, h, i, eos
    assert tok(["A"])["input_ids"] == tok(["a"])["input_ids"]  # CLIP lower-cases
    assert build_clip_tokenizer(TINY)(["x"])["input_ids"] == tok(["x"])["input_ids"]


def test_text_head_rows_have_norm_logit_scale(clip, tok):
    classes = ["cat", "dog", "car"]
    head = text_head(clip, tok, classes, CLIP_TEMPLATES["stanford_cars"])
    assert head.shape == (3, D) and not head.requires_grad
    torch.testing.assert_close(head.norm(dim=-1), torch.full((3,), 100.0))
    unit = text_head(clip, tok, classes, ["a photo of a {}."], logit_scale=1.0)
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(3))


def test_text_head_averages_normalised_template_embeddings(clip, tok):
    tower = build_clip_text(TINY, clip_model=clip)
    classes = ["zero", "one"]
    t1, t2 = "a photo of a {}.", "a drawing of the {}."
    one = text_head(tower, tok, classes, [t1])
    twice = text_head(tower, tok, classes, [t1, t1])
    torch.testing.assert_close(one, twice)
    both = text_head(clip, tok, classes, [t1, lambda c: f"a drawing of the {c}."], batch_size=3)  # callable too
    with torch.no_grad():
        e = [F.normalize(tower(**tok([t.format(c) for c in classes], padding=True, return_tensors="pt")), dim=-1)
             for t in (t1, t2)]
    torch.testing.assert_close(both, 100.0 * F.normalize(e[0] + e[1], dim=-1))
    assert not torch.allclose(one, both)


def test_installed_head_gives_scaled_cosine_logits(clip, tok, monkeypatch):
    monkeypatch.setitem(backbones.BACKBONES, "clip-tiny-test", backbone_specs()["clip-tiny-test"])
    model = build_classifier(TINY, num_classes=3, generator=torch.Generator().manual_seed(0))
    head = text_head(load_clip_model(TINY), tok, ["a", "b", "c"], ["a photo of a {}."])
    install_head(model, head)
    assert not model.head.weight.requires_grad and torch.equal(model.head.bias, torch.zeros(3))
    x = _images(2)
    with torch.no_grad():
        cos = F.normalize(model.features(x), dim=-1) @ F.normalize(head, dim=-1).T
        torch.testing.assert_close(model(x), 100.0 * cos)


def test_template_counts_match_spec():
    counts = {"stanford_cars": 8, "dtd": 8, "gtsrb": 3, "mnist": 1, "eurosat": 3, "resisc45": 18, "sun397": 2,
              "svhn": 1}
    assert {k: len(v) for k, v in CLIP_TEMPLATES.items()} == counts
    for v in list(CLIP_TEMPLATES.values()) + [GENERIC_TEMPLATES]:
        assert len(set(v)) == len(v) and all(t.count("{}") == 1 for t in v)
    assert CLIP_TEMPLATES["mnist"] == CLIP_TEMPLATES["svhn"]
    assert templates_for("Cars") == CLIP_TEMPLATES["stanford_cars"]
    assert templates_for("RESISC-45") == CLIP_TEMPLATES["resisc45"]
    assert templates_for("fashion_mnist") == GENERIC_TEMPLATES
    assert templates_for("wordnet", fallback=["{}"]) == ["{}"]


# ---------------------------------------------------------------------- joint head and Hits@k
def _rows(n, d=4, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_joint_head_union_with_shared_digits():
    heads = {"eurosat": _rows(10, seed=1), "mnist": _rows(10, seed=2), "resisc45": _rows(45, seed=3),
             "svhn": _rows(10, seed=4)}
    j = joint_head(heads)  # default: SVHN shares MNIST's digits
    assert j.num_labels == 65 and j.shared == {"svhn": "mnist"}
    assert j.offsets == {"eurosat": 0, "mnist": 10, "resisc45": 20}
    assert torch.equal(j.index["mnist"], torch.arange(10, 20))
    assert torch.equal(j.index["svhn"], j.index["mnist"])
    assert torch.equal(j.index["resisc45"], torch.arange(20, 65))
    assert torch.equal(j.weight[10:20], heads["mnist"]) and torch.equal(j.slice("resisc45"), heads["resisc45"])
    assert torch.equal(j.to_joint("svhn", [0, 9]), torch.tensor([10, 19]))
    assert j.owner[12] == ("mnist", 2) and j.owner[20] == ("resisc45", 0)
    # identical names in different datasets stay separate: EuroSAT "forest" and RESISC45 "forest" are 2 labels
    assert j.to_joint("eurosat", [1]) != j.to_joint("resisc45", [14])
    separate = joint_head(heads, shared={})
    assert separate.num_labels == 75 and torch.equal(separate.index["svhn"], torch.arange(65, 75))


def test_joint_head_rejects_bad_sharing():
    with pytest.raises(ValueError, match="cannot share"):
        joint_head({"mnist": _rows(10), "svhn": _rows(9)}, shared={"svhn": "mnist"})
    with pytest.raises(ValueError, match="without a head"):
        joint_head({"svhn": _rows(10)}, shared={"svhn": "mnist"})
    assert joint_head({"svhn": _rows(10)}).num_labels == 10  # default sharing only when both are present


def test_hits_at_k_handmade():
    scores = torch.tensor([
        [0.9, 0.1, 0.0, 0.0],  # label 0: rank 0
        [0.5, 0.4, 0.3, 0.2],  # label 2: rank 2
        [0.1, 0.2, 0.3, 0.4],  # label 0: rank 3
        [0.0, 0.7, 0.7, 0.1],  # label 2, tied with label 1: rank 0 (ties favour the true label)
    ])
    labels = torch.tensor([0, 2, 0, 2])
    assert hits_at_k(scores, labels, ks=(1, 2, 3, 4, 10)) == {1: 0.5, 2: 0.5, 3: 0.75, 4: 1.0, 10: 1.0}
    assert hits_at_k(scores, labels) == {1: 0.5, 3: 0.75, 5: 1.0, 10: 1.0}
    with pytest.raises(ValueError):
        hits_at_k(scores, torch.tensor([0, 1, 2, 4]))


# ---------------------------------------------------------------------- clip-vit-b32 offline
@pytest.fixture
def empty_offline_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_clip_b32_offline_without_cache_fails_fast(empty_offline_hub):
    for build in (build_clip_vision, build_clip_tokenizer):
        start = time.perf_counter()
        with pytest.raises(BackboneError) as info:
            build({"backbone": "clip-vit-b32"})
        assert time.perf_counter() - start < 5.0
        msg = str(info.value)
        assert "\n" not in msg and "HF_HUB_OFFLINE" in msg and "model.weights" in msg
        assert str(empty_offline_hub / "hf") in msg
    with pytest.raises(BackboneError, match="model.weights"):
        build_clip_vision({"backbone": "clip-vit-b32", "weights": str(empty_offline_hub / "missing")})


def test_clip_b32_loads_from_local_weights_directory(empty_offline_hub, clip, tok):
    """The clip-vit-b32 code path with model.weights: a saved (tiny) CLIPModel + tokenizer directory."""
    path = empty_offline_hub / "clip"
    clip.save_pretrained(path)
    tok.save_pretrained(path)
    cfg = {"backbone": "clip-vit-b32", "weights": str(path)}
    encoder, dim = build_clip_vision(cfg)
    ref, _ = build_clip_vision(TINY, clip_model=clip)
    x = _images(2)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), ref(x))
    loaded_tok = build_clip_tokenizer(cfg)
    assert loaded_tok(["a cat"])["input_ids"] == tok(["a cat"])["input_ids"]
    assert dim == D


def test_clip_b32_tokenizer_directory_without_files_is_an_error(empty_offline_hub):
    """transformers 5.x returns a placeholder CLIPTokenizer for a directory without vocabulary files."""
    (empty_offline_hub / "empty").mkdir()
    with pytest.raises(BackboneError, match="tokenizer"):
        build_clip_tokenizer({"backbone": "clip-vit-b32", "weights": str(empty_offline_hub / "empty")})
