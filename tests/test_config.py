"""lorm.config: schema validation, defaults, one-line errors, overrides."""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import pytest
import yaml

from lorm.config import (
    SCHEMA_PATH,
    ConfigError,
    beta_label,
    deep_merge,
    load_config,
    load_experiments,
    load_schema,
    method_config,
    parse_set_overrides,
    validate_config,
    write_config_if_changed,
)

REPO = Path(__file__).resolve().parents[1]


def _error(overrides: dict) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=overrides)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def _leaf_keys(schema: dict, prefix: str = "") -> list[tuple[str, dict]]:
    """(dotted key, merged subschema) of every leaf key of the config (not of method_params' inner schema)."""
    out = []
    defs = schema["$defs"]
    for name, sub in schema["properties"].items():
        target = defs[sub["$ref"].rsplit("/", 1)[1]] if "$ref" in sub else sub
        if target.get("type") == "object" and "properties" in target:
            for leaf, leaf_schema in target["properties"].items():
                merged = {**leaf_schema, **sub.get("properties", {}).get(leaf, {})}
                out.append((f"{prefix}{name}.{leaf}", merged))
        else:
            out.append((f"{prefix}{name}", sub))
    return out


# ------------------------------------------------------------------------------------------------- defaults


def test_defaults_filled_nested():
    cfg = load_config()
    assert cfg["experiment"] == "wordnet40-minilm"
    assert cfg["seeds"] == [0]
    assert cfg["methods"] == ["lorm", "lorm-a-only", "lorm-b-only", "fedavg-lora", "ffa-lora", "joint", "ta",
                              "knots-ties", "knots-dare-ties"]
    assert cfg["method_params"] == {}
    assert cfg["dataset"] == {"name": "wordnet40", "root": None, "train_per_class": 40, "test_per_class": 12,
                              "evaluate_on": "test", "seed": 0, "max_length": 32, "image_size": 32,
                              "preprocessing": "intended", "cub_int8_wrap": False, "strict": True}
    assert cfg["fcil"]["rounds"] == 3 and cfg["fcil"]["betas"] == [0.5] and cfg["fcil"]["class_order"] == "natural"
    assert cfg["model"]["lora_rank"] == 4 and cfg["model"]["lora_targets"] is None
    assert cfg["optim"] == {"lr": 0.003, "lr_A": None, "lr_B": None, "weight_decay": 0.0}
    assert cfg["lorm"] == {"alpha_backbone": 0.0, "alpha_head": 0.5, "stats_passes": 1, "stats_augment": True,
                           "stats_model": "trained", "head_merge": "regmean"}
    assert cfg["experiments"] is None
    assert cfg["joint"] == {"epochs": None}
    assert cfg["runtime"]["device"] == "auto" and cfg["runtime"]["progress"] is True


def test_partial_section_gets_the_other_defaults():
    cfg = load_config(overrides={"fcil": {"rounds": 7}, "optim": {"lr_A": 0.01}})
    assert cfg["fcil"]["rounds"] == 7 and cfg["fcil"]["num_clients"] == 10 and cfg["fcil"]["batch_size"] == 16
    assert cfg["optim"] == {"lr": 0.003, "lr_A": 0.01, "lr_B": None, "weight_decay": 0.0}


def test_defaults_are_not_shared_between_configs():
    a, b = load_config(), load_config()
    a["seeds"].append(5)
    a["fcil"]["betas"].append(0.1)
    assert b["seeds"] == [0] and b["fcil"]["betas"] == [0.5]
    assert load_config()["seeds"] == [0]


def test_every_key_has_description_and_default_and_no_extra_keys():
    schema = load_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    leaves = _leaf_keys(schema)
    assert len(leaves) == 121  # 7 top-level keys + 114 keys in 18 sections
    for key, sub in leaves:
        assert sub.get("description"), key
        assert "default" in sub, key
    for name, sub in schema["properties"].items():
        target = schema["$defs"][sub["$ref"].rsplit("/", 1)[1]] if "$ref" in sub else sub
        if target.get("type") == "object" and "properties" in target:
            assert target["additionalProperties"] is False, name
    assert schema["additionalProperties"] is False


def test_schema_methods_match_the_method_registry():
    from lorm.methods.names import METHOD_NAMES

    assert load_schema()["$defs"]["method_name"]["enum"] == list(METHOD_NAMES)


