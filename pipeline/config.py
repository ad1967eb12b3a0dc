"""Strict reading of YAML mappings into the stages' config dataclasses: the one reader of every YAML
choral reads (the ``choral run`` config, the params.yaml of ``choral tune``).

A pipeline config is edited by hand and run unattended, so a typo must fail
before any work starts: every unknown key, every value of the wrong type and
every value a config dataclass rejects (its :class:`~choral.pipeline.errors.ConfigError`
names the field) is an :class:`~choral.pipeline.errors.InputError` naming the
file and the dotted key (``decode.bem``), never a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar, Union

import yaml

from .errors import ChoralError, ConfigError, InputError
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


class NotFinite(TypeError):
    """A NaN or infinite value where a float setting is meant (YAML ``.nan``, ``.inf``)."""


def check_finite(config: object) -> None:
    """Raise a ConfigError naming the first float field of dataclass ``config`` (or a value of a tuple of
    floats) that is NaN or infinite: such a setting makes every comparison false and a stage output
    quietly wrong (no edges, a bare NaN in a report) instead of failing. Called by the configs'
    ``__post_init__``, so command-line flags (``--threshold nan``) are checked as YAML keys are."""
    for item in dataclasses.fields(config):  # type: ignore[arg-type]
        value = getattr(config, item.name)
        for number in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(number, float) and not math.isfinite(number):
                raise ConfigError(item.name, f"must be a finite number, not {number}")


def coerce(value: Any, annotation: Any) -> Any:
    """``value`` as ``annotation`` (int -> float allowed, list -> tuple); raises TypeError if it does not fit
    (:class:`NotFinite` for a NaN or infinite float)."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        if value in typing.get_args(annotation) and not isinstance(value, bool):
            return value
        raise TypeError
    if origin in (Union, types.UnionType):
        not_finite = False
        for option in typing.get_args(annotation):
            try:
                return coerce(value, option)
            except NotFinite:
                not_finite = True
            except TypeError:
                continue
        raise NotFinite if not_finite else TypeError
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
            if not math.isfinite(value):  # YAML's .nan / .inf: never a meaningful setting
                raise NotFinite
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


_PLACED_AT = "choral.placed_at"  # dataclass field metadata: (section, key) of a placed field


def placed_at(key: str, default: Any) -> Any:
    """A dataclass field whose YAML key is ``key`` (``"section.name"``): a setting of the enclosing config
    that the file keeps among the keys of a nested section, as ``decode.teacher`` sits beside the
    DecodeConfig fields of ``decode:`` while the run config, not DecodeConfig, holds it."""
    section, _, name = key.partition(".")
    if not section or not name or "." in name:
        raise ValueError(f"placed_at needs a 'section.name' key, not {key!r}")
    return dataclasses.field(default=default, metadata={_PLACED_AT: (section, name)})


def _dotted(section: str, key: object) -> str:
    return f"{section}.{key}" if section else str(key)


def _read_value(value: Any, annotation: Any, path: Path, dotted: str) -> Any:
    try:
        return coerce(value, annotation)
    except NotFinite:
        raise InputError(path, f"key {dotted!r} must be a finite number, not {value!r}") from None
    except TypeError:
        raise InputError(path, f"key {dotted!r} must be {_type_name(annotation)}, not {value!r}") from None


def from_mapping(cls: type[T], data: Any, path: Path, section: str, *, base: T | None = None) -> T:
    """Build dataclass ``cls`` from ``data`` (over ``base``'s values if given); unknown keys, wrong types
    and values the dataclass rejects are InputErrors on ``path`` naming the dotted key.

    Fields whose type is itself a dataclass are read recursively as nested sections; a field made with
    :func:`placed_at` is read from its key inside such a section. A :class:`ConfigError` raised by a
    dataclass names its field, reported as that field's key.
    """
    return _section(cls, data, path, section, base, ())


def _section(cls: type[T], data: Any, path: Path, section: str, base: T | None, placed: tuple[str, ...]) -> T:
    """:func:`from_mapping`, where the keys ``placed`` of this section belong to the enclosing config."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise InputError(path, f"section {section!r} must be a mapping, not {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    by_name = {f.name: f for f in fields}
    at = {f.name: f.metadata[_PLACED_AT] for f in fields if _PLACED_AT in f.metadata}
    known = {f.name for f in fields if f.name not in at}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in placed:
            continue  # read by the enclosing config
        dotted = _dotted(section, key)
        if key not in known:
            raise InputError(path, f"unknown key {dotted!r} (known in {section or 'the top level'}: "
                                   f"{', '.join(sorted(known | set(placed)))})")
        annotation = hints[key]
        if not (isinstance(annotation, type) and dataclasses.is_dataclass(annotation)):
            choices = by_name[key].metadata.get(CHOICES)
            if choices is not None:  # a registry's names, read when the file is
                annotation = Literal[tuple(choices())]
            values[key] = _read_value(value, annotation, path, dotted)
            continue
        inner = {name: field for field, (owner, name) in at.items() if owner == key}
        values[key] = _section(annotation, value, path, dotted, None, tuple(inner))
        for name, field in inner.items():
            if value is not None and name in value:  # a mapping: _section checked it
                values[field] = _read_value(value[name], hints[field], path, _dotted(dotted, name))

    def key_of(field: str) -> str:
        key = _dotted(_dotted(section, at[field][0]), at[field][1]) if field in at else _dotted(section, field)
        return repr(key)

    try:
        return cls(**values) if base is None else dataclasses.replace(base, **values)  # type: ignore[type-var]
    except ConfigError as error:
        raise InputError(path, "key " + error.message(key_of)) from None
    except (ChoralError, ValueError) as error:
        raise InputError(path, f"section {section or 'top level'}: {error}") from None
