"""CUB-200-2011 in its distributed layout ``<root>/CUB_200_2011/``.

``images.txt`` ("<image id> <class folder>/<file>.jpg", paths below ``images/``), ``image_class_labels.txt``
("<image id> <class id>", 1-based), ``train_test_split.txt`` ("<image id> <1 = train, 0 = test>"),
``classes.txt`` ("<class id> <NNN.Name>"). The official split has 5,994 train / 5,794 test images; samples are
kept in image-id order, labels are class id - 1.

Fidelity switch ``cub_int8_wrap`` (spec Q5): the official loader computes ``(img * 255).astype(int8)`` on an
npz that (if it holds uint8) wraps every value to (256 - x) mod 256, a colour negative. With the switch on,
that map is applied to the decoded uint8 images (after resizing, as the official npz already is 224 px).
"""

from __future__ import annotations

import numpy as np

from lorm.data.vision._common import (check_args, check_class_count, check_sizes, data_error, finish, locate,
                                      require_file)

NAME = "cub200"
FOLDER = "CUB_200_2011"


def _read_pairs(path, value_is_int: bool = True) -> dict[int, object]:
    out = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(None, 1)
        try:
            key = int(parts[0])
            value = int(parts[1]) if value_is_int else parts[1].strip()
        except (IndexError, ValueError):
            raise data_error(NAME, f"{path} line {lineno} is not '<id> <value>': {line.strip()[:60]!r}") from None
        if key in out:
            raise data_error(NAME, f"{path} repeats id {key}")
        out[key] = value
    return out


def int8_wrap(images: np.ndarray) -> np.ndarray:
    """(256 - x) mod 256 on uint8, in place (0 stays 0): what the official CUB loader's int8 cast produces."""
    return np.negative(images, out=images)


def load_cub200(root, image_size: int = 224, seed: int = 0, *, cub_int8_wrap: bool = False, strict: bool = True,
                expected_classes: int | None = None, resize_mode: str = "stretch",
                progress: bool | None = None, num_workers: int | None = None) -> dict:
    """CUB-200-2011 Dataset dict with the official train/test split (``seed`` is unused: the split is fixed)."""
    size = check_args(NAME, image_size, resize_mode)
    base = locate(NAME, root, FOLDER, marker="images.txt")
    paths = _read_pairs(require_file(NAME, base / "images.txt"), value_is_int=False)
    labels = _read_pairs(require_file(NAME, base / "image_class_labels.txt"))
    is_train = _read_pairs(require_file(NAME, base / "train_test_split.txt"))
    class_names = _read_pairs(require_file(NAME, base / "classes.txt"), value_is_int=False)
    n_classes = len(class_names)
    if sorted(class_names) != list(range(1, n_classes + 1)):
        raise data_error(NAME, f"{base / 'classes.txt'}: class ids must be 1..C")
    check_class_count(NAME, n_classes, base / "classes.txt", strict, expected_classes)
    for fname, table in (("image_class_labels.txt", labels), ("train_test_split.txt", is_train)):
        if table.keys() != paths.keys():
            missing = sorted(paths.keys() ^ table.keys())
            raise data_error(NAME, f"{base / fname} and images.txt list different image ids (e.g. {missing[0]})")
    splits = {"train": ([], []), "test": ([], [])}
    for image_id in sorted(paths):
        label, flag = labels[image_id], is_train[image_id]
        if not 1 <= label <= n_classes or flag not in (0, 1):
            raise data_error(NAME, f"image id {image_id}: class {label} / train flag {flag} out of range")
        path = base / "images" / str(paths[image_id])
        if not path.is_file():
            raise data_error(NAME, f"image {path} listed in {base / 'images.txt'} not found")
        split = splits["train" if flag == 1 else "test"]
        split[0].append(str(path))
        split[1].append(label - 1)
    check_sizes(NAME, len(splits["train"][1]), len(splits["test"][1]), base, strict, expected_classes)
    info = {"source": str(base), "layout": "CUB_200_2011 txt files + images/", "split": "official train_test_split.txt",
            "seed": int(seed), "cub_int8_wrap": bool(cub_int8_wrap)}
    return finish(NAME, [class_names[c] for c in range(1, n_classes + 1)], splits, image_size=size,
                  resize_mode=resize_mode, info=info, progress=progress, num_workers=num_workers,
                  postprocess=int8_wrap if cub_int8_wrap else None)
