"""CLIP backbones for the KnOTS experiments (KnOTS spec sections 2, 8.1-8.3, 9.2).

* :func:`build_clip_vision` -- the frozen CLIP vision tower + ``visual_projection``; ``forward(images)`` returns the
  L2-normalised projected image embedding (512-d for ViT-B/32).  Images are (B, 3, S, S), already resized and
  normalised with :data:`CLIP_MEAN` / :data:`CLIP_STD`.
* LoRA goes on q_proj, k_proj, v_proj and out_proj of every encoder layer of the vision tower only
  (:data:`CLIP_VISION_TARGETS`; ViT-B/32: 12 layers -> 48 matrices 768x768).  The text tower, embeddings,
  LayerNorms and ``visual_projection`` stay pre-trained and are never merged.
* :func:`text_head` -- the zero-shot classification head built from the text tower and the prompt templates
  (:data:`CLIP_TEMPLATES`; the class names of the KnOTS tasks: :mod:`lorm.models.clip_classnames`): per class, mean
  of the L2-normalised template embeddings, re-normalised, times the logit scale (100).  Frozen, never merged.
* :func:`joint_head` and :func:`hits_at_k` -- the union ("joint") label space of spec 9.2 and its metric.

Backbones (see :func:`backbone_specs` / ``BACKBONE_SPECS``):

* ``"clip-vit-b32"`` -- ``openai/clip-vit-base-patch32`` through transformers, from ``model.weights`` (a local
  directory with a saved ``CLIPModel``) or else from the local Hugging Face cache.  Nothing ships offline: with
  ``HF_HUB_OFFLINE=1`` and no cached copy it raises :class:`~lorm.models.backbones.BackboneError` at once.
* ``"clip-tiny-test"`` -- a tiny random-init CLIP (hidden 32, 2 layers, 2 heads, patch 8, image 32, projection 16)
  built from configs with a fixed seed; its tokenizer (:func:`tiny_clip_tokenizer`) is a real ``CLIPTokenizer``
  over a byte-level vocabulary held in memory, so the whole tiny path needs no files.

transformers compatibility: in transformers 5.x ``CLIPModel.get_image_features`` / ``get_text_features`` return a
``BaseModelOutputWithPooling`` (projection in ``pooler_output``) instead of a tensor (4.x), so this module calls the
towers and the projections directly.  Module names relative to ``CLIPModel.vision_model``
(``encoder.layers.<i>.self_attn.<q|k|v|out>_proj``) are the same in 4.x (``CLIPVisionTransformer``) and 5.x
(``CLIPVisionModel``).

Import note: this module does not import :mod:`lorm.models.backbones` at import time (``BackboneError`` and
``BackboneSpec`` are imported lazily), so ``backbones.py`` may import it to register ``BACKBONE_SPECS`` (after its
own ``BackboneSpec`` definition).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CLIP_B32_REPO",
    "CLIP_MEAN",
    "CLIP_STD",
    "CLIP_VISION_TARGETS",
    "CLIP_TEMPLATES",
    "GENERIC_TEMPLATES",
    "DEFAULT_SHARED_LABELS",
    "TINY_CLIP",
    "CLIPImageEncoder",
    "CLIPTextTower",
    "JointHead",
    "load_clip_model",
    "build_clip_vision",
    "build_clip_text",
    "build_clip_tokenizer",
    "tiny_clip_tokenizer",
    "templates_for",
    "text_head",
    "install_head",
    "joint_head",
    "hits_at_k",
    "backbone_specs",
]

CLIP_B32_REPO = "openai/clip-vit-base-patch32"

#: CLIP image normalisation (the CLIP image processor's mean / std, RGB).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

#: LoRA targets of the CLIP vision tower, relative to ``CLIPModel.vision_model`` (the wrapped module; in a
#: Classifier it sits at ``encoder.vision_model.``): q, k, v and out projections of every encoder layer.
#: Matched with ``re.fullmatch``, so the MLP (fc1, fc2), ``visual_projection`` and the text tower never match.
CLIP_VISION_TARGETS: list[str] = [
    r"encoder\.layers\.\d+\.self_attn\.q_proj",
    r"encoder\.layers\.\d+\.self_attn\.k_proj",
    r"encoder\.layers\.\d+\.self_attn\.v_proj",
    r"encoder\.layers\.\d+\.self_attn\.out_proj",
]

#: Where the wrapped vision tower sits inside ``lorm.models.backbones.Classifier`` (``Classifier.encoder`` is a
#: :class:`CLIPImageEncoder`, whose ``vision_model`` is the tower).
CLIP_PREFIX = "encoder.vision_model."

#: The tiny test CLIP (random init). Vocabulary: 256 byte symbols + 256 end-of-word variants + bos + eos.
TINY_CLIP: dict = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "patch_size": 8,
    "image_size": 32,
    "projection_dim": 16,
    "max_position_embeddings": 77,
    "vocab_size": 514,
    "bos_token_id": 512,
    "eos_token_id": 513,
}

_CONTEXT_LENGTH = 77  # CLIP's text context


def _backbone_error(msg: str) -> Exception:
    from lorm.models.backbones import BackboneError  # lazy: backbones.py may import this module

    return BackboneError(msg)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


# ---------------------------------------------------------------------------------------------- modules
class CLIPImageEncoder(nn.Module):
    """CLIP vision tower + ``visual_projection``; returns the L2-normalised projected embedding (B, proj_dim)."""

    def __init__(self, vision_model: nn.Module, visual_projection: nn.Linear):
        super().__init__()
        self.vision_model = vision_model
        self.visual_projection = visual_projection

    @property
    def feature_dim(self) -> int:
        return self.visual_projection.out_features

    def forward(self, images: Tensor) -> Tensor:
        out = self.vision_model(pixel_values=images, return_dict=True)
        pooled = out.pooler_output if hasattr(out, "pooler_output") else out[1]
        return F.normalize(self.visual_projection(pooled), dim=-1)


class CLIPTextTower(nn.Module):
    """CLIP text tower + ``text_projection``; ``forward(input_ids, attention_mask)`` returns the projected
    (not normalised) embedding of the end-of-text token (B, proj_dim)."""

    def __init__(self, text_model: nn.Module, text_projection: nn.Linear):
        super().__init__()
        self.text_model = text_model
        self.text_projection = text_projection

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        out = self.text_model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        pooled = out.pooler_output if hasattr(out, "pooler_output") else out[1]
        return self.text_projection(pooled)


def _freeze(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


# ---------------------------------------------------------------------------------------------- loading
def _hf_hub_cache(model_cfg: Mapping) -> str:
    """The Hugging Face hub cache directory, resolved at call time (``model.cache_dir``, ``HF_HUB_CACHE``,
    ``HF_HOME``/hub, ``XDG_CACHE_HOME``/huggingface/hub, ``~/.cache/huggingface/hub``).  Passing it explicitly
    keeps environment changes made after ``huggingface_hub`` was imported effective."""
    if model_cfg.get("cache_dir"):
        return str(model_cfg["cache_dir"])
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return os.environ[var]
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return os.path.join(home, "hub")


def _tiny_clip_config():
    from transformers import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

    t = TINY_CLIP
    common = dict(hidden_size=t["hidden_size"], intermediate_size=t["intermediate_size"],
                  num_hidden_layers=t["num_hidden_layers"], num_attention_heads=t["num_attention_heads"],
                  projection_dim=t["projection_dim"])
    text = CLIPTextConfig(vocab_size=t["vocab_size"], max_position_embeddings=t["max_position_embeddings"],
                          bos_token_id=t["bos_token_id"], eos_token_id=t["eos_token_id"],
                          pad_token_id=t["eos_token_id"], **common)
    vision = CLIPVisionConfig(image_size=t["image_size"], patch_size=t["patch_size"], **common)
    return CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                      projection_dim=t["projection_dim"])


def _build_tiny_clip(model_cfg: Mapping) -> nn.Module:
    """Random-init tiny CLIPModel; the init is seeded (``model.init_seed``, default 0) without touching the
    caller's global RNG state, so vision tower and text head built in separate calls belong to the same model."""
    from transformers import CLIPModel

    config = _tiny_clip_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(model_cfg.get("init_seed", 0)))
        model = CLIPModel(config)
    return model


