"""Turn a Dataset dict into model-ready tensors once, and cut them into batches.

Images stay uint8 in memory (decoded and resized once by the loaders); each batch goes through the dataset's
batch transform (augmentation when training, resize/crop and normalisation) on the compute device.
Text is tokenised once, padded to ``max_length``; every batch is trimmed to its longest sequence, so short
glosses do not pay for the padding of long ones (padding positions are excluded from statistics through the
attention mask anyway). Passes whose result does not depend on the order of samples (statistics, evaluation)
visit them sorted by length, which removes almost all padding; training batches stay uniformly shuffled. Images are kept as uint8 and normalised per batch, which costs nothing next to the forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from lorm.data.transforms import to_float01


@dataclass
class EncodedSplit:
    modality: str
    inputs: dict[str, torch.Tensor]  # text: input_ids, attention_mask (N, L); image: images uint8 (N, H, W, 3)
    labels: torch.Tensor  # (N,) model output index (position of the class in the class order)
    train_transform: Callable | None = None  # images: (x in [0,1], generator) -> model input, with augmentation
    test_transform: Callable | None = None  # images: the same without augmentation

    def pin_memory(self) -> "EncodedSplit":
        """Page-locked host tensors, so that per-batch copies to a GPU overlap with compute (non_blocking)."""
        self.inputs = {k: v.pin_memory() for k, v in self.inputs.items()}
        self.labels = self.labels.pin_memory()
        return self

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def length_order(self, indices) -> np.ndarray:
        """Permutation of ``indices`` that visits text rows by sequence length, so that passes whose result
        does not depend on the order carry little padding (identity for images)."""
        indices = np.asarray(indices, dtype=np.int64)
        if self.modality != "text" or len(indices) == 0:
            return np.arange(len(indices))
        lengths = self.inputs["attention_mask"][torch.as_tensor(indices)].sum(1).numpy()
        return np.argsort(lengths, kind="stable")

    def batch(self, idx: torch.Tensor, device: torch.device | str = "cpu", augment: bool = False,
              generator: torch.Generator | None = None, raw: bool = False):
        """Inputs for the rows ``idx`` (a dict for text, a float tensor for images) and their labels.
        ``augment`` selects the training transform of images (random crops/flips drawn from ``generator``);
        ``raw`` drops the normalisation of the un-augmented images (spec Q13's official statistics inputs)."""
        labels = self.labels[idx].to(device, non_blocking=True)
        if self.modality == "text":
            mask = self.inputs["attention_mask"][idx]
            length = int(mask.sum(1).max().item()) if len(idx) else 1
            batch = {k: v[idx, :length].to(device, non_blocking=True) for k, v in self.inputs.items()}
            return batch, labels
        x = to_float01(self.inputs["images"][idx].to(device, non_blocking=True))
        transform = self.train_transform if augment else self.test_transform
        if raw:
            transform = self.test_transform.without_normalisation()
        return transform(x, generator), labels

    @staticmethod
    def token_mask(inputs) -> torch.Tensor | None:
        """The mask of real (non-padding) tokens, for statistics hooks; None for images."""
        return inputs["attention_mask"] if isinstance(inputs, dict) else None


def encode_split(split: dict, modality: str, label_map: np.ndarray, *, tokenizer=None, max_length: int = 32,
                 transforms: tuple[Callable, Callable] | None = None) -> EncodedSplit:
    """Encode one split ({"text"|"images", "label"}); ``label_map[original_class] = model output index``;
    ``transforms`` = (train, test) batch transforms of an image dataset."""
    labels = torch.as_tensor(label_map[np.asarray(split["label"], dtype=np.int64)], dtype=torch.long)
    if modality == "text":
        enc = tokenizer(list(split["text"]), padding="max_length", truncation=True, max_length=max_length,
                        return_tensors="pt")
        inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        return EncodedSplit("text", inputs, labels)
    images = torch.as_tensor(np.ascontiguousarray(split["images"]), dtype=torch.uint8)
    if images.ndim == 3:  # grey images: repeat to 3 channels
        images = images.unsqueeze(-1).expand(-1, -1, -1, 3).contiguous()
    train_tf, test_tf = transforms
    return EncodedSplit("image", {"images": images}, labels, train_transform=train_tf, test_transform=test_tf)


def image_transforms(dataset_name: str, preprocessing: str, image_size: int) -> tuple[Callable, Callable]:
    """(train, test) batch transforms: the paper datasets' own (lorm.data.transforms, spec 9.2 / Q6), and for
    the fabricated test images a plain resize + the backbone's mean = std = 0.5 normalisation."""
    from lorm.data.transforms import PREPROCESSING, BatchTransform, make_batch_transform

    if dataset_name in PREPROCESSING:
        return tuple(make_batch_transform(dataset_name, train, preprocessing, image_size) for train in (True, False))
    plain = BatchTransform([], (0.5,) * 3, (0.5,) * 3, image_size, description=f"{dataset_name} (resize only)")
    return plain, plain


def iterate_batches(indices, batch_size: int, generator: torch.Generator | None = None, shuffle: bool = False):
    """Yield index tensors of at most ``batch_size`` rows; the last partial batch is kept (spec section 5)."""
    idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
    if shuffle:
        idx = idx[torch.randperm(len(idx), generator=generator)]
    for start in range(0, len(idx), batch_size):
        yield idx[start:start + batch_size]
