"""WordNet-40: noun/verb glosses of WordNet 3.0 labelled by their 40 lexicographer classes.

Source files: ``data.noun`` and ``data.verb`` of the WordNet database (Debian ``wordnet-base`` installs them in
``/usr/share/wordnet``; NLTK's ``corpora/wordnet`` folder holds the same files). Each data line is

    offset lex_filenum ss_type w_cnt(hex) [word lex_id]*w_cnt p_cnt [pointer]*p_cnt [frames] | gloss

Label = lexicographer class of ``lex_filenum``; text = the gloss up to its first ";" (the definition, without
the quoted examples). ``noun.Tops`` (03) is dropped, which leaves 25 noun and 15 verb classes.

Decisions (documented here and in ``info`` of the built dataset):

* ``read_glosses`` returns every synset's definition (95,831 for WordNet 3.0, one per synset).
* ``build_wordnet40`` drops duplicate definitions *within* a class (first occurrence in file order is kept;
  1,015 of 95,831 in WordNet 3.0, leaving 94,816; verb.weather 81 -> 79), so the same text can never be in
  both the train and the test split of a class. Definitions shared *between* classes (73 texts in WordNet
  3.0) are kept: they are genuine ambiguity.
* Per class the unique definitions are permuted with ``np.random.default_rng([seed, class_id])``; the first
  ``test_per_class`` go to test, the next ``train_per_class`` to train. A class with fewer than
  ``train_per_class + test_per_class`` definitions (noun.motive: 42) is split in the ratio train:test,
  ``n_test = floor(n * test / (train + test) + 1/2)`` clipped to [1, n - 1]. Actual counts are in ``info``.
* ``evaluate_on="validation"`` (hyperparameter tuning) replaces the test split by a validation split that is
  disjoint from both: per class the next ``n_test`` texts of the same permutation after the training texts; a
  small class with too few left takes the shortfall from the end of its training texts (at least one stays).
  Training texts are unchanged otherwise, and the test texts are not returned at all.
* Output order is class-major (class id order), inside a class the permuted order.
"""

from __future__ import annotations

import hashlib
import os
import pathlib

import numpy as np

from lorm.data import DataError

# WordNet 3.0 lexicographer files, index = lex_filenum (see lexnames(5WN)).
LEXNAMES: list[str] = [
    "adj.all", "adj.pert", "adv.all", "noun.Tops",
    "noun.act", "noun.animal", "noun.artifact", "noun.attribute", "noun.body", "noun.cognition",
    "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group", "noun.location",
    "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant", "noun.possession",
    "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance",
    "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion", "verb.perception",
    "verb.possession", "verb.social", "verb.stative", "verb.weather",
    "adj.ppl",
]

#: The 40 classes in lexicographer-file-number order (04 noun.act ... 43 verb.weather); label id = list index.
WORDNET40_CLASSES: list[str] = LEXNAMES[4:44]

_LEX_TO_CLASS: dict[int, int] = {lex: lex - 4 for lex in range(4, 44)}
DATA_FILES = ("data.noun", "data.verb")

INSTALL_HINT = (
    "install it with `sudo apt-get install -y --no-install-recommends wordnet-base`, "
    "or set dataset.root to a folder containing data.noun and data.verb"
)


def _has_files(folder: pathlib.Path) -> bool:
    return all((folder / name).is_file() for name in DATA_FILES)


def _default_search_dirs() -> list[pathlib.Path]:
    """Search order when no root is given (each entry is also tried with a ``dict/`` subfolder)."""
    dirs: list[pathlib.Path] = []
    env = os.environ.get("LORM_WORDNET_DIR")
    if env:
        dirs.append(pathlib.Path(env).expanduser())
    dirs.append(pathlib.Path("/usr/share/wordnet"))
    for entry in os.environ.get("NLTK_DATA", "").split(os.pathsep):
        if entry:
            dirs.append(pathlib.Path(entry).expanduser() / "corpora" / "wordnet")
    dirs += [
        pathlib.Path("~/nltk_data/corpora/wordnet").expanduser(),
        pathlib.Path("/usr/share/nltk_data/corpora/wordnet"),
        pathlib.Path("/usr/local/share/nltk_data/corpora/wordnet"),
    ]
    return dirs


