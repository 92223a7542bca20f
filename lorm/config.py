"""Experiment configuration: load YAML, merge overrides, validate against the schema, fill defaults.

The schema (``lorm/schemas/config.schema.yaml``, JSON Schema draft 2020-12) is the single source of truth for
keys, types, ranges and defaults; ``workflow/schemas/config.schema.yaml`` is a symlink to it and the Snakemake
workflow validates its ``config`` with :func:`validate_config`.

Every problem is reported as a :class:`ConfigError` with a one-line message naming the key and the fix, e.g.
``config key fcil.rounds: -1 is less than the minimum 1``.
"""

from __future__ import annotations

import copy
import difflib
import functools
import math
import os
from collections.abc import Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

__all__ = [
    "SCHEMA_PATH",
    "EXPERIMENT_OVERRIDES",
    "ConfigError",
    "beta_label",
    "deep_merge",
    "load_config",
    "load_experiments",
    "load_schema",
    "base_method",
    "method_config",
    "parse_set_overrides",
    "validate_config",
    "write_config_if_changed",
]

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"

#: Top-level keys an including config (one with ``experiments``) may set besides ``experiments``: they replace
#: the same keys of every listed experiment file.
EXPERIMENT_OVERRIDES = ("methods", "seeds", "merge_benchmark")


class ConfigError(ValueError):
    """An invalid configuration; ``str(error)`` is a single line naming the key and the fix."""


# --------------------------------------------------------------------------------------------------------------
# schema and validator


@functools.lru_cache(maxsize=1)
def _schema() -> dict:
    with open(SCHEMA_PATH, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def load_schema() -> dict:
    """The config schema as a dict (a copy; safe to modify)."""
    return copy.deepcopy(_schema())


def _extend_with_defaults(validator_class):
    """Validator class that also fills in ``default`` values of missing properties (recursively).

    Defaults of nested objects are ``{}`` in the schema; once inserted, validation descends into them and fills
    their own defaults. Defaults are deep-copied so that no two configs share mutable values.
    """
    validate_properties = validator_class.VALIDATORS["properties"]

    def properties_with_defaults(validator, properties, instance, schema):
        if validator.is_type(instance, "object"):
            for name, subschema in properties.items():
                if isinstance(subschema, Mapping) and "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": properties_with_defaults})


@functools.lru_cache(maxsize=1)
def _validator():
    schema = _schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return _extend_with_defaults(jsonschema.Draft202012Validator)(schema)


# --------------------------------------------------------------------------------------------------------------
# error formatting (one line, naming the key)