def test_key_order_is_canonical():
    raw = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    shuffled = {k: (dict(reversed(list(v.items()))) if isinstance(v, dict) else v) for k, v in reversed(raw.items())}
    shuffled["method_params"] = {"joint": {"optim": {"lr": 1.0}}, "lorm": {"lorm": {"alpha_head": 0.1}}}
    cfg = load_config(overrides=shuffled)
    assert list(cfg) == list(load_schema()["properties"])
    assert list(cfg["fcil"])[:2] == ["num_tasks", "task_sizes"]
    assert list(cfg["method_params"]) == ["lorm", "joint"]  # schema order of the method names


# --------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"bogus": 1}, "bogus"),
        ({"fcil": {"beta_list": [0.5]}}, "fcil.beta_list"),
        ({"dataset": {"nmae": "wordnet40"}}, "dataset.nmae"),
        ({"model": {"rank": 4}}, "model.rank"),
        ({"optim": {"lrr": 0.1}}, "optim.lrr"),
        ({"lorm": {"alpha": 0.1}}, "lorm.alpha"),
        ({"joint": {"epoch": 1}}, "joint.epoch"),
        ({"runtime": {"gpus": 1}}, "runtime.gpus"),
        ({"method_params": {"lorm": {"optimizer": {}}}}, "method_params.lorm.optimizer"),
        ({"method_params": {"lorm": {"optim": {"momentum": 0.9}}}}, "method_params.lorm.optim.momentum"),
    ],
)
def test_unknown_key_names_the_dotted_key(overrides, key):
    message = _error(overrides)
    assert message.startswith(f"config key {key}: unknown key (")
    assert "allowed:" in message


def test_unknown_key_suggestions():
    assert "did you mean 'betas'?" in _error({"fcil": {"beta_list": [0.5]}})
    message = _error({"method_params": {"lorm": {"lr": 0.1}}})
    assert "put it under optim: method_params.lorm.optim.lr" in message


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"fcil": {"rounds": -1}}, "config key fcil.rounds: -1 is less than the minimum 1"),
        ({"fcil": {"num_clients": 0}}, "config key fcil.num_clients: 0 is less than the minimum 1"),
        ({"fcil": {"betas": [0.5, 0]}}, "config key fcil.betas[1]: 0 must be greater than 0"),
        ({"fcil": {"betas": []}}, "config key fcil.betas: needs at least 1 item"),
        ({"fcil": {"class_order": "random"}}, "config key fcil.class_order: 'random' is not valid"),
        ({"fcil": {"class_order": [0, -2]}}, "config key fcil.class_order[1]: -2 is less than the minimum 0"),
        ({"fcil": {"task_sizes": [4, 0]}}, "config key fcil.task_sizes[1]: 0 is less than the minimum 1"),
        ({"methods": ["lorm", "bogus"]}, "config key methods[1]: 'bogus' is not allowed (allowed: lorm,"),
        ({"methods": ["lorm", "lorm"]}, "config key methods: duplicate entries lorm"),
        ({"seeds": []}, "config key seeds: needs at least 1 item"),
        ({"seeds": [0, -1]}, "config key seeds[1]: -1 is less than the minimum 0"),
        ({"seeds": [1.5]}, "config key seeds[0]: expected integer, got number 1.5"),
        ({"experiment": "a/b"}, "config key experiment: 'a/b' does not match"),
        ({"dataset": {"name": "cifar10"}}, "config key dataset.name: 'cifar10' is not allowed (did you mean 'cifar100'?"),
        ({"dataset": {"preprocessing": "offical"}}, "config key dataset.preprocessing: 'offical' is not allowed"),
        ({"lorm": {"stats_augment": "yes"}}, "config key lorm.stats_augment: expected boolean, got string"),
        ({"dataset": {"max_length": 2}}, "config key dataset.max_length: 2 is less than the minimum 4"),
        ({"model": {"backbone": "vit"}}, "config key model.backbone: 'vit' is not allowed"),
        ({"model": {"pooling": "max"}}, "config key model.pooling: 'max' is not allowed"),
        ({"optim": {"lr": 0}}, "config key optim.lr: 0 must be greater than 0"),
        ({"optim": {"weight_decay": -0.1}}, "config key optim.weight_decay: -0.1 is less than the minimum 0"),
        ({"lorm": {"alpha_head": 1.5}}, "config key lorm.alpha_head: 1.5 is greater than the maximum 1"),
        ({"joint": {"epochs": 0}}, "config key joint.epochs: 0 is less than the minimum 1"),
        ({"runtime": {"device": "gpu"}}, "config key runtime.device: 'gpu' does not match"),
        ({"runtime": {"amp": "fp8"}}, "config key runtime.amp: 'fp8' is not allowed"),
        ({"runtime": {"progress": "yes"}}, "config key runtime.progress: expected boolean, got string 'yes'"),
        ({"fcil": "x"}, "config key fcil: expected mapping, got string 'x'"),
        ({"method_params": {"lorm": {"optim": {"lr": -1}}}}, "config key method_params.lorm.optim.lr: -1 must be"),
    ],
)
def test_bad_values_give_one_line(overrides, expected):
    assert _error(overrides).startswith(expected)