def find_wordnet_dir(root: str | os.PathLike | None = None) -> pathlib.Path:
    """Folder holding ``data.noun`` and ``data.verb``.

    With ``root`` only ``root`` and ``root/dict`` are tried. Without it: ``$LORM_WORDNET_DIR``,
    ``/usr/share/wordnet``, ``$NLTK_DATA/corpora/wordnet`` (every entry of the path list),
    ``~/nltk_data/corpora/wordnet``, ``/usr/share/nltk_data/corpora/wordnet``,
    ``/usr/local/share/nltk_data/corpora/wordnet`` (each also with ``dict/``). Raises :class:`DataError`.
    """
    bases = [pathlib.Path(root).expanduser()] if root is not None else _default_search_dirs()
    tried: list[str] = []
    for base in bases:
        for cand in (base, base / "dict"):
            tried.append(str(cand))
            if _has_files(cand):
                return cand
    what = f"dataset.root={str(root)!r}" if root is not None else "the default locations"
    raise DataError(
        f"WordNet data files (data.noun, data.verb) not found in {what}; tried: {', '.join(tried)}; "
        f"fix: {INSTALL_HINT}"
    )


def _parse_file(path: pathlib.Path, out: dict[str, list[str]]) -> None:
    with open(path, encoding="latin-1") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.startswith("  ") or not line.strip():
                continue  # licence header (lines start with two spaces) / trailing blank line

            def bad(reason: str) -> DataError:
                return DataError(f"malformed WordNet data line {path}:{lineno}: {reason}")

            head, sep, gloss = line.partition(" | ")
            if not sep:
                raise bad("no ' | ' separating the gloss")
            fields = head.split()
            if len(fields) < 5:
                raise bad(f"expected offset, lex_filenum, ss_type, w_cnt, words..., got {len(fields)} fields")
            if not fields[0].isdigit():
                raise bad(f"synset offset {fields[0]!r} is not a number")
            if len(fields[1]) != 2 or not fields[1].isdigit():
                raise bad(f"lexicographer file number {fields[1]!r} is not a 2-digit number")
            try:
                w_cnt = int(fields[3], 16)
            except ValueError:
                raise bad(f"word count {fields[3]!r} is not hexadecimal") from None
            if w_cnt < 1 or len(fields) < 4 + 2 * w_cnt + 1:
                raise bad(f"word count {fields[3]!r} does not match the {len(fields)} header fields")
            cls = _LEX_TO_CLASS.get(int(fields[1]))
            if cls is None:
                continue  # noun.Tops (03) or a non noun/verb lexicographer file
            text = gloss.split(";", 1)[0].strip()
            if text:
                out[WORDNET40_CLASSES[cls]].append(text)


def read_glosses(wordnet_dir: str | os.PathLike) -> dict[str, list[str]]:
    """Definitions per class, keys in :data:`WORDNET40_CLASSES` order (every key present), values in file order.

    One entry per synset (no de-duplication); data.noun is read before data.verb.
    """
    folder = pathlib.Path(wordnet_dir)
    out: dict[str, list[str]] = {name: [] for name in WORDNET40_CLASSES}
    for name in DATA_FILES:
        path = folder / name
        if not path.is_file():
            raise DataError(f"WordNet data file {path} not found; fix: {INSTALL_HINT}")
        _parse_file(path, out)
    return out


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _split_sizes(n: int, train: int, test: int) -> tuple[int, int]:
    """(n_train, n_test) for a class with n unique texts."""
    if n >= train + test:
        return train, test
    if n < 2:
        raise DataError(f"a WordNet-40 class has {n} definition(s); at least 2 are needed (1 train, 1 test)")
    n_test = int(np.floor(n * test / (train + test) + 0.5))
    n_test = min(max(n_test, 1), n - 1)
    return n - n_test, n_test


