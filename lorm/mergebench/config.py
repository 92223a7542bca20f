"""Configuration of the merge benchmark: YAML + overrides, validated against ``lorm/schemas/mergebench.schema.yaml``.

A thin loader over the machinery of :mod:`lorm.config` (same JSON-Schema validator with default filling, same
one-line :class:`~lorm.config.ConfigError` messages naming the key, same YAML reader and ``--set`` parser); only
the schema file and a few cross-key checks are specific to the benchmark.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import jsonschema
import yaml

from lorm.config import ConfigError, _extend_with_defaults, _format_error, _read_yaml, deep_merge, parse_set_overrides

__all__ = ["SCHEMA_PATH", "CLIP_BACKBONES", "BenchError", "ConfigError", "load_merge_config", "validate_merge_config",
           "fingerprint", "parse_set_overrides"]

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "mergebench.schema.yaml"
CLIP_BACKBONES = ("clip-vit-b32", "clip-tiny-test")
TEXT_BACKBONES = ("minilm",)

#: The config sections that determine a fine-tuned model; merge/alignment jobs refuse files made with others.
FINETUNE_SECTIONS = ("seed", "tasks", "dataset", "model", "train")


class BenchError(ValueError):
    """Inputs of a benchmark job do not fit together (files, tasks, methods). One-line message."""


@functools.lru_cache(maxsize=1)
def _schema() -> dict:
    with open(SCHEMA_PATH, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


@functools.lru_cache(maxsize=1)
def _validator():
    schema = _schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return _extend_with_defaults(jsonschema.Draft202012Validator)(schema)


def _cross_checks(cfg: dict) -> None:
    tasks, model, dataset = cfg["tasks"], cfg["model"], cfg["dataset"]
    backbone = model["backbone"]
    if tasks["source"] == "datasets":
        if not tasks["datasets"]:
            raise ConfigError("config key tasks.datasets: needs at least 1 data set when tasks.source is datasets")
        if backbone in TEXT_BACKBONES:
            raise ConfigError(f"config key model.backbone: {backbone} is a text backbone but tasks.source datasets "
                              "holds image data sets (use clip-vit-b32)")
    else:
        text_data = dataset["name"] == "wordnet40"
        if text_data != (backbone in TEXT_BACKBONES):
            kind = "text" if text_data else "image"
            raise ConfigError(f"config key model.backbone: {backbone} does not take the {kind} data of "
                              f"dataset.name {dataset['name']}")
    if model["head"] == "text" and backbone not in CLIP_BACKBONES:
        raise ConfigError(f"config key model.head: text heads need a CLIP backbone ({', '.join(CLIP_BACKBONES)}), "
                          f"got {backbone}")
    if model["head"] == "text" and tasks["source"] != "datasets":
        raise ConfigError("config key model.head: text heads need named classes of the vision data sets "
                          "(tasks.source datasets); use head trained for class-split tasks")
    if cfg["train"]["warmup_steps"] > cfg["train"]["max_steps"]:
        raise ConfigError(f"config key train.warmup_steps: {cfg['train']['warmup_steps']} is more than "
                          f"train.max_steps {cfg['train']['max_steps']}")
    if cfg["metrics"]["denominators"] == "official" and tasks["source"] != "datasets":
        raise ConfigError("config key metrics.denominators: official denominators exist only for the 8 vision "
                          "tasks (tasks.source datasets)")


def validate_merge_config(cfg: Mapping) -> dict:
    """A validated copy of ``cfg`` with every default filled in; ConfigError (one line) otherwise."""
    if not isinstance(cfg, Mapping):
        raise ConfigError("config: expected a mapping of config keys")
    resolved = copy.deepcopy(dict(cfg))
    errors = list(_validator().iter_errors(resolved))
    if errors:
        others = {tuple(e.absolute_path) for e in errors[1:]} - {tuple(errors[0].absolute_path)}
        more = f" (+{len(others)} more key{'s' if len(others) > 1 else ''} with problems)" if others else ""
        raise ConfigError(_format_error(errors[0]) + more)
    _cross_checks(resolved)
    return resolved


def load_merge_config(path=None, overrides: Mapping | None = None) -> dict:
    """Read a YAML config (None = the schema defaults, i.e. the offline default benchmark), deep-merge
    ``overrides`` (a nested dict, e.g. from :func:`parse_set_overrides`), validate, fill defaults."""
    cfg = {} if path is None else _read_yaml(path)
    if overrides:
        cfg = deep_merge(cfg, overrides)
    try:
        return validate_merge_config(cfg)
    except ConfigError as exc:
        if path is None:
            raise
        raise ConfigError(f"{path}: {exc}") from None


def fingerprint(cfg: Mapping, sections=FINETUNE_SECTIONS) -> str:
    """Short hash of the config sections that determine the fine-tuned models (tasks, data, model, training)."""
    picked = copy.deepcopy({k: cfg.get(k) for k in sections})
    if isinstance(picked.get("dataset"), dict):
        picked["dataset"].pop("num_workers", None)  # decoding threads do not change the data
    text = json.dumps(picked, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