def _key_path(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<top level>"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__


def _names(values: Iterable[Any]) -> str:
    return ", ".join(str(v) for v in values)


def _suggest(word: Any, choices: Iterable[Any]) -> str:
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'? " if close else ""


def _type_hint(value: Any, expected: list[str]) -> str:
    if isinstance(value, str) and ("number" in expected or "integer" in expected):
        try:
            float(value)
        except ValueError:
            return ""
        if "e" in value.lower() and "." not in value:
            return f" (YAML reads {value} as a string: write it with a dot, e.g. 1.0e-3, or as 0.001)"
        return " (unquote the number; snakemake --config passes list items as strings: use --configfile)"
    if isinstance(value, bool) and "string" in expected:
        return " (YAML reads yes/no/on/off as booleans: quote the value)"
    return ""


def _format_error(error: jsonschema.ValidationError) -> str:
    path = list(error.absolute_path)
    key = _key_path(path)
    value = error.instance
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    kind = error.validator

    if "propertyNames" in error.relative_schema_path:
        # propertyNames errors point at the parent object; the offending key is the instance
        allowed = error.validator_value if kind == "enum" else []
        return (
            f"config key {_key_path(path + [value])}: unknown method ({_suggest(value, allowed)}"
            f"allowed: {_names(allowed)})"
        )
    if kind == "additionalProperties":
        allowed = list(schema.get("properties", {}))
        extra = [k for k in value if k not in allowed]
        name = extra[0] if extra else "?"
        hint = ""
        if path and path[0] == "method_params" and len(path) == 2:
            sections = [s for s, d in _schema()["$defs"].items() if name in d.get("properties", {})]
            if sections:
                return (
                    f"config key {_key_path(path + [name])}: unknown key (put it under {sections[0]}:"
                    f" {_key_path(path + [sections[0], name])}; allowed: {_names(allowed)})"
                )
        if not path and isinstance(name, str) and "." in name:
            hint = (
                "; nested keys are YAML mappings (fcil: {rounds: 3}), and snakemake --config sets top-level"
                " keys only: put nested settings in a file passed with --configfile"
            )
        return (
            f"config key {_key_path(path + [name])}: unknown key ({_suggest(name, allowed)}"
            f"allowed: {_names(allowed)}){hint}"
        )
    if kind == "type":
        expected = error.validator_value
        expected = [expected] if isinstance(expected, str) else list(expected)
        shown = " or ".join("mapping" if t == "object" else "list" if t == "array" else t for t in expected)
        return f"config key {key}: expected {shown}, got {_json_type(value)} {value!r}{_type_hint(value, expected)}"
    if kind == "enum":
        allowed = error.validator_value
        return f"config key {key}: {value!r} is not allowed ({_suggest(value, allowed)}allowed: {_names(allowed)})"
    if kind == "minimum":
        return f"config key {key}: {value!r} is less than the minimum {error.validator_value}"
    if kind == "exclusiveMinimum":
        return f"config key {key}: {value!r} must be greater than {error.validator_value}"
    if kind == "maximum":
        return f"config key {key}: {value!r} is greater than the maximum {error.validator_value}"
    if kind == "pattern":
        return (
            f"config key {key}: {value!r} does not match {error.validator_value}"
            f" ({schema.get('description', '').rstrip('.')})"
        )
    if kind == "uniqueItems":
        seen: list = []
        dups: list = []
        for item in value:
            if item in seen and item not in dups:
                dups.append(item)
            seen.append(item)
        return f"config key {key}: duplicate entries {_names(dups)} (list each value once)"
    if kind == "minItems":
        n = error.validator_value
        return f"config key {key}: needs at least {n} item{'s' if n != 1 else ''}"
    if kind == "minLength":
        return f"config key {key}: must not be empty"
    if kind in ("anyOf", "oneOf"):
        # an element inside a matching branch failed (e.g. class_order: [0, -1]): report that element
        deeper = [e for e in error.context if len(e.absolute_path) > len(path)]
        if deeper:
            return _format_error(deeper[0])
        description = schema.get("description", "").strip().rstrip(".")
        return f"config key {key}: {value!r} is not valid (expected: {description})"
    return f"config key {key}: {error.message}"


def _deref(schema: Mapping) -> Mapping:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return _schema()["$defs"][ref.rsplit("/", 1)[1]]
    return schema


def _in_schema_order(value: Any, schema: Any) -> Any:
    """``value`` with mapping keys in the schema's order (recursively), whatever order the YAML had.

    The resolved config then has one canonical form: its YAML dump and the Snakemake ``params`` built from it do
    not change when a user merely reorders keys (Snakemake compares params as text). Keys of ``method_params``
    follow the order of the method names in the schema.
    """
    if not isinstance(value, dict) or not isinstance(schema, Mapping):
        return value
    schema = _deref(schema)
    props = schema.get("properties", {})
    order = list(props) or list(_deref(schema.get("propertyNames", {})).get("enum", []))
    if not order and schema.get("propertyNames", {}).get("$ref") == "#/$defs/run_name":
        from lorm.methods.names import METHOD_NAMES

        order = list(METHOD_NAMES)  # methods in registry order, then variants as written
    keys = [k for k in order if k in value] + [k for k in value if k not in order]
    return {k: _in_schema_order(value[k], props.get(k, schema.get("additionalProperties"))) for k in keys}


# --------------------------------------------------------------------------------------------------------------
# public API


def _check_run_names(cfg: Mapping) -> str | None:
    """What the schema cannot check: every name under methods / method_params is a method or a declared variant,
    and no variant shadows a method. Returns the one-line problem, or None."""
    from lorm.methods.names import METHOD_NAMES

    variants = cfg.get("variants") or {}
    for name in variants:
        if name in METHOD_NAMES:
            return (f"config key variants.{name}: {name!r} is the name of a method (give the variant a name of its"
                    f" own, e.g. {name}-v2)")
    allowed = [*METHOD_NAMES, *variants]
    for i, name in enumerate(cfg.get("methods") or []):
        if name not in allowed:
            return (f"config key methods[{i}]: {name!r} is not allowed ({_suggest(name, allowed)}allowed: "
                    f"{_names(allowed)}; declare a variant under `variants` to run a method with other settings)")
    for name in cfg.get("method_params") or {}:
        if name not in allowed:
            return (f"config key method_params.{name}: unknown method ({_suggest(name, allowed)}"
                    f"allowed: {_names(allowed)})")
    return None


def validate_config(cfg: MutableMapping) -> MutableMapping:
    """Validate ``cfg`` against the schema and fill in the defaults of missing keys.

    The dict is updated **in place** (so that Snakemake's global ``config`` is resolved) and returned. On error
    a :class:`ConfigError` is raised and ``cfg`` is left unchanged.
    """
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"config: expected a mapping of config keys, got {_json_type(cfg)}")
    resolved = copy.deepcopy(dict(cfg))
    errors = list(_validator().iter_errors(resolved))
    if errors:
        # several schema keywords may fail for one key (e.g. type and enum): count keys, not keywords
        others = {tuple(e.absolute_path) for e in errors[1:]} - {tuple(errors[0].absolute_path)}
        more = f" (+{len(others)} more key{'s' if len(others) > 1 else ''} with problems)" if others else ""
        raise ConfigError(_format_error(errors[0]) + more)
    problem = _check_run_names(resolved)
    if problem:
        raise ConfigError(problem)
    resolved = _in_schema_order(resolved, _schema())
    if isinstance(cfg, MutableMapping):
        for key in list(cfg):
            del cfg[key]
        cfg.update(resolved)
        return cfg
    return resolved