def test_yaml_pitfall_hints():
    assert "write it with a dot, e.g. 1.0e-3" in _error({"optim": {"lr": "1e-3"}})
    assert "quote the value" in _error({"runtime": {"amp": False}})  # YAML `amp: off`
    assert "use --configfile" in _error({"seeds": ["0", "1"]})  # snakemake --config 'seeds=[0,1]'


def test_several_problems_are_counted():
    message = _error({"fcil": {"rounds": 0, "num_clients": 0}, "seeds": [-1]})
    assert "(+2 more keys with problems)" in message


def test_method_params_rejects_unknown_method():
    message = _error({"method_params": {"lorn": {"optim": {"lr": 0.1}}}})
    assert message.startswith("config key method_params.lorn: unknown method (did you mean 'lorm'? allowed: lorm,")


def test_method_params_are_not_filled_and_merge_per_method():
    cfg = load_config(overrides={"method_params": {"lorm": {"optim": {"lr": 0.01}}, "joint": {"lorm": {}}}})
    assert cfg["method_params"] == {"lorm": {"optim": {"lr": 0.01}}, "joint": {"lorm": {}}}
    lorm = method_config(cfg, "lorm")
    assert lorm["optim"] == {"lr": 0.01, "lr_A": None, "lr_B": None, "weight_decay": 0.0}
    assert method_config(cfg, "fedavg-lora")["optim"]["lr"] == 0.003
    assert cfg["optim"]["lr"] == 0.003  # method_config does not modify its argument


def test_validate_config_in_place_and_untouched_on_error():
    cfg = {"fcil": {"rounds": 2}}
    out = validate_config(cfg)
    assert out is cfg and cfg["fcil"]["num_clients"] == 10 and cfg["runtime"]["threads"] == 1
    bad = {"fcil": {"rounds": 0}}
    before = copy.deepcopy(bad)
    with pytest.raises(ConfigError):
        validate_config(bad)
    assert bad == before
    with pytest.raises(ConfigError, match="expected a mapping"):
        validate_config([1, 2])  # type: ignore[arg-type]


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


# ------------------------------------------------------------------------------------------ files, overrides


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config("config/x.yaml")
    assert str(info.value) == "config file config/x.yaml: not found"


