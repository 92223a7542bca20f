"""Fabricated, learnable image classification data (tests of the image / ViT path only).

Class c has a smooth colour template: a random ``grid x grid x 3`` field (seeded by ``[seed, c]``) upsampled
bilinearly to the image size. A sample is ``128 + amplitude * template + brightness + noise``, with a
per-sample random brightness offset, i.i.d. Gaussian pixel noise and a random circular shift of up to
``image_size // 8`` pixels, clipped to uint8. Templates depend only on (seed, class) and samples only on
(seed, split, class, index-in-class stream), so changing ``train_per_class`` never changes the templates.
"""

from __future__ import annotations

import numpy as np


def _interp_matrix(size: int, grid: int) -> np.ndarray:
    """(size, grid) matrix of bilinear weights mapping grid points to ``size`` evenly spaced positions."""
    pos = np.linspace(0.0, grid - 1.0, size)
    lo = np.minimum(np.floor(pos).astype(int), grid - 2)
    frac = pos - lo
    m = np.zeros((size, grid))
    m[np.arange(size), lo] = 1.0 - frac
    m[np.arange(size), lo + 1] = frac
    return m


def _templates(num_classes: int, image_size: int, seed: int, grid: int = 4) -> np.ndarray:
    m = _interp_matrix(image_size, grid)
    out = np.empty((num_classes, image_size, image_size, 3))
    for c in range(num_classes):
        coarse = np.random.default_rng([seed, 0, c]).standard_normal((grid, grid, 3))
        out[c] = np.einsum("hi,ijc,wj->hwc", m, coarse, m)
    out /= out.std(axis=(1, 2, 3), keepdims=True) + 1e-12
    return out


def _samples(template: np.ndarray, n: int, rng: np.random.Generator, noise: float, amplitude: float) -> np.ndarray:
    size = template.shape[0]
    max_shift = max(size // 8, 0)
    imgs = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        dy, dx = rng.integers(-max_shift, max_shift + 1, size=2)
        img = np.roll(template, (int(dy), int(dx)), axis=(0, 1)) * amplitude
        img = img + 128.0 + rng.normal(0.0, 10.0) + rng.normal(0.0, noise, size=template.shape)
        imgs[i] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return imgs


def make_synthetic_images(
    num_classes: int,
    train_per_class: int,
    test_per_class: int,
    image_size: int = 32,
    seed: int = 0,
    noise: float = 24.0,
    amplitude: float = 40.0,
) -> dict:
    """Image Dataset dict: {"name", "modality": "image", "classes", "train"/"test": {"images", "label"}, "info"}.

    ``images`` is a uint8 array (N, H, W, 3), ``label`` a list of int; class-major order.
    """
    for name, value, low in (("num_classes", num_classes, 1), ("train_per_class", train_per_class, 0),
                             ("test_per_class", test_per_class, 0), ("image_size", image_size, 2),
                             ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    templates = _templates(int(num_classes), int(image_size), int(seed))
    splits = {}
    for split_id, (split, per_class) in enumerate((("train", train_per_class), ("test", test_per_class)), 1):
        images = [
            _samples(templates[c], int(per_class), np.random.default_rng([seed, split_id, c]), noise, amplitude)
            for c in range(num_classes)
        ]
        splits[split] = {
            "images": np.concatenate(images) if images else np.zeros((0, image_size, image_size, 3), np.uint8),
            "label": [c for c in range(num_classes) for _ in range(int(per_class))],
        }
    return {
        "name": "synthetic-images",
        "modality": "image",
        "classes": [f"class{c}" for c in range(num_classes)],
        "train": splits["train"],
        "test": splits["test"],
        "info": {
            "generator": "per-class 4x4x3 Gaussian field upsampled bilinearly + brightness + noise + shift",
            "seed": int(seed),
            "image_size": int(image_size),
            "train_per_class": int(train_per_class),
            "test_per_class": int(test_per_class),
            "noise": float(noise),
            "amplitude": float(amplitude),
        },
    }
