"""YAML <-> small frozen dataclass configs, with unknown-key checks (a typo in a config is an error, never ignored)."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    pass


def from_dict(cls: type[T], raw: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping; nested dataclasses recurse, unknown keys raise ConfigError."""
    raw = dict(raw or {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown keys {unknown}; allowed: {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        kind = hints[name]
        path = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(kind) and isinstance(kind, type):
            kwargs[name] = from_dict(kind, value, path)
        elif typing.get_origin(kind) is tuple and isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = _check_scalar(kind, value, path)
    return cls(**kwargs)


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _check_scalar(kind: Any, value: Any, path: str) -> Any:
    allowed = (
        typing.get_args(kind)
        if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union
        else (kind,)
    )
    if value is None and type(None) in allowed:
        return None
    for a in allowed:
        if a is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if a is float and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads "3e-3" (no dot) as a string
        if (
            isinstance(a, type)
            and a is not type(None)
            and isinstance(value, a)
            and not (a is int and isinstance(value, bool))
        ):
            return value
    if typing.get_origin(kind) is not None or kind is Any:
        return value
    raise ConfigError(f"{path}: {value!r} is not a {getattr(kind, '__name__', kind)}")


# Field metadata of a switch added after results were cached: while it holds its default it is left out of
# `fingerprint_dict`, so adding it does not invalidate the cache of every run fitted before it existed. Its default
# must keep the behaviour those runs had.
ADDED_SWITCH = {"added_switch": True}


def fingerprint_dict(obj: Any) -> dict[str, Any]:
    """``to_dict`` of what a result depends on: like ``to_dict``, less any ``ADDED_SWITCH`` field at its default."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("added_switch") and value == f.default:
            continue
        out[f.name] = fingerprint_dict(value) if dataclasses.is_dataclass(value) else to_dict_value(value)
    return out


def to_dict_value(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [to_dict_value(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, dict):
        return {k: to_dict_value(x) for k, x in v.items()}
    return v


def to_dict(obj: Any) -> dict[str, Any]:
    return {k: to_dict_value(v) for k, v in dataclasses.asdict(obj).items()}


def load_yaml(cls: type[T], path: str | Path | None, overrides: dict[str, Any] | None = None) -> T:
    raw: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        raw = loaded
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return from_dict(cls, raw, str(path) if path else "")


def save_yaml(obj: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(obj), sort_keys=False))