def deep_merge(base: Mapping, override: Mapping) -> dict:
    """A new dict: ``base`` updated by ``override``; nested mappings merge, everything else is replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {path}: not found")
    try:
        with open(p, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {path}: invalid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {path}: expected a mapping of config keys, got {_json_type(data)}")
    return dict(data)


def load_config(path: str | os.PathLike | None = None, overrides: Mapping | None = None) -> dict:
    """Read a YAML config (``None`` = schema defaults only), deep-merge ``overrides``, validate, fill defaults.

    The result is ONE experiment: a file that lists ``experiments`` (e.g. config/paper.yaml) is an error naming
    the fix (load one of the listed files, or all of them with :func:`load_experiments`).
    """
    cfg = {} if path is None else _read_yaml(path)
    if overrides:
        cfg = deep_merge(cfg, overrides)
    try:
        resolved = dict(validate_config(cfg))
    except ConfigError as exc:
        if path is None:
            raise
        raise ConfigError(f"{path}: {exc}") from None
    if resolved.get("experiments"):
        where = f"{path}: " if path is not None else ""
        raise ConfigError(
            f"{where}config key experiments: this config lists {len(resolved['experiments'])} experiment files"
            f" (run them all with snakemake; a single run needs one of them, e.g. {resolved['experiments'][0]})"
        )
    return resolved


def load_experiments(including: Mapping, base_dir: str | os.PathLike = ".", source: str = "config") -> dict[str, dict]:
    """The experiments of an including config: ``{experiment name: validated config}`` in listed order.

    ``including`` is the raw including config: ``experiments`` (a list of config file paths, relative to
    ``base_dir``) and optionally ``methods`` and ``seeds``, which replace those of every listed file (see
    :data:`EXPERIMENT_OVERRIDES`); any other key is an error, because it would be silently ignored. Every listed
    file is a complete single-experiment config, validated on its own (errors name the file and the key); two
    files naming the same experiment are an error. ``source`` names the including config in messages.
    """
    if not isinstance(including, Mapping):
        raise ConfigError(f"{source}: expected a mapping of config keys, got {_json_type(including)}")
    allowed = ("experiments", *EXPERIMENT_OVERRIDES)
    extra = [key for key in including if key not in allowed]
    if extra:
        raise ConfigError(
            f"{source}: config key {extra[0]}: not allowed next to experiments (each listed file is a complete"
            f" experiment; the including file may set only {', '.join(allowed)}: put other settings in the"
            " listed files)"
        )
    given = {key: copy.deepcopy(including[key]) for key in allowed if key in including}
    try:
        validate_config(copy.deepcopy(given))  # types of experiments / methods / seeds
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    paths = given.pop("experiments", None)
    if not paths:
        raise ConfigError(f"{source}: config key experiments: needs at least 1 item")
    experiments: dict[str, dict] = {}
    where: dict[str, str] = {}
    for entry in paths:
        path = Path(entry) if os.path.isabs(entry) else Path(base_dir) / entry
        raw = _read_yaml(path)
        if "experiment" not in raw:
            raise ConfigError(
                f"{entry}: config key experiment: missing (every listed file must name its experiment: it names"
                " the output folders)"
            )
        if raw.get("experiments"):
            raise ConfigError(
                f"{entry}: config key experiments: a listed experiment file cannot list experiments itself"
            )
        try:
            cfg = dict(validate_config(deep_merge(raw, given)))
        except ConfigError as exc:
            raise ConfigError(f"{entry}: {exc}") from None
        name = cfg["experiment"]
        if name in experiments:
            raise ConfigError(
                f"{entry}: config key experiment: '{name}' is also the experiment of {where[name]}"
                " (experiment names must be unique: they name the output folders)"
            )
        experiments[name] = cfg
        where[name] = str(entry)
    return experiments


def parse_set_overrides(items: Iterable[str] | None) -> dict:
    """Turn ``["fcil.rounds=2", "methods=[lorm,joint]"]`` into a nested dict; values are parsed as YAML."""
    out: dict = {}
    for item in items or []:
        key, sep, text = str(item).partition("=")
        key = key.strip()
        parts = key.split(".")
        if not sep or not key or any(not p.strip() for p in parts):
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. fcil.rounds=2")
        parts = [p.strip() for p in parts]
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(
                f"--set {key}: value {text!r} is not valid YAML (quote strings, lists as [a, b])"
            ) from None
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {'.'.join(parts[: i + 1])} was already set to a value")
            node = child
        if isinstance(node.get(parts[-1]), dict) and not isinstance(value, Mapping):
            raise ConfigError(f"--set {key}: conflicts with an earlier --set of a key below it")
        if isinstance(value, Mapping) and isinstance(node.get(parts[-1]), Mapping):
            node[parts[-1]] = deep_merge(node[parts[-1]], value)
        else:
            node[parts[-1]] = value
    return out


def base_method(cfg: Mapping, name: str) -> str:
    """The method (lorm/methods) behind a run name: the name itself, or the ``of`` of a declared variant."""
    variant = (cfg.get("variants") or {}).get(name)
    return variant["of"] if variant else name


def method_config(cfg: Mapping, method: str) -> dict:
    """The resolved config as seen by one method or variant: ``method_params`` of the method merged into its
    sections, then (for a variant) the variant's own overrides and ``method_params`` of the variant."""
    out = copy.deepcopy(dict(cfg))
    params = cfg.get("method_params") or {}
    base = base_method(cfg, method)
    layers = [params.get(base, {})]
    if base != method:
        layers += [{k: v for k, v in cfg["variants"][method].items() if k != "of"}, params.get(method, {})]
    for layer in layers:
        for section, values in layer.items():
            out[section] = deep_merge(out.get(section) or {}, values)
    return out


def beta_label(beta: float | int | str) -> str:
    """Canonical text of a Dirichlet beta in file names and labels: ``0.5``, ``1.0``, ``0.05``, ``5e-05``.

    Used for the ``beta{beta}`` path component, figure suffixes and table headers, so that a beta written as
    ``1`` in the config and read back as ``1.0`` from a metrics file gives the same name.
    """
    value = float(beta)
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"beta {beta!r}: expected a positive number")
    return repr(value)


def write_config_if_changed(cfg: Mapping, path: str | os.PathLike) -> bool:
    """Write ``cfg`` as YAML to ``path`` unless the file already holds exactly that text; True if written.

    Keeping the file untouched when nothing changed keeps its mtime, so tools that compare mtimes (Snakemake)
    see no change.
    """
    text = (
        "# Resolved lorm configuration (schema defaults filled in), written by the workflow. Do not edit:\n"
        "# change config/*.yaml or pass --configfile / --config instead.\n"
        + yaml.safe_dump(dict(cfg), sort_keys=False, default_flow_style=None, width=100)
    )
    p = Path(path)
    if p.is_file() and p.read_text(encoding="utf-8") == text:
        return False
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, p)
    return True