def _load_pretrained(name: str, repo: str, model_cfg: Mapping, loader: Callable[..., object], what: str):
    """``loader(path_or_repo, **kw)`` from ``model.weights`` (a local directory), else from the local cache,
    else (only when ``HF_HUB_OFFLINE`` is not 1) from the hub.  Errors become one-line BackboneErrors."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    weights = model_cfg.get("weights")
    if weights:
        if not os.path.isdir(weights):
            raise _backbone_error(f"config key model.weights: directory {weights} not found (a saved CLIPModel of "
                                  f"{repo}: config.json + weights, plus the tokenizer files for the text head)")
        try:
            return loader(str(weights), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise _backbone_error(f"backbone {name}: cannot load the {what} from model.weights {weights}: "
                                  f"{_first_line(exc)}") from exc
    cache_dir = _hf_hub_cache(model_cfg)
    try:  # a pure cache lookup: fast, never touches the network
        return loader(repo, cache_dir=cache_dir, local_files_only=True)
    except (OSError, ValueError) as exc:
        cached_error = exc
    if os.environ.get("HF_HUB_OFFLINE") == "1":  # fail at once instead of after the hub client's retries
        raise _backbone_error(
            f"backbone {name}: HF_HUB_OFFLINE=1 and the {what} of {repo} is not in the Hugging Face cache "
            f"({cache_dir}); set config key model.weights to a local directory with the saved model "
            f"(save_pretrained of CLIPModel and CLIPTokenizer), or unset HF_HUB_OFFLINE to download it"
        ) from cached_error
    try:
        return loader(repo, cache_dir=cache_dir)
    except (OSError, ValueError) as exc:
        raise _backbone_error(f"backbone {name}: could not download the {what} of {repo}: {_first_line(exc)}; "
                              "set config key model.weights to a local directory instead") from exc


def load_clip_model(model_cfg: Mapping) -> nn.Module:
    """The full (frozen, eval) ``CLIPModel`` of ``model_cfg["backbone"]`` (``clip-vit-b32`` or ``clip-tiny-test``)."""
    name = model_cfg.get("backbone", "clip-vit-b32")
    if name == "clip-tiny-test":
        model = _build_tiny_clip(model_cfg)
    elif name == "clip-vit-b32":
        from transformers import CLIPModel

        model = _load_pretrained(name, CLIP_B32_REPO, model_cfg, CLIPModel.from_pretrained, "CLIPModel")
    else:
        raise _backbone_error(f"config key model.backbone: {name!r} is not a CLIP backbone "
                              f"(available: {', '.join(_SPEC_TABLE)})")
    return _freeze(model)


def _split(model_cfg: Mapping, clip_model: nn.Module | None) -> nn.Module:
    return clip_model if clip_model is not None else load_clip_model(model_cfg)


def build_clip_vision(model_cfg: Mapping, clip_model: nn.Module | None = None) -> tuple[nn.Module, int]:
    """(frozen :class:`CLIPImageEncoder`, feature_dim) -- the BackboneSpec ``build`` function.

    ``clip_model``: reuse an already loaded CLIPModel (its modules are shared, not copied)."""
    model = _split(model_cfg, clip_model)
    encoder = _freeze(CLIPImageEncoder(model.vision_model, model.visual_projection))
    return encoder, encoder.feature_dim


def build_clip_text(model_cfg: Mapping, clip_model: nn.Module | None = None) -> CLIPTextTower:
    """The frozen :class:`CLIPTextTower` (text tower + text_projection) for :func:`text_head`."""
    model = _split(model_cfg, clip_model)
    return _freeze(CLIPTextTower(model.text_model, model.text_projection))


# ---------------------------------------------------------------------------------------------- tokenizer
def _bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable-unicode table of byte-level BPE (GPT-2 / CLIP): printable Latin-1 bytes map to
    themselves, the other bytes to code points 256, 257, ... in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), 256)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def tiny_clip_tokenizer():
    """A real ``CLIPTokenizer`` (lower-casing, CLIP pre-tokenisation, bos/eos, pad = eos) over a tiny in-memory
    vocabulary: the 256 byte symbols (ids 0-255), their end-of-word forms (256-511), ``<|startoftext|>`` 512 and
    ``<|endoftext|>`` 513, no merges -- i.e. one token per byte.  Matches ``clip-tiny-test``; needs no files."""
    from transformers import CLIPTokenizer

    symbols = [_bytes_to_unicode()[b] for b in range(256)]
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": 256 + i for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"] = TINY_CLIP["bos_token_id"]
    vocab["<|endoftext|>"] = TINY_CLIP["eos_token_id"]
    tok = CLIPTokenizer(vocab=vocab, merges=[])
    tok.model_max_length = _CONTEXT_LENGTH
    return tok


def build_clip_tokenizer(model_cfg: Mapping):
    """The tokenizer matching ``model_cfg["backbone"]``: :func:`tiny_clip_tokenizer` for ``clip-tiny-test``;
    for ``clip-vit-b32`` ``CLIPTokenizer`` from ``model.tokenizer`` or ``model.weights`` (a local directory) or the
    local cache (same offline rules and BackboneError as the model)."""
    name = model_cfg.get("backbone", "clip-vit-b32")
    if name == "clip-tiny-test":
        return tiny_clip_tokenizer()
    if name != "clip-vit-b32":
        raise _backbone_error(f"config key model.backbone: {name!r} is not a CLIP backbone "
                              f"(available: {', '.join(_SPEC_TABLE)})")
    from transformers import CLIPTokenizer

    def load(path, **kw):
        tok = CLIPTokenizer.from_pretrained(path, **kw)
        # transformers 5.x builds a placeholder tokenizer (only the special tokens) when the vocabulary files
        # are missing instead of raising: treat that as "not found".
        if len(tok) <= 3:
            raise OSError(f"no tokenizer files (vocab.json + merges.txt or tokenizer.json) found for {path}")
        return tok

    cfg = dict(model_cfg)
    if cfg.get("tokenizer"):
        cfg["weights"] = cfg["tokenizer"]
    tok = _load_pretrained(name, CLIP_B32_REPO, cfg, load, "tokenizer")
    tok.model_max_length = min(int(getattr(tok, "model_max_length", _CONTEXT_LENGTH)), _CONTEXT_LENGTH)
    return tok


# ---------------------------------------------------------------------------------------------- templates
#: Prompt templates per dataset: the standard CLIP / task-vectors prompts (written from the published prompt
#: lists; counts as in KnOTS spec 8.2: Cars 8, DTD 8, EuroSAT 3, GTSRB 3, MNIST 1, RESISC45 18, SUN397 2, SVHN 1).
#: ``str.format`` style: ``"{}"`` is replaced by the class name.
CLIP_TEMPLATES: dict[str, list[str]] = {
    "stanford_cars": [
        "a photo of a {}.",
        "a photo of the {}.",
        "a photo of my {}.",
        "i love my {}!",
        "a photo of my dirty {}.",
        "a photo of my clean {}.",
        "a photo of my new {}.",
        "a photo of my old {}.",
    ],
    "dtd": [
        "a photo of a {} texture.",
        "a photo of a {} pattern.",
        "a photo of a {} thing.",
        "a photo of a {} object.",
        "a photo of the {} texture.",
        "a photo of the {} pattern.",
        "a photo of the {} thing.",
        "a photo of the {} object.",
    ],
    "eurosat": [
        "a centered satellite photo of {}.",
        "a centered satellite photo of a {}.",
        "a centered satellite photo of the {}.",
    ],
    "gtsrb": [
        'a zoomed in photo of a "{}" traffic sign.',
        'a centered photo of a "{}" traffic sign.',
        'a close up photo of a "{}" traffic sign.',
    ],
    "mnist": [
        'a photo of the number: "{}".',
    ],
    "resisc45": [
        "satellite imagery of {}.",
        "aerial imagery of {}.",
        "satellite photo of {}.",
        "aerial photo of {}.",
        "satellite view of {}.",
        "aerial view of {}.",
        "satellite imagery of a {}.",
        "aerial imagery of a {}.",
        "satellite photo of a {}.",
        "aerial photo of a {}.",
        "satellite view of a {}.",
        "aerial view of a {}.",
        "satellite imagery of the {}.",
        "aerial imagery of the {}.",
        "satellite photo of the {}.",
        "aerial photo of the {}.",
        "satellite view of the {}.",
        "aerial view of the {}.",
    ],
    "sun397": [
        "a photo of a {}.",
        "a photo of the {}.",
    ],
    "svhn": [
        'a photo of the number: "{}".',
    ],
}

#: Fallback for datasets without their own list: a small generic CLIP prompt ensemble.
GENERIC_TEMPLATES: list[str] = [
    "a photo of a {}.",
    "a bad photo of the {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "itap of a {}.",
    "art of the {}.",
    "a {} in a video game.",
]

_TEMPLATE_ALIASES = {
    "cars": "stanford_cars", "stanfordcars": "stanford_cars", "stanford_cars": "stanford_cars",
    "resisc": "resisc45", "resisc45": "resisc45", "sun": "sun397", "sun397": "sun397", "euro_sat": "eurosat",
}


def _dataset_key(name: str) -> str:
    key = re.sub(r"[^a-z0-9]+", "_", str(name).lower()).strip("_")
    return _TEMPLATE_ALIASES.get(key, _TEMPLATE_ALIASES.get(key.replace("_", ""), key))


def templates_for(dataset: str, fallback: Sequence[str] | None = None) -> list[str]:
    """The templates of ``dataset`` (case and separators ignored; ``cars`` = ``stanford_cars``), else
    ``fallback`` (default :data:`GENERIC_TEMPLATES`)."""
    key = _dataset_key(dataset)
    if key in CLIP_TEMPLATES:
        return list(CLIP_TEMPLATES[key])
    return list(GENERIC_TEMPLATES if fallback is None else fallback)


# ---------------------------------------------------------------------------------------------- heads
def _fill(template, classname: str) -> str:
    return template(classname) if callable(template) else str(template).format(classname)


def _text_encoder(obj) -> Callable[[Tensor, Tensor], Tensor]:
    """A function (input_ids, attention_mask) -> projected text embeddings for a CLIPModel, a
    :class:`CLIPTextTower`, anything with ``text_model`` + ``text_projection``, or a callable."""
    if hasattr(obj, "text_model") and hasattr(obj, "text_projection"):
        tower = obj if isinstance(obj, CLIPTextTower) else CLIPTextTower(obj.text_model, obj.text_projection)
        return lambda ids, mask: tower(ids, mask)
    if callable(obj):
        def call(ids, mask):
            out = obj(input_ids=ids, attention_mask=mask)
            if isinstance(out, Tensor):
                return out
            for key in ("text_embeds", "pooler_output"):
                value = getattr(out, key, None)
                if value is not None:
                    return value
            raise TypeError(f"text_head: the text encoder returned {type(out).__name__}, expected a tensor")
        return call
    raise TypeError(f"text_head: expected a CLIPModel, CLIPTextTower or callable, got {type(obj).__name__}")


@torch.no_grad()
def text_head(
    clip_model_or_text_parts,
    tokenizer,
    classnames: Sequence[str],
    templates: Sequence[str | Callable[[str], str]],
    logit_scale: float = 100.0,
    batch_size: int = 256,
) -> Tensor:
    """Zero-shot head (C, d) (spec 8.2): for every class, embed each template filled with the class name with
    the text tower + text_projection, L2-normalise each embedding, average over the templates, re-normalise and
    multiply by ``logit_scale`` (CLIP's exp(logit_scale) = 100).  Rows therefore have norm ``logit_scale``.

    ``templates``: ``"{}"`` format strings or callables ``classname -> prompt``.  ``tokenizer(texts, padding=True,
    truncation=True, max_length=77, return_tensors="pt")`` must return ``input_ids`` and ``attention_mask``.
    Computed in eval mode without gradients, in float32, on the text tower's device; the result is a detached
    tensor on that device (``requires_grad=False``).  The text tower's train/eval mode is restored afterwards.
    """
    classnames, templates = list(classnames), list(templates)
    if not classnames:
        raise ValueError("text_head: no class names")
    if not templates:
        raise ValueError("text_head: no templates")
    encode = _text_encoder(clip_model_or_text_parts)
    module = clip_model_or_text_parts if isinstance(clip_model_or_text_parts, nn.Module) else None
    device = next(module.parameters()).device if module is not None else torch.device("cpu")
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    try:
        prompts = [_fill(t, c) for c in classnames for t in templates]
        chunks = []
        for start in range(0, len(prompts), int(batch_size)):
            batch = tokenizer(prompts[start:start + int(batch_size)], padding=True, truncation=True,
                              max_length=_CONTEXT_LENGTH, return_tensors="pt")
            ids = batch["input_ids"].to(device)
            mask = batch.get("attention_mask")
            mask = mask.to(device) if mask is not None else None
            chunks.append(F.normalize(encode(ids, mask).float(), dim=-1))
    finally:
        if module is not None:
            module.train(was_training)
    emb = torch.cat(chunks).reshape(len(classnames), len(templates), -1)
    head = F.normalize(emb.mean(dim=1), dim=-1) * float(logit_scale)
    return head.detach()


@torch.no_grad()
def install_head(classifier: nn.Module, head: Tensor) -> nn.Module:
    """Put a text head (C, d) into ``classifier.head`` (an ``nn.Linear``): weight = head, bias = 0, both frozen.
    With the unit-norm image embedding the logits are then ``logit_scale * cos`` (single scale, spec K8)."""
    linear = classifier.head
    if tuple(linear.weight.shape) != tuple(head.shape):
        raise ValueError(f"install_head: head has shape {tuple(head.shape)}, classifier.head.weight has "
                         f"{tuple(linear.weight.shape)}")
    linear.weight.copy_(head)
    linear.weight.requires_grad_(False)
    if linear.bias is not None:
        linear.bias.zero_()
        linear.bias.requires_grad_(False)
    return classifier


#: Label sharing of the joint benchmark (spec 9.2): SVHN uses MNIST's digit labels.
DEFAULT_SHARED_LABELS: dict[str, str] = {"svhn": "mnist"}


@dataclass
class JointHead:
    """Union label space over several datasets (spec 9.2).

    ``weight`` (L, d): one row per joint label; ``index[ds]`` (C_ds,) LongTensor: local class -> joint index;
    ``offsets[ds]``: first joint index of a dataset that owns its labels; ``owner[j]`` = (dataset, local class)
    whose head row is joint label j; ``shared`` = {dataset: dataset whose labels it uses}."""

    weight: Tensor
    datasets: list[str]
    index: dict[str, Tensor]
    offsets: dict[str, int]
    owner: list[tuple[str, int]]
    shared: dict[str, str] = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return int(self.weight.shape[0])

    def to_joint(self, dataset: str, labels) -> Tensor:
        """Local labels of ``dataset`` -> joint indices."""
        mapper = self.index[dataset]
        labels = torch.as_tensor(labels, dtype=torch.long)
        return mapper.to(labels.device)[labels]

    def slice(self, dataset: str) -> Tensor:
        """The rows of ``dataset``'s classes, in local class order (C_ds, d)."""
        return self.weight[self.index[dataset].to(self.weight.device)]


def joint_head(heads: Mapping[str, Tensor], shared: Mapping[str, str] | None = None) -> JointHead:
    """Concatenate per-dataset heads into one union head (spec 9.2).

    Datasets own consecutive joint indices in the order of ``heads`` (e.g. Cars 0-195, DTD 196-242, ...);
    a dataset listed in ``shared`` (``{dataset: owner}``) gets no rows of its own and maps its class i to the
    owner's class i (same number of classes required; the owner's rows are used).  ``shared=None`` applies
    :data:`DEFAULT_SHARED_LABELS` (SVHN -> MNIST) where both datasets are present; pass ``{}`` to share nothing.
    Identical class names in different datasets are NOT merged -- only ``shared`` merges labels."""
    if not heads:
        raise ValueError("joint_head: no heads")
    names = list(heads)
    if shared is None:
        shared = {ds: to for ds, to in DEFAULT_SHARED_LABELS.items() if ds in heads and to in heads}
    shared = dict(shared)
    for ds, to in shared.items():
        if ds not in heads or to not in heads:
            raise ValueError(f"joint_head: shared entry {ds!r} -> {to!r} names a dataset without a head "
                             f"(heads: {names})")
        if to in shared:
            raise ValueError(f"joint_head: {ds!r} shares the labels of {to!r}, which itself shares labels; "
                             "point it at the owning dataset")
        if heads[ds].shape[0] != heads[to].shape[0]:
            raise ValueError(f"joint_head: {ds!r} ({heads[ds].shape[0]} classes) cannot share the labels of "
                             f"{to!r} ({heads[to].shape[0]} classes)")
    dims = {tuple(h.shape[1:]) for h in heads.values()}
    if len(dims) != 1 or any(h.dim() != 2 for h in heads.values()):
        raise ValueError(f"joint_head: heads must be 2-d with one embedding size, got "
                         f"{ {k: tuple(v.shape) for k, v in heads.items()} }")
    rows, index, offsets, owner, start = [], {}, {}, [], 0
    for ds in names:
        if ds in shared:
            continue
        c = int(heads[ds].shape[0])
        rows.append(heads[ds].detach())
        offsets[ds] = start
        index[ds] = torch.arange(start, start + c, dtype=torch.long)
        owner.extend((ds, i) for i in range(c))
        start += c
    for ds in names:
        if ds in shared:
            index[ds] = index[shared[ds]].clone()
    index = {ds: index[ds] for ds in names}
    device = rows[0].device
    weight = torch.cat([r.to(device) for r in rows])
    return JointHead(weight, names, index, offsets, owner, shared)


def hits_at_k(scores, labels, ks: Sequence[int] = (1, 3, 5, 10)) -> dict[int, float]:
    """Hits@k (spec 9.2): fraction of rows whose true label is among the k highest scores (micro-average over
    all rows).  ``scores`` (N, L), ``labels`` (N,) joint indices.  The rank of the true label is the number of
    labels scoring strictly higher, so ties count in its favour; k > L counts every row as a hit."""
    scores = torch.as_tensor(scores)
    labels = torch.as_tensor(labels, dtype=torch.long, device=scores.device)
    if scores.dim() != 2 or labels.dim() != 1 or labels.shape[0] != scores.shape[0]:
        raise ValueError(f"hits_at_k: expected scores (N, L) and labels (N,), got {tuple(scores.shape)} and "
                         f"{tuple(labels.shape)}")
    if scores.shape[0] == 0:
        raise ValueError("hits_at_k: no rows")
    if labels.min() < 0 or labels.max() >= scores.shape[1]:
        raise ValueError(f"hits_at_k: labels must lie in [0, {scores.shape[1]})")
    true = scores.gather(1, labels[:, None])
    rank = (scores > true).sum(dim=1)  # 0 = top
    return {int(k): float((rank < int(k)).double().mean()) for k in ks}


# ---------------------------------------------------------------------------------------------- registry
_SPEC_TABLE: dict[str, dict] = {
    "clip-vit-b32": {"image_size": 224},
    "clip-tiny-test": {"image_size": TINY_CLIP["image_size"]},
}


def backbone_specs() -> dict:
    """``{name: BackboneSpec}`` for the CLIP backbones, to register into ``lorm.models.backbones.BACKBONES``:
    modality "image", build :func:`build_clip_vision`, LoRA targets :data:`CLIP_VISION_TARGETS` relative to the
    vision tower, prefix ``encoder.vision_model.``."""
    from lorm.models.backbones import BackboneSpec  # lazy: backbones.py may import this module

    return {
        name: BackboneSpec(name, "image", build_clip_vision, list(CLIP_VISION_TARGETS), prefix=CLIP_PREFIX,
                           image_size=info["image_size"])
        for name, info in _SPEC_TABLE.items()
    }


def __getattr__(name: str):
    """``BACKBONE_SPECS`` is built on first access (so importing this module never imports backbones.py)."""
    if name == "BACKBONE_SPECS":
        specs = backbone_specs()
        globals()["BACKBONE_SPECS"] = specs
        return specs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