def test_invalid_yaml_and_non_mapping(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("fcil:\n  rounds: [1\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert str(info.value).startswith(f"config file {bad}: invalid YAML at line ") and "\n" not in str(info.value)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping of config keys, got list"):
        load_config(bad)
    bad.write_text("")
    assert load_config(bad) == load_config()


def test_file_errors_name_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("fcil:\n  rounds: 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: config key fcil.rounds: 0 is less than the minimum 1"


def test_overrides_deep_merge_over_the_file():
    cfg = load_config(REPO / "config" / "test.yaml", {"fcil": {"rounds": 5}, "methods": ["joint"]})
    assert cfg["fcil"]["rounds"] == 5
    assert cfg["fcil"]["num_clients"] == 2  # kept from the file
    assert cfg["methods"] == ["joint"]  # lists are replaced
    assert deep_merge({"a": {"b": 1, "c": [1]}}, {"a": {"c": [2]}}) == {"a": {"b": 1, "c": [2]}}


def test_parse_set_overrides():
    assert parse_set_overrides(["fcil.rounds=2", "methods=[lorm,joint]"]) == {
        "fcil": {"rounds": 2}, "methods": ["lorm", "joint"]}
    assert parse_set_overrides(["fcil.rounds=2", "fcil.betas=[0.5, 0.1]", "dataset.root=", "experiment=x.y"]) == {
        "fcil": {"rounds": 2, "betas": [0.5, 0.1]}, "dataset": {"root": None}, "experiment": "x.y"}
    assert parse_set_overrides(["optim.lr=1.0e-3", "runtime.amp='off'"]) == {
        "optim": {"lr": 0.001}, "runtime": {"amp": "off"}}
    assert parse_set_overrides([]) == {} and parse_set_overrides(None) == {}
    cfg = load_config(overrides=parse_set_overrides(["fcil.rounds=2", "methods=[lorm,joint]"]))
    assert cfg["fcil"]["rounds"] == 2 and cfg["methods"] == ["lorm", "joint"]


@pytest.mark.parametrize("items, expected", [
    (["rounds"], "expected KEY=VALUE"),
    (["=3"], "expected KEY=VALUE"),
    (["fcil..rounds=3"], "expected KEY=VALUE"),
    (["fcil.rounds=[1"], "is not valid YAML"),
    (["fcil=1", "fcil.rounds=2"], "fcil was already set"),
])
def test_parse_set_overrides_errors(items, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        parse_set_overrides(items)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------ repository files


@pytest.mark.parametrize("name", ["config.yaml", "test.yaml"])
def test_repo_configs_validate_and_are_complete(name):
    path = REPO / "config" / name
    raw = yaml.safe_load(path.read_text())
    assert load_config(path) == raw  # every key written out: nothing left to fill in


def test_default_config_file_matches_schema_defaults():
    # the lead may tune config/config.yaml later; then update this test and the schema defaults together
    assert load_config(REPO / "config" / "config.yaml") == load_config()


def test_test_config_is_tiny():
    cfg = load_config(REPO / "config" / "test.yaml")
    assert cfg["experiment"] == "test" and cfg["methods"] == ["lorm", "fedavg-lora", "joint"]
    assert cfg["dataset"]["train_per_class"] <= 8 and cfg["fcil"]["num_clients"] <= 2


def test_readme_documents_every_key():
    text = (REPO / "config" / "README.md").read_text()
    for key, _ in _leaf_keys(load_schema()):
        assert f"| `{key}` |" in text, key


def test_schema_is_packaged_and_linked():
    assert SCHEMA_PATH == REPO / "lorm" / "schemas" / "config.schema.yaml"
    link = REPO / "workflow" / "schemas" / "config.schema.yaml"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    assert link.resolve() == SCHEMA_PATH


# ------------------------------------------------------------------------------------------------- helpers


def test_beta_label():
    assert beta_label(1) == beta_label(1.0) == beta_label("1") == "1.0"
    assert beta_label(0.5) == "0.5" and beta_label(0.05) == "0.05" and beta_label(5e-5) == "5e-05"
    with pytest.raises(ConfigError):
        beta_label(0)


def test_write_config_if_changed(tmp_path):
    path = tmp_path / "sub" / "resolved.yaml"
    cfg = load_config()
    assert write_config_if_changed(cfg, path) is True
    assert yaml.safe_load(path.read_text()) == cfg
    stamp = path.stat().st_mtime_ns
    time.sleep(0.01)
    assert write_config_if_changed(load_config(), path) is False
    assert path.stat().st_mtime_ns == stamp
    assert write_config_if_changed(load_config(overrides={"seeds": [1]}), path) is True
    assert load_config(path)["seeds"] == [1]
    assert [p.name for p in path.parent.iterdir()] == ["resolved.yaml"]  # no temporary file left


# ------------------------------------------------------------------------------------------------ experiments


def _experiment_file(tmp_path, name: str, **changes) -> str:
    """A complete copy of config/test.yaml named ``name`` (sections in ``changes`` are merged over it)."""
    cfg = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    cfg = deep_merge(cfg, {"experiment": name, **changes})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)


def test_load_experiments_in_listed_order_each_validated(tmp_path):
    a = _experiment_file(tmp_path, "b-first", fcil={"rounds": 4})
    b = _experiment_file(tmp_path, "a-second", seeds=[3, 4])
    experiments = load_experiments({"experiments": [a, b]})
    assert list(experiments) == ["b-first", "a-second"]
    assert experiments["b-first"] == load_config(a)  # exactly what the file gives on its own
    assert experiments["b-first"]["fcil"]["rounds"] == 4 and experiments["a-second"]["seeds"] == [3, 4]
    assert experiments["a-second"]["experiments"] is None


def test_load_experiments_paths_relative_to_base_dir(tmp_path):
    _experiment_file(tmp_path, "rel")
    assert list(load_experiments({"experiments": ["rel.yaml"]}, base_dir=tmp_path)) == ["rel"]
    with pytest.raises(ConfigError, match="rel.yaml: not found"):
        load_experiments({"experiments": ["rel.yaml"]}, base_dir=tmp_path / "elsewhere")


def test_including_methods_and_seeds_override_every_file(tmp_path):
    files = [_experiment_file(tmp_path, "x", seeds=[0, 1, 2]), _experiment_file(tmp_path, "y", methods=["joint"])]
    experiments = load_experiments({"experiments": files, "methods": ["lorm"], "seeds": [7]})
    for cfg in experiments.values():
        assert cfg["methods"] == ["lorm"] and cfg["seeds"] == [7]
    only_seeds = load_experiments({"experiments": files, "seeds": [5]})
    assert only_seeds["x"]["methods"] == ["lorm", "fedavg-lora", "joint"] and only_seeds["y"]["methods"] == ["joint"]
    assert only_seeds["x"]["seeds"] == only_seeds["y"]["seeds"] == [5]


def test_duplicate_experiment_names_are_one_line(tmp_path):
    first = _experiment_file(tmp_path, "same")
    second = tmp_path / "copy.yaml"
    second.write_text(Path(first).read_text())
    with pytest.raises(ConfigError) as info:
        load_experiments({"experiments": [first, str(second)]})
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{second}: config key experiment: 'same'") and first in message


def test_bad_key_in_one_listed_file_names_that_file_and_key(tmp_path):
    good = _experiment_file(tmp_path, "good")
    bad = _experiment_file(tmp_path, "bad", fcil={"rounds": 0})
    with pytest.raises(ConfigError) as info:
        load_experiments({"experiments": [good, bad]})
    assert str(info.value) == f"{bad}: config key fcil.rounds: 0 is less than the minimum 1"
    typo = _experiment_file(tmp_path, "typo", optim={"lrr": 0.1})
    with pytest.raises(ConfigError, match=r"typo.yaml: config key optim.lrr: unknown key") as info:
        load_experiments({"experiments": [good, typo]})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("including, expected", [
    ({"experiments": ["a.yaml"], "fcil": {"rounds": 2}},
     "paper.yaml: config key fcil: not allowed next to experiments"),
    ({"experiments": ["a.yaml"], "methods": ["bogus"]},
     "paper.yaml: config key methods[0]: 'bogus' is not allowed"),
    ({"experiments": ["a.yaml"], "seeds": "0"}, "paper.yaml: config key seeds: expected list"),
    ({"experiments": []}, "paper.yaml: config key experiments: needs at least 1 item"),
    ({"experiments": "a.yaml"}, "paper.yaml: config key experiments: expected list or null"),
])
def test_including_config_errors(tmp_path, including, expected):
    with pytest.raises(ConfigError) as info:
        load_experiments(including, base_dir=tmp_path, source="paper.yaml")
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)


def test_listed_file_must_name_its_experiment_and_not_nest(tmp_path):
    unnamed = tmp_path / "unnamed.yaml"
    unnamed.write_text("seeds: [0]\n")
    with pytest.raises(ConfigError, match="unnamed.yaml: config key experiment: missing"):
        load_experiments({"experiments": [str(unnamed)]})
    nested = _experiment_file(tmp_path, "nested", experiments=[str(unnamed)])
    with pytest.raises(ConfigError, match="nested.yaml: config key experiments: a listed experiment file cannot"):
        load_experiments({"experiments": [nested]})


def test_load_config_refuses_an_including_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(REPO / "config" / "paper.yaml")
    message = str(info.value)
    assert "config key experiments: this config lists 18 experiment files" in message
    assert "config/paper/cifar100-beta0.5.yaml" in message and "\n" not in message


# --------------------------------------------------------------------------------------- the paper's settings

PAPER_DIR = REPO / "config" / "paper"
PAPER_FILES = sorted(PAPER_DIR.glob("*.yaml"))


def _paper(name: str) -> dict:
    return load_config(PAPER_DIR / f"{name}.yaml")


def test_make_configs_reproduces_the_committed_files(tmp_path):
    import subprocess
    import sys

    out, index = tmp_path / "paper", tmp_path / "paper.yaml"
    proc = subprocess.run([sys.executable, str(PAPER_DIR / "make_configs.py"), "--out-dir", str(out),
                           "--index", str(index)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    written = sorted(p.name for p in out.iterdir())
    assert written == [p.name for p in PAPER_FILES] and len(written) == 18
    for name in written:
        assert (out / name).read_text() == (PAPER_DIR / name).read_text(), name
    assert index.read_text() == (REPO / "config" / "paper.yaml").read_text()
    check = subprocess.run([sys.executable, str(PAPER_DIR / "make_configs.py"), "--check"], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stderr


def test_paper_index_lists_every_file_and_loads_18_experiments():
    index = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    assert set(index) == {"experiments"}
    assert sorted(index["experiments"]) == sorted(f"config/paper/{p.name}" for p in PAPER_FILES)
    experiments = load_experiments(index, base_dir=REPO)
    assert len(experiments) == 18
    assert {cfg["dataset"]["name"] for cfg in experiments.values()} == {
        "cifar100", "imagenet-r", "imagenet-a", "eurosat", "cub200", "cars196"}
    for name, cfg in experiments.items():
        assert name == f"{cfg['dataset']['name']}-beta{beta_label(cfg['fcil']['betas'][0])}"


@pytest.mark.parametrize("path", PAPER_FILES, ids=[p.stem for p in PAPER_FILES])
def test_paper_configs_are_complete_and_share_the_protocol(path):
    raw = yaml.safe_load(path.read_text())
    cfg = load_config(path)
    assert cfg == raw  # every key written out
    assert cfg["seeds"] == [0, 1, 2]
    assert cfg["methods"] == ["lorm", "lorm-a-only", "lorm-b-only", "fedavg-lora", "ffa-lora", "joint", "ta", "ties",
                              "dare-ties", "knots-ties", "knots-dare-ties", "fedavg", "ewc", "lwf", "fisheravg",
                              "regmean", "ccvr", "fedproto", "target", "pilora", "l2p", "coda-p"]
    assert cfg["baselines"] == {"lr": 0.0003, "stats_on_raw_inputs": False}  # the official defaults (spec 13)
    assert cfg["model"]["backbone"] == "vit_base_patch16_224.augreg_in21k"
    assert cfg["dataset"]["image_size"] == 224 and cfg["dataset"]["root"] == "data/"
    assert cfg["dataset"]["preprocessing"] == "intended" and cfg["dataset"]["strict"] is True
    fcil = cfg["fcil"]
    assert (fcil["num_clients"], fcil["local_epochs"], fcil["batch_size"], fcil["min_samples"]) == (10, 5, 16, 6)
    assert fcil["class_order"] == "natural" and len(fcil["betas"]) == 1
    assert cfg["optim"]["weight_decay"] == 0.0 and cfg["lorm"]["alpha_backbone"] == 0.0
    assert cfg["lorm"]["stats_augment"] is True and cfg["method_params"] == {}
    assert cfg["runtime"]["device"] == "auto" and cfg["runtime"]["threads"] == 8
    assert cfg["runtime"]["num_workers"] == 8
    name = cfg["dataset"]["name"]
    assert fcil["rounds"] == (10 if name in ("cars196", "imagenet-a") else 5)
    assert cfg["lorm"]["stats_passes"] == 1  # every official run makes one pass (regmean_rounds never reaches it)
    assert cfg["lorm"]["alpha_head"] == (0.3 if name == "cub200" else 0.5)
    classes = {"cifar100": 100, "imagenet-r": 200, "imagenet-a": 200, "eurosat": 10, "cub200": 200, "cars196": 196}
    sizes = fcil["task_sizes"] or [classes[name] // fcil["num_tasks"]] * fcil["num_tasks"]
    assert sum(sizes) == classes[name] and len(sizes) == fcil["num_tasks"]
    assert fcil["num_tasks"] == (5 if name == "eurosat" else 10)
    expected_betas = {0.5, 0.1, 0.05} if name in ("cifar100", "imagenet-r") else {1.0, 0.5, 0.2}
    assert fcil["betas"][0] in expected_betas


def test_paper_settings_spot_checks_against_the_spec_table():
    cub = _paper("cub200-beta0.5")  # r 1, lr 3e-2, lr_A 1e-3, alpha_head 0.3
    assert cub["model"]["lora_rank"] == 1 and cub["optim"]["lr"] == 3e-2 and cub["optim"]["lr_A"] == 1e-3
    assert cub["optim"]["lr_B"] is None and cub["lorm"]["alpha_head"] == 0.3
    cars = _paper("cars196-beta0.2")  # r 4, lr_B 1e-3, lr_A 1e-2, rounds 10, 9 x 20 + 16
    assert cars["model"]["lora_rank"] == 4 and cars["optim"]["lr_B"] == 1e-3 and cars["optim"]["lr_A"] == 1e-2
    assert cars["optim"]["lr"] == 1e-2 and cars["fcil"]["rounds"] == 10
    assert cars["fcil"]["num_tasks"] == 10 and cars["fcil"]["task_sizes"] == [20] * 9 + [16]
    cifar = _paper("cifar100-beta0.1")  # r 16, lr 3e-4 (= both factors)
    assert cifar["model"]["lora_rank"] == 16 and cifar["optim"]["lr"] == 3e-4
    assert cifar["optim"]["lr_A"] is None and cifar["optim"]["lr_B"] is None
    assert _paper("imagenet-r-beta0.1")["model"]["lora_rank"] == 32
    assert _paper("eurosat-beta1.0")["fcil"]["num_tasks"] == 5
    # PILoRA: the released experiments' learning rates (baselines2-spec table 7), fed-mammoth's other defaults
    assert cifar["pilora"] == {**load_config()["pilora"], "lr": 0.02, "lr_back": 1e-4}


def _lr_variants_only(variants: dict) -> None:
    """Every variant is L2P, CODA-P or PILoRA with another `lr` of its own section, nothing else."""
    sections = {"l2p": "l2p", "coda-p": "coda", "pilora": "pilora"}
    for name, variant in variants.items():
        base = variant["of"]
        assert set(variant) == {"of", sections[base]} and set(variant[sections[base]]) == {"lr"}, name
        assert name == f"{base}-lr{variant[sections[base]]['lr']:.0e}".replace("e-0", "e-"), name


def test_baselines_config_only_adds_the_baselines_to_the_default():
    """config/baselines.yaml merged over config/config.yaml (as Snakemake does) = the default + the baselines, a
    CPU synthesis budget for TARGET, and the lr variants chosen on validation by config/lr-sweep.yaml."""
    from lorm.methods.names import FULL_FINETUNING

    default = load_config(REPO / "config" / "config.yaml")
    extra = yaml.safe_load((REPO / "config" / "baselines.yaml").read_text())
    assert set(extra) <= {"methods", "target", "variants"}
    variants = extra.get("variants") or {}
    assert extra["methods"] == (default["methods"] + ["ties", "dare-ties"] + list(FULL_FINETUNING)
                                + ["pilora", "l2p", "coda-p"] + list(variants))
    _lr_variants_only(variants)
    # TARGET: a smaller synthesis budget only (rounds, generator steps, warm-up, student steps)
    assert set(extra["target"]) == {"syn_rounds", "g_steps", "warmup", "student_kd_steps"}
    assert extra["target"]["warmup"] < extra["target"]["syn_rounds"]  # the adversarial term and student KD run
    merged = load_config(REPO / "config" / "config.yaml", extra)
    changed = ("methods", "target", "variants")
    assert {k: v for k, v in merged.items() if k not in changed} == {k: v for k, v in default.items()
                                                                      if k not in changed}


def test_lr_sweep_config_changes_only_the_split_the_name_and_the_lr():
    """config/lr-sweep.yaml: the default's data, partition and schedule, evaluated on validation."""
    default = load_config(REPO / "config" / "config.yaml")
    extra = yaml.safe_load((REPO / "config" / "lr-sweep.yaml").read_text())
    assert set(extra) == {"experiment", "dataset", "methods", "variants"} and extra["dataset"] == {
        "evaluate_on": "validation"}
    assert set(extra["methods"]) == {"l2p", "coda-p", "pilora"} | set(extra["variants"])
    _lr_variants_only(extra["variants"])
    merged = load_config(REPO / "config" / "config.yaml", extra)
    assert merged["experiment"] != default["experiment"]  # its own results folder
    assert {**merged["dataset"], "evaluate_on": "test"} == default["dataset"]
    changed = ("experiment", "dataset", "methods", "variants")
    assert {k: v for k, v in merged.items() if k not in changed} == {k: v for k, v in default.items()
                                                                      if k not in changed}