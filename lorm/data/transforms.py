"""Batch image transforms on float tensors (B, 3, H, W) in [0, 1], on any device, with an explicit generator.

Images stay uint8 in memory (:mod:`lorm.data.vision`); every batch is converted (:func:`to_float01`), augmented
and normalised here, as the official pipeline does on the GPU with kornia. Random draws come from the given
``torch.Generator`` (CPU or on the tensor's device; ``None`` = torch's global generator), a fixed number of draws
per sample, so the same generator state gives the same batch. Resampling is bicubic (``align_corners=False``,
no antialias, as kornia's ``resample="bicubic"``), clamped to [0, 1].

Per-data-set pipelines (spec 9.2 / Q6), resolved for a working resolution S = ``image_size`` (224 officially;
the 256 of "resize 256, crop 224" scales as round(256 * S / 224)):

* :data:`PREPROCESSING` -- the INTENDED default: the backbone's normalisation mean = std = 0.5 for every data
  set, one pipeline per data set shared by all methods, EuroSAT with its default RRC + flip.
* :data:`OFFICIAL` -- the transforms of the official LoRM runs: per-data-set normalisation (0.5 for CIFAR-100 /
  ImageNet-R, ImageNet statistics for CUB-200 / ImageNet-A, none for Cars-196) and EuroSAT's
  ``lorm_iclr_{train,test}`` identity without normalisation.
* :data:`OFFICIAL_DEFAULT` -- the official data sets' default transforms (what the baselines use): equal to
  OFFICIAL except EuroSAT (RRC + flip, CLIP statistics).

:func:`make_batch_transform` returns the callable ``(x_float01, generator) -> tensor`` for a data set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
HALF, ZERO, ONE = (0.5, 0.5, 0.5), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
DEFAULT_SCALE, DEFAULT_RATIO = (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0)
_ATTEMPTS = 10  # RandomResizedCrop tries per sample before the central fallback


# ------------------------------------------------------------------------------------------------ primitives
def to_float01(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) in [0, 1] (on the input's device)."""
    return images_uint8.permute(0, 3, 1, 2).float().div_(255.0)


def _check(x: torch.Tensor) -> None:
    if not (isinstance(x, torch.Tensor) and x.ndim == 4 and x.is_floating_point()):
        raise ValueError(f"expected a float tensor (B, C, H, W), got {type(x).__name__} "
                         f"{tuple(getattr(x, 'shape', ()))} {getattr(x, 'dtype', '')}")


def _uniform(n: int, generator: torch.Generator | None, *shape: int) -> torch.Tensor:
    device = generator.device if generator is not None else "cpu"
    return torch.rand((n, *shape), generator=generator, device=device, dtype=torch.float64).cpu()


def _bicubic(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    hw = (int(size), int(size)) if isinstance(size, int) else tuple(int(v) for v in size)
    if tuple(x.shape[-2:]) == hw:
        return x
    return F.interpolate(x, size=hw, mode="bicubic", align_corners=False).clamp_(0.0, 1.0)


def resize(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bicubic resize to (size, size) or (h, w); identity when the size already matches."""
    _check(x)
    return _bicubic(x, size)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    _check(x)
    h, w = x.shape[-2:]
    if size > h or size > w:
        raise ValueError(f"crop {size} larger than the {h}x{w} image")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[..., top:top + size, left:left + size]


def resize_center_crop(x: torch.Tensor, resize: int = 256, crop: int = 224) -> torch.Tensor:
    """Resize to (resize, resize), then the central crop x crop window (official test transform)."""
    _check(x)
    return center_crop(_bicubic(x, resize), crop)


def random_crop(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample uniformly placed size x size window (one pair of draws per sample)."""
    _check(x)
    b, _, h, w = x.shape
    if size > h or size > w:
        raise ValueError(f"crop {size} larger than the {h}x{w} image")
    u = _uniform(b, generator, 2)
    tops = (u[:, 0] * (h - size + 1)).floor().long().clamp_(max=h - size).tolist()
    lefts = (u[:, 1] * (w - size + 1)).floor().long().clamp_(max=w - size).tolist()
    return torch.stack([x[i, :, t:t + size, l:l + size] for i, (t, l) in enumerate(zip(tops, lefts))])


def random_resized_crop_params(n: int, height: int, width: int, scale: Sequence[float] = DEFAULT_SCALE,
                               ratio: Sequence[float] = DEFAULT_RATIO,
                               generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, 4) int64 boxes (top, left, h, w) of the RandomResizedCrop rule: area fraction ~ U(scale), log aspect
    ratio ~ U(log ratio); the first of 10 attempts that fits is placed uniformly; if none fits, the central crop
    of the whole image with the aspect ratio clamped into ``ratio``. Boxes always lie inside the image."""
    lo, hi = float(scale[0]), float(scale[1])
    r0, r1 = math.log(float(ratio[0])), math.log(float(ratio[1]))
    if not (0 < lo <= hi) or not r0 <= r1:
        raise ValueError(f"invalid scale {scale!r} or ratio {ratio!r}")
    u = _uniform(n, generator, 2 * _ATTEMPTS + 2)
    area = height * width * (lo + (hi - lo) * u[:, :_ATTEMPTS])
    aspect = torch.exp(r0 + (r1 - r0) * u[:, _ATTEMPTS:2 * _ATTEMPTS])
    ws = torch.sqrt(area * aspect).round().long()
    hs = torch.sqrt(area / aspect).round().long()
    ok = (ws > 0) & (ws <= width) & (hs > 0) & (hs <= height)
    in_ratio = width / height
    if in_ratio < math.exp(r0):
        fw, fh = width, int(round(width / math.exp(r0)))
    elif in_ratio > math.exp(r1):
        fw, fh = int(round(height * math.exp(r1))), height
    else:
        fw, fh = width, height
    rows = torch.arange(n)
    first = ok.int().argmax(1)  # first attempt that fits (0 when none does; masked below)
    hit = ok.any(1)
    bh = torch.where(hit, hs[rows, first], torch.full((n,), fh, dtype=torch.long))
    bw = torch.where(hit, ws[rows, first], torch.full((n,), fw, dtype=torch.long))
    top = torch.minimum((u[:, -2] * (height - bh + 1)).floor().long(), height - bh)
    left = torch.minimum((u[:, -1] * (width - bw + 1)).floor().long(), width - bw)
    top = torch.where(hit, top, (height - bh) // 2)
    left = torch.where(hit, left, (width - bw) // 2)
    boxes = torch.stack([top, left, bh, bw], dim=1)
    return boxes


def random_resized_crop(x: torch.Tensor, size: int, scale: Sequence[float] = DEFAULT_SCALE,
                        ratio: Sequence[float] = DEFAULT_RATIO,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample RandomResizedCrop to size x size (bicubic)."""
    _check(x)
    b, _, h, w = x.shape
    boxes = random_resized_crop_params(b, h, w, scale, ratio, generator).tolist()
    return torch.cat([resize(x[i:i + 1, :, t:t + bh, l:l + bw], size) for i, (t, l, bh, bw) in enumerate(boxes)])


def random_horizontal_flip(x: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> torch.Tensor:
    """Mirror each sample left-right with probability p (one draw per sample)."""
    _check(x)
    flip = (_uniform(x.shape[0], generator) < p).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    """(x - mean) / std per channel (scalars or one value per channel)."""
    _check(x)
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    return (x - mean_t) / std_t


# ------------------------------------------------------------------------------------------------ registry
def _rrc(scale=DEFAULT_SCALE) -> dict:
    return {"op": "random_resized_crop", "scale": tuple(scale), "ratio": DEFAULT_RATIO}


FLIP = {"op": "horizontal_flip", "p": 0.5}
TEST_RESIZE_CROP = {"op": "resize_center_crop", "resize": 256}  # resize 256 (scaled with S), centre crop S
TRAIN_RESIZE_CROP = {"op": "resize_random_crop", "resize": 256}  # resize 256 (scaled with S), random crop S
RESIZE = {"op": "resize"}  # to S x S (identity on images stored at S)


def _entry(train, test, mean, std) -> dict:
    return {"train": list(train), "test": list(test), "mean": tuple(mean), "std": tuple(std)}


_AUGMENT = {  # the per-data-set augmentations of spec 9.2 (EuroSAT: its default RRC + flip)
    "cifar100": ([_rrc(), FLIP], [TEST_RESIZE_CROP]),
    "imagenet-r": ([_rrc(), FLIP], [TEST_RESIZE_CROP]),
    "imagenet-a": ([_rrc((0.05, 1.0)), FLIP], [TEST_RESIZE_CROP]),
    "eurosat": ([_rrc(), FLIP], [RESIZE]),
    "cub200": ([TRAIN_RESIZE_CROP, FLIP], [TEST_RESIZE_CROP]),
    "cars196": ([FLIP], []),
}
_OFFICIAL_NORM = {"cifar100": (HALF, HALF), "imagenet-r": (HALF, HALF), "imagenet-a": (IMAGENET_MEAN, IMAGENET_STD),
                  "eurosat": (CLIP_MEAN, CLIP_STD), "cub200": (IMAGENET_MEAN, IMAGENET_STD),
                  "cars196": (ZERO, ONE)}

#: Intended default (spec Q6): mean = std = 0.5 everywhere, per-data-set augmentation of 9.2.
PREPROCESSING = {name: _entry(train, test, HALF, HALF) for name, (train, test) in _AUGMENT.items()}
#: The official data sets' default transforms (used by the baselines).
OFFICIAL_DEFAULT = {name: _entry(train, test, *_OFFICIAL_NORM[name]) for name, (train, test) in _AUGMENT.items()}
#: The official LoRM runs: OFFICIAL_DEFAULT with EuroSAT's lorm_iclr identity transforms, no normalisation.
OFFICIAL = {**OFFICIAL_DEFAULT, "eurosat": _entry([], [], ZERO, ONE)}
MODES = {"intended": PREPROCESSING, "official": OFFICIAL, "official-default": OFFICIAL_DEFAULT}


class BatchTransform:
    """Callable ``(x, generator=None) -> tensor`` applying the resolved steps, then the normalisation; the
    output is always (B, 3, S, S) (a final bicubic resize when no step produced S)."""

    def __init__(self, steps: Sequence[dict], mean, std, image_size: int, description: str = ""):
        self.steps = [dict(s) for s in steps]
        self.mean, self.std = tuple(mean), tuple(std)
        self.image_size = int(image_size)
        self.description = description
        self._identity_norm = all(m == 0 for m in self.mean) and all(s == 1 for s in self.std)

    def _resize_px(self, step: dict) -> int:
        return int(round(step["resize"] * self.image_size / 224))

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check(x)
        size = self.image_size
        for step in self.steps:
            op = step["op"]
            if op == "random_resized_crop":
                x = random_resized_crop(x, size, step["scale"], step["ratio"], generator)
            elif op == "horizontal_flip":
                x = random_horizontal_flip(x, generator, step["p"])
            elif op == "resize_center_crop":
                x = resize_center_crop(x, self._resize_px(step), size)
            elif op == "resize_random_crop":
                x = random_crop(resize(x, self._resize_px(step)), size, generator)
            elif op == "resize":
                x = resize(x, size)
            else:
                raise ValueError(f"unknown transform op {op!r}")
        x = resize(x, size)
        return x if self._identity_norm else normalise(x, self.mean, self.std)

    def without_normalisation(self) -> "BatchTransform":
        """The same steps with inputs left in [0, 1] (mean 0, std 1)."""
        return BatchTransform(self.steps, (0.0,) * 3, (1.0,) * 3, self.image_size, f"{self.description} (raw)")

    def describe(self) -> dict:
        """JSON-friendly description (for run configs / provenance)."""
        return {"description": self.description, "image_size": self.image_size, "steps": self.steps,
                "mean": list(self.mean), "std": list(self.std)}

    def __repr__(self) -> str:
        return f"BatchTransform({self.description})"


def make_batch_transform(dataset: str, train: bool, mode: str = "intended", image_size: int = 224) -> BatchTransform:
    """The batch transform of ``dataset`` for training (augmenting) or evaluation, in ``mode`` "intended"
    (default, spec Q6), "official" (the LoRM README runs) or "official-default" (the data sets' defaults)."""
    if mode not in MODES:
        raise ValueError(f"preprocessing mode must be one of {', '.join(MODES)}, got {mode!r}")
    table = MODES[mode]
    if dataset not in table:
        raise ValueError(f"no preprocessing for dataset {dataset!r}; available: {', '.join(table)}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    entry = table[dataset]
    split = "train" if train else "test"
    return BatchTransform(entry[split], entry["mean"], entry["std"], image_size,
                          description=f"{dataset} {split} ({mode})")