def build_wordnet40(
    root: str | os.PathLike | None = None,
    train_per_class: int = 40,
    test_per_class: int = 12,
    seed: int = 0,
    evaluate_on: str = "test",
) -> dict:
    """WordNet-40 Dataset dict (docs/architecture.md): modality "text", 40 classes, seeded per-class subsets.

    ``evaluate_on="validation"`` puts the validation split (module docstring) under the ``test`` key.
    """
    if evaluate_on not in ("test", "validation"):
        raise ValueError(f"evaluate_on must be 'test' or 'validation', got {evaluate_on!r}")
    for name, value in (("train_per_class", train_per_class), ("test_per_class", test_per_class)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    train_per_class, test_per_class, seed = int(train_per_class), int(test_per_class), int(seed)

    folder = find_wordnet_dir(root)
    glosses = read_glosses(folder)

    train_text: list[str] = []
    train_label: list[int] = []
    test_text: list[str] = []
    test_label: list[int] = []
    synsets, unique, n_train, n_test, reduced = {}, {}, {}, {}, []
    for cid, cname in enumerate(WORDNET40_CLASSES):
        texts = list(dict.fromkeys(glosses[cname]))  # within-class de-duplication, first occurrence kept
        synsets[cname], unique[cname] = len(glosses[cname]), len(texts)
        if len(texts) < 2:
            raise DataError(
                f"WordNet-40 class {cname} has {len(texts)} definition(s) in {folder}; at least 2 are needed "
                f"(are data.noun and data.verb complete WordNet 3.0 files?)"
            )
        tr, te = _split_sizes(len(texts), train_per_class, test_per_class)
        perm = np.random.default_rng([seed, cid]).permutation(len(texts))
        held_out, train_idx = perm[:te], perm[te:te + tr]
        if evaluate_on == "validation":
            held_out = perm[te + tr:te + tr + te]
            short = min(te - len(held_out), tr - 1)  # small class: borrow from the end of train, keep one
            if short > 0:
                held_out, train_idx = np.concatenate([held_out, train_idx[tr - short:]]), train_idx[:tr - short]
            tr, te = len(train_idx), len(held_out)
        if (tr, te) != (train_per_class, test_per_class):
            reduced.append(cname)
        test_text += [texts[i] for i in held_out]
        train_text += [texts[i] for i in train_idx]
        test_label += [cid] * te
        train_label += [cid] * tr
        n_train[cname], n_test[cname] = tr, te

    info = {
        "source_dir": str(folder),
        "source_files": {name: {"path": str(folder / name), "sha256": _sha256(folder / name)}
                         for name in DATA_FILES},
        "seed": seed,
        "evaluated_split": evaluate_on,
        "train_per_class_requested": train_per_class,
        "test_per_class_requested": test_per_class,
        "text": "gloss up to the first ';' (definition without examples), stripped",
        "deduplication": "identical definitions within a class dropped (first in file order kept)",
        "sampling": "per class: np.random.default_rng([seed, class_id]).permutation; first test, next train"
                    + ("; validation (under 'test'): the next n_test, shortfall from the end of train"
                       if evaluate_on == "validation" else ""),
        "small_class_rule": "n < train+test: n_test = floor(n*test/(train+test) + 0.5) clipped to [1, n-1]",
        "reduced_classes": reduced,
        "synsets_per_class": synsets,
        "unique_per_class": unique,
        "train_per_class": n_train,
        "test_per_class": n_test,
        "num_train": len(train_label),
        "num_test": len(test_label),
    }
    return {
        "name": "wordnet40",
        "modality": "text",
        "classes": list(WORDNET40_CLASSES),
        "train": {"text": train_text, "label": train_label},
        "test": {"text": test_text, "label": test_label},
        "info": info,
    }
