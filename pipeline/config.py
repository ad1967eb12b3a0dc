"""Strict reading of YAML mappings into the stages' config dataclasses.

A pipeline config is edited by hand and run unattended, so a typo must fail
before any work starts: every unknown key and every value of the wrong type is
an :class:`~choral.pipeline.errors.InputError` naming the file and the dotted
key (``decode.bem``), never a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar, Union

import yaml

from .errors import ChoralError, InputError
from .manifest import check_readable

T = TypeVar("T")
# Dataclass field metadata key: a function returning the values a string field allows (a registry's names),
# checked and named in errors as a Literal's values are.
CHOICES = "choices"


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML file (InputError if unreadable, malformed or not a mapping)."""
    path = check_readable(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise InputError(path, f"malformed YAML ({str(error).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(path, "expected a mapping of section names to settings")
    return data


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin in (tuple, list):
        return f"list of {_type_name(typing.get_args(annotation)[0])}"
    return "null" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


def coerce(value: Any, annotation: Any) -> Any:
    """``value`` as ``annotation`` (int -> float allowed, list -> tuple); raises TypeError if it does not fit."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        if value in typing.get_args(annotation) and not isinstance(value, bool):
            return value
        raise TypeError
    if origin in (Union, types.UnionType):
        for option in typing.get_args(annotation):
            try:
                return coerce(value, option)
            except TypeError:
                continue
        raise TypeError
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise TypeError
        item = typing.get_args(annotation)[0]
        items = [coerce(v, item) for v in value]
        return tuple(items) if origin is tuple else items
    if annotation is type(None):
        if value is None:
            return None
        raise TypeError
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise TypeError
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError
    if annotation is str:
        if isinstance(value, str):
            return value
        raise TypeError
    if annotation is Path:
        if isinstance(value, str) and value:
            return Path(value)
        raise TypeError
    if dataclasses.is_dataclass(annotation):
        raise TypeError  # nested sections are read by from_mapping
    raise TypeError


def from_mapping(cls: type[T], data: Any, path: Path, section: str) -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types are InputErrors on ``path``.

    Fields whose type is itself a dataclass are read recursively as nested sections.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise InputError(path, f"section {section!r} must be a mapping, not {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    known = set(fields)
    values: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{section}.{key}" if section else str(key)
        if key not in known:
            raise InputError(path, f"unknown key {dotted!r} (known in {section or 'the top level'}: "
                                   f"{', '.join(sorted(known))})")
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            values[key] = from_mapping(annotation, value, path, dotted)
            continue
        choices = fields[key].metadata.get(CHOICES)
        if choices is not None:
            annotation = Literal[tuple(choices())]  # type: ignore[misc]
        try:
            values[key] = coerce(value, annotation)
        except TypeError:
            raise InputError(path, f"key {dotted!r} must be {_type_name(annotation)}, not {value!r}") from None
    try:
        return cls(**values)
    except (ChoralError, ValueError) as error:
        raise InputError(path, f"section {section or 'top level'}: {error}") from None
