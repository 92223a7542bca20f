"""WordNet-40 reader/builder, synthetic images, dataset registry and on-disk format."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from lorm.data import DataError
from lorm.data import wordnet
from lorm.data.datasets import DATASETS, build_dataset, load_dataset, save_dataset
from lorm.data.synthetic import make_synthetic_images
from lorm.data.wordnet import WORDNET40_CLASSES, build_wordnet40, find_wordnet_dir, read_glosses

REAL_DIR = pathlib.Path("/usr/share/wordnet")
HAS_REAL = (REAL_DIR / "data.noun").is_file() and (REAL_DIR / "data.verb").is_file()

# environment-notes section 5.1 (WordNet 3.0 synsets per lexicographer file)
REAL_COUNTS = {
    "noun.act": 6650, "noun.animal": 7509, "noun.artifact": 11587, "noun.attribute": 3039, "noun.body": 2016,
    "noun.cognition": 2964, "noun.communication": 5607, "noun.event": 1074, "noun.feeling": 428,
    "noun.food": 2573, "noun.group": 2624, "noun.location": 3209, "noun.motive": 42, "noun.object": 1545,
    "noun.person": 11087, "noun.phenomenon": 641, "noun.plant": 8030, "noun.possession": 1061,
    "noun.process": 770, "noun.quantity": 1275, "noun.relation": 437, "noun.shape": 341, "noun.state": 3544,
    "noun.substance": 2983, "noun.time": 1028, "verb.body": 547, "verb.change": 2383, "verb.cognition": 695,
    "verb.communication": 1548, "verb.competition": 459, "verb.consumption": 243, "verb.contact": 2196,
    "verb.creation": 694, "verb.emotion": 343, "verb.motion": 1408, "verb.perception": 461,
    "verb.possession": 847, "verb.social": 1106, "verb.stative": 756, "verb.weather": 81,
}

HEADER = (
    "  1 This software and database is being provided to you, the LICENSEE, by  \n"
    "  2 Princeton University under the following license.  By obtaining, using  \n"
    "  3   \n"
)


# ----------------------------------------------------------------------------------------------- fixtures
def _line(offset: int, lex: int, pos: str, words: list[str], gloss: str) -> str:
    word_part = " ".join(f"{w} 0" for w in words)
    pointers = "002 @ 00001740 n 0000 ~ 00002137 n 0000"
    frames = " 01 + 02 00" if pos == "v" else ""
    return f"{offset:08d} {lex:02d} {pos} {len(words):02x} {word_part} {pointers}{frames} | {gloss}  \n"


def _fake_wordnet(folder: pathlib.Path, per_class: dict[str, int] | None = None, default: int = 8) -> pathlib.Path:
    """data.noun / data.verb in the true format: every class gets ``default`` synsets unless overridden."""
    per_class = per_class or {}
    folder.mkdir(parents=True, exist_ok=True)
    files = {"n": [HEADER, _line(1740, 3, "n", ["entity"], "that which is perceived; a Tops synset")],
             "v": [HEADER]}
    offset = 2000
    for cid, cname in enumerate(WORDNET40_CLASSES):
        pos = "n" if cname.startswith("noun.") else "v"
        for j in range(per_class.get(cname, default)):
            offset += 100
            gloss = f"{cname} meaning number {j}; \"an example sentence for {j}\""
            files[pos].append(_line(offset, cid + 4, pos, [f"w{cid}_{j}"], gloss))
    # a synset with ten words: the word count is hexadecimal ("0a")
    offset += 100
    files["n"].append(_line(offset, 5, "n", [f"beast{i}" for i in range(10)], "ten-word animal; \"ex\""))
    (folder / "data.noun").write_text("".join(files["n"]), encoding="latin-1")
    (folder / "data.verb").write_text("".join(files["v"]), encoding="latin-1")
    return folder


@pytest.fixture
def fake_dir(tmp_path):
    return _fake_wordnet(tmp_path / "wn", {"noun.motive": 4, "verb.weather": 3})


# ----------------------------------------------------------------------------------------------- classes
def test_classes_are_the_40_lexicographer_files_in_order():
    assert len(WORDNET40_CLASSES) == 40 and len(set(WORDNET40_CLASSES)) == 40
    assert WORDNET40_CLASSES[0] == "noun.act" and WORDNET40_CLASSES[24] == "noun.time"
    assert WORDNET40_CLASSES[25] == "verb.body" and WORDNET40_CLASSES[39] == "verb.weather"
    assert "noun.Tops" not in WORDNET40_CLASSES
    assert sum(c.startswith("noun.") for c in WORDNET40_CLASSES) == 25
    assert wordnet.LEXNAMES[16] == "noun.motive" and wordnet.LEXNAMES[43] == "verb.weather"


def test_import_lorm_data_does_not_import_torch():
    code = "import sys, lorm.data; from lorm.data import DataError; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------------------------- reader
def test_read_glosses_fabricated(fake_dir):
    g = read_glosses(fake_dir)
    assert list(g) == WORDNET40_CLASSES
    assert len(g["noun.act"]) == 8 and len(g["noun.motive"]) == 4 and len(g["verb.weather"]) == 3
    assert len(g["noun.animal"]) == 9  # 8 + the hex word-count synset
    assert g["noun.animal"][-1] == "ten-word animal"
    assert g["noun.act"][0] == "noun.act meaning number 0"  # cut at ";", stripped
    assert all(";" not in t and t == t.strip() and t for texts in g.values() for t in texts)
    assert not any("Tops" in t for texts in g.values() for t in texts)
    assert g["verb.body"] == [f"verb.body meaning number {j}" for j in range(8)]  # file order


@pytest.mark.parametrize("bad_line, reason", [
    ("00002000 05 n 01 dog 0 000 a dog without a bar separator\n", "' | '"),
    ("00002000 5x n 01 dog 0 000 | a dog\n", "2-digit"),
    ("00002000 05 n zz dog 0 000 | a dog\n", "hexadecimal"),
    ("00002000 05 n 0a dog 0 000 | a dog\n", "word count"),
])
def test_malformed_line_names_file_and_line(fake_dir, bad_line, reason):
    path = fake_dir / "data.noun"
    lines = path.read_text(encoding="latin-1").splitlines(keepends=True)
    lines.insert(5, bad_line)
    path.write_text("".join(lines), encoding="latin-1")
    with pytest.raises(DataError) as exc:
        read_glosses(fake_dir)
    msg = str(exc.value)
    assert f"{path}:6" in msg and reason in msg and "\n" not in msg


def test_latin1_is_read(tmp_path):
    d = _fake_wordnet(tmp_path / "wn")
    path = d / "data.verb"
    path.write_text(path.read_text(encoding="latin-1") + _line(9999000, 43, "v", ["föhn"], "blow like a föhn"),
                    encoding="latin-1")
    assert read_glosses(d)["verb.weather"][-1] == "blow like a föhn"


# ----------------------------------------------------------------------------------------------- finder
def test_find_dir_direct_and_dict_layout(tmp_path):
    direct = _fake_wordnet(tmp_path / "nltk_data" / "corpora" / "wordnet")
    assert find_wordnet_dir(direct) == direct
    nested = _fake_wordnet(tmp_path / "WordNet-3.0" / "dict")
    assert find_wordnet_dir(tmp_path / "WordNet-3.0") == nested
    assert find_wordnet_dir(str(nested)) == nested


def test_find_dir_env_var_and_search_order(tmp_path, monkeypatch):
    d = _fake_wordnet(tmp_path / "env")
    monkeypatch.setenv("LORM_WORDNET_DIR", str(d))
    monkeypatch.setenv("NLTK_DATA", str(tmp_path / "a") + ":" + str(tmp_path / "b"))
    assert find_wordnet_dir() == d
    dirs = [str(p) for p in wordnet._default_search_dirs()]
    assert dirs[0] == str(d) and dirs[1] == "/usr/share/wordnet"
    assert str(tmp_path / "a" / "corpora" / "wordnet") in dirs and str(tmp_path / "b" / "corpora" / "wordnet") in dirs
    assert dirs[-3:] == [str(pathlib.Path("~/nltk_data/corpora/wordnet").expanduser()),
                         "/usr/share/nltk_data/corpora/wordnet", "/usr/local/share/nltk_data/corpora/wordnet"]


def test_missing_folder_raises_one_line_with_fix(tmp_path, monkeypatch):
    missing = tmp_path / "nope"
    with pytest.raises(DataError) as exc:
        find_wordnet_dir(missing)
    msg = str(exc.value)
    assert "\n" not in msg and "wordnet-base" in msg and "dataset.root" in msg
    assert str(missing) in msg and str(missing / "dict") in msg
    # nothing found anywhere (default search)
    monkeypatch.setattr(wordnet, "_default_search_dirs", lambda: [tmp_path / "x", tmp_path / "y"])
    with pytest.raises(DataError) as exc:
        build_wordnet40()
    msg = str(exc.value)
    assert "\n" not in msg and "wordnet-base" in msg and str(tmp_path / "y" / "dict") in msg
    assert isinstance(exc.value, RuntimeError)


# ----------------------------------------------------------------------------------------------- builder
def test_build_fabricated_counts_split_and_determinism(fake_dir):
    ds = build_wordnet40(fake_dir, train_per_class=5, test_per_class=2, seed=3)
    assert ds["name"] == "wordnet40" and ds["modality"] == "text" and ds["classes"] == WORDNET40_CLASSES
    info = ds["info"]
    tr, te = np.array(ds["train"]["label"]), np.array(ds["test"]["label"])
    assert len(ds["train"]["text"]) == tr.size and len(ds["test"]["text"]) == te.size
    for cid, cname in enumerate(WORDNET40_CLASSES):
        assert (tr == cid).sum() == info["train_per_class"][cname]
        assert (te == cid).sum() == info["test_per_class"][cname]
        train_texts = {t for t, y in zip(ds["train"]["text"], tr) if y == cid}
        test_texts = {t for t, y in zip(ds["test"]["text"], te) if y == cid}
        assert not train_texts & test_texts
        assert all(t.startswith(cname + " ") or t == "ten-word animal" for t in train_texts | test_texts)
    assert info["train_per_class"]["noun.act"] == 5 and info["test_per_class"]["noun.act"] == 2
    # small classes: ratio 5:2 -> n_test = floor(n*2/7 + 1/2): 4 -> 3/1, 3 -> 2/1
    assert (info["train_per_class"]["noun.motive"], info["test_per_class"]["noun.motive"]) == (3, 1)
    assert (info["train_per_class"]["verb.weather"], info["test_per_class"]["verb.weather"]) == (2, 1)
    assert info["reduced_classes"] == ["noun.motive", "verb.weather"]
    assert info["seed"] == 3 and info["source_dir"] == str(fake_dir)
    assert all(";" not in t for t in ds["train"]["text"] + ds["test"]["text"])
    json.dumps(ds)  # JSON-serialisable
    assert build_wordnet40(fake_dir, 5, 2, seed=3) == ds
    other = build_wordnet40(fake_dir, 5, 2, seed=4)
    assert other["train"]["text"] != ds["train"]["text"]
    assert other["train"]["label"] == ds["train"]["label"]


def test_validation_split_is_disjoint_from_train_and_test(fake_dir):
    test_ds = build_wordnet40(fake_dir, train_per_class=4, test_per_class=2, seed=3)
    val_ds = build_wordnet40(fake_dir, train_per_class=4, test_per_class=2, seed=3, evaluate_on="validation")
    assert val_ds["info"]["evaluated_split"] == "validation" and test_ds["info"]["evaluated_split"] == "test"

    def by_class(split):
        out = {}
        for t, y in zip(split["text"], split["label"]):
            out.setdefault(y, []).append(t)
        return out

    train_t, test_t = by_class(test_ds["train"]), by_class(test_ds["test"])
    train_v, val = by_class(val_ds["train"]), by_class(val_ds["test"])
    for cid, cname in enumerate(WORDNET40_CLASSES):
        v = set(val.get(cid, []))
        assert not v & set(test_t[cid]) and not v & set(train_v[cid])  # never a test or training text
        if cname in ("noun.motive", "verb.weather"):  # 4 / 3 texts: none left after test + train
            assert len(train_v[cid]) >= 1 and set(train_v[cid]) | v == set(train_t[cid])
        else:  # the training texts are exactly those of the test setting
            assert train_v[cid] == train_t[cid] and len(v) == 2
    with pytest.raises(ValueError, match="evaluate_on"):
        build_wordnet40(fake_dir, 4, 2, seed=3, evaluate_on="train")


def test_validation_only_for_wordnet40():
    from lorm.data.datasets import build_dataset

    with pytest.raises(DataError, match="dataset.evaluate_on: validation is implemented for wordnet40 only"):
        build_dataset({"name": "synthetic-images", "evaluate_on": "validation"})


def test_split_sizes_rule():
    assert wordnet._split_sizes(100, 40, 12) == (40, 12)
    assert wordnet._split_sizes(42, 40, 12) == (32, 10)
    assert wordnet._split_sizes(2, 40, 12) == (1, 1)
    assert wordnet._split_sizes(3, 1, 50) == (1, 2)  # at least one train
    assert wordnet._split_sizes(3, 50, 1) == (2, 1)  # at least one test
    with pytest.raises(DataError):
        wordnet._split_sizes(1, 40, 12)


def test_build_deduplicates_within_class(tmp_path):
    d = _fake_wordnet(tmp_path / "wn")
    path = d / "data.noun"
    path.write_text(path.read_text(encoding="latin-1")
                    + _line(9999000, 4, "n", ["again"], "noun.act meaning number 0; \"another example\""),
                    encoding="latin-1")
    assert len(read_glosses(d)["noun.act"]) == 9
    ds = build_wordnet40(d, train_per_class=20, test_per_class=4)
    assert ds["info"]["synsets_per_class"]["noun.act"] == 9 and ds["info"]["unique_per_class"]["noun.act"] == 8
    texts = [t for t, y in zip(ds["train"]["text"] + ds["test"]["text"], ds["train"]["label"] + ds["test"]["label"])
             if y == 0]
    assert len(texts) == len(set(texts)) == 8


def test_build_rejects_bad_arguments_and_tiny_classes(tmp_path, fake_dir):
    with pytest.raises(ValueError):
        build_wordnet40(fake_dir, train_per_class=0)
    with pytest.raises(ValueError):
        build_wordnet40(fake_dir, seed=-1)
    d = _fake_wordnet(tmp_path / "tiny", {"noun.motive": 1})
    with pytest.raises(DataError, match="noun.motive"):
        build_wordnet40(d)


@pytest.mark.skipif(not HAS_REAL, reason="wordnet-base not installed (/usr/share/wordnet)")
def test_real_wordnet_counts_and_build():
    g = read_glosses(find_wordnet_dir())
    assert {k: len(v) for k, v in g.items()} == REAL_COUNTS
    assert sum(map(len, g.values())) == 95831
    ds = build_wordnet40(seed=0)
    info = ds["info"]
    assert info["source_dir"] == str(REAL_DIR)
    assert info["reduced_classes"] == ["noun.motive"]
    assert (info["train_per_class"]["noun.motive"], info["test_per_class"]["noun.motive"]) == (32, 10)
    assert len(ds["train"]["label"]) == 39 * 40 + 32 and len(ds["test"]["label"]) == 39 * 12 + 10
    assert info["unique_per_class"]["verb.weather"] == 79
    assert all(t and ";" not in t for t in ds["train"]["text"] + ds["test"]["text"])
    again = build_wordnet40(seed=0)
    assert again == ds
    assert build_wordnet40(seed=1)["test"]["text"] != ds["test"]["text"]


# ----------------------------------------------------------------------------------------------- synthetic
def test_synthetic_images_shape_determinism_and_learnable():
    ds = make_synthetic_images(4, 30, 10, image_size=16, seed=1)
    assert ds["modality"] == "image" and ds["classes"] == ["class0", "class1", "class2", "class3"]
    x, y = ds["train"]["images"], ds["train"]["label"]
    assert x.dtype == np.uint8 and x.shape == (120, 16, 16, 3) and len(y) == 120
    assert ds["test"]["images"].shape == (40, 16, 16, 3) and ds["test"]["label"] == [c for c in range(4) for _ in range(10)]
    again = make_synthetic_images(4, 30, 10, image_size=16, seed=1)
    assert np.array_equal(again["train"]["images"], x) and np.array_equal(again["test"]["images"], ds["test"]["images"])
    assert not np.array_equal(make_synthetic_images(4, 30, 10, image_size=16, seed=2)["train"]["images"], x)
    # learnable: nearest class mean on raw pixels classifies the test split far above chance (25 %)
    xf = x.reshape(len(y), -1).astype(float)
    means = np.stack([xf[np.array(y) == c].mean(0) for c in range(4)])
    xt = ds["test"]["images"].reshape(40, -1).astype(float)
    pred = np.argmin(((xt[:, None] - means[None]) ** 2).sum(-1), 1)
    assert (pred == np.array(ds["test"]["label"])).mean() >= 0.7
    # samples of one class differ from each other
    assert not np.array_equal(x[0], x[1])


def test_synthetic_templates_do_not_depend_on_split_sizes():
    a = make_synthetic_images(3, 5, 2, image_size=8, seed=0)
    b = make_synthetic_images(3, 9, 2, image_size=8, seed=0)
    assert np.array_equal(a["train"]["images"][:5], b["train"]["images"][:5])
    assert np.array_equal(a["test"]["images"], b["test"]["images"])


# ----------------------------------------------------------------------------------------------- registry / io
def test_registry_and_unknown_name(fake_dir):
    assert set(DATASETS) == {"wordnet40", "synthetic-images", "cifar100", "imagenet-r", "imagenet-a", "eurosat",
                             "cub200", "cars196"}
    ds = build_dataset({"name": "wordnet40", "root": str(fake_dir), "train_per_class": 5, "test_per_class": 2,
                        "seed": 0, "image_size": 32})
    assert ds == build_wordnet40(fake_dir, 5, 2, seed=0)
    img = build_dataset({"name": "synthetic-images", "root": None, "train_per_class": 3, "test_per_class": 1,
                         "seed": 0, "image_size": 8, "num_classes": 5})
    assert img["train"]["images"].shape == (15, 8, 8, 3)
    with pytest.raises(DataError) as exc:
        build_dataset({"name": "no-such-dataset"})
    assert "no-such-dataset" in str(exc.value) and "synthetic-images" in str(exc.value) and "wordnet40" in str(exc.value)


def test_save_load_text_and_image(tmp_path, fake_dir):
    ds = build_wordnet40(fake_dir, 5, 2)
    p = save_dataset(ds, tmp_path / "out" / "dataset.json")
    assert load_dataset(p) == ds
    img = make_synthetic_images(3, 4, 2, image_size=8)
    q = save_dataset(img, tmp_path / "out" / "images.npz")
    assert q.exists() and not (tmp_path / "out" / "images.npz.npz").exists()
    back = load_dataset(q)
    assert back["classes"] == img["classes"] and back["info"] == img["info"] and back["modality"] == "image"
    for split in ("train", "test"):
        assert back[split]["images"].dtype == np.uint8
        assert np.array_equal(back[split]["images"], img[split]["images"])
        assert back[split]["label"] == img[split]["label"]


def test_load_dataset_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DataError, match=str(broken)):
        load_dataset(broken)
    incomplete = tmp_path / "incomplete.json"
    incomplete.write_text(json.dumps({"name": "x", "modality": "text", "classes": ["a"],
                                      "train": {"text": ["t"], "label": [0]}}))
    with pytest.raises(DataError, match="missing keys"):
        load_dataset(incomplete)
    bad_label = tmp_path / "bad_label.json"
    bad_label.write_text(json.dumps({"name": "x", "modality": "text", "classes": ["a"],
                                     "train": {"text": ["t"], "label": [3]}, "test": {"text": [], "label": []}}))
    with pytest.raises(DataError, match="labels"):
        load_dataset(bad_label)


def test_load_labels_only_skips_images(tmp_path):
    img = make_synthetic_images(3, 4, 2, image_size=8)
    path = save_dataset(img, tmp_path / "img.npz")
    light = load_dataset(path, labels_only=True)
    assert light["train"]["label"] == img["train"]["label"] and light["test"]["label"] == img["test"]["label"]
    assert light["train"]["images"].shape == (12, 0, 0, 3)
