"""Typed, validated parameters: one dataclass gives the recipe keys, the CLI flags and the help.

A stage declares its parameters as a dataclass whose fields are made with :func:`param`::

    @dataclass
    class Params:
        min_words: int | None = param(50, "Drop documents with fewer words.", min=0)
        preset: str = param("gopher", "Rule set.", choices=["gopher", "c4", "gopher+c4", "none"])

Supported field types: ``int``, ``float``, ``str``, ``bool``, ``X | None`` of those,
``list[str]`` (CLI: comma-separated or repeated) and ``dict[str, float]`` (CLI: ``a=0.5,b=0.5``).
:func:`build` turns a mapping (from YAML or the CLI) into a validated instance; every error names
where it happened, the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from typing import Any

from dcurate.core.errors import RecipeError
from dcurate.core.weights import parse_weights

_MISSING = dataclasses.MISSING


def param(
    default: Any = _MISSING,
    help: str = "",
    *,
    choices: list[str] | None = None,
    min: float | None = None,
    max: float | None = None,
    flag: str | None = None,
    cli: bool = True,
    only_for: dict[str, list[Any]] | None = None,
    path: bool = False,
) -> Any:
    """A dataclass field carrying help text and validation rules.

    ``flag`` overrides the CLI flag (default ``--field-name``); ``cli=False`` keeps a key
    recipe-only (e.g. structured mappings that have no sensible flag form). ``only_for``
    (``{"method": ["minhash"]}``) says the key does something only when other keys have one of
    those values: giving it otherwise is an error. ``path=True`` marks a file/folder path (a
    recipe resolves it relative to the recipe file).
    """
    meta = {"help": help, "choices": choices, "min": min, "max": max, "flag": flag, "cli": cli,
            "only_for": only_for, "path": path}
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def field_types(cls: type) -> dict[str, tuple[Any, bool]]:
    """Map each field name to (base type, optional?)."""
    hints = typing.get_type_hints(cls)
    return {f.name: _unwrap_optional(hints[f.name]) for f in dataclasses.fields(cls)}


def type_name(tp: Any) -> str:
    if typing.get_origin(tp) is dict and typing.get_args(tp)[1:] == (Any,):
        return "mapping"
    if tp is dict or typing.get_origin(tp) is dict:
        return "mapping name=number"
    if tp is list or typing.get_origin(tp) is list:
        return "list of strings"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, optional: bool, where: str) -> Any:
    """Convert ``value`` (from YAML or a CLI string) to ``tp`` or raise a RecipeError."""
    if value is None or (isinstance(value, str) and optional and value.lower() in ("none", "null")):
        if optional:
            return None
        raise RecipeError(f"{where}: a value is required (expected {type_name(tp)})")
    origin = typing.get_origin(tp)
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
                return False
            raise ValueError
        if tp is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                return int(value)
            if isinstance(value, str):
                return int(float(value.replace("_", ""))) if "e" in value.lower() else int(value.replace("_", ""))
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if tp is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
        if origin is list or tp is list:
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            if isinstance(value, (list, tuple)):
                items: list[str] = []
                for v in value:
                    if isinstance(v, str) and "," in v:
                        items.extend(x.strip() for x in v.split(",") if x.strip())
                    else:
                        items.append(str(v))
                return items
            raise ValueError
        if origin is dict and typing.get_args(tp)[1:] == (Any,):  # free-form mapping (recipe only)
            if not isinstance(value, dict):
                raise ValueError
            return {str(k): v for k, v in value.items()}
        if origin is dict or tp is dict:
            if isinstance(value, (str, dict)):
                return parse_weights(value, where)
            raise ValueError
    except (ValueError, TypeError):
        raise RecipeError(f"{where}: expected {type_name(tp)}, got {value!r}") from None
    raise RecipeError(f"{where}: unsupported parameter type {tp!r}")


def did_you_mean(word: str, options: typing.Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest option, or ''."""
    import difflib

    close = difflib.get_close_matches(str(word).replace("-", "_"), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def build(cls: type, mapping: dict[str, Any], where: str) -> Any:
    """Validate ``mapping`` against the dataclass ``cls`` and return an instance.

    Keys may use ``snake_case`` or ``kebab-case``. Unknown keys, ill-typed values, values outside
    ``choices`` or ``[min, max]``, keys that do nothing with the other values (``only_for``) raise
    one :class:`RecipeError` listing every problem, each naming ``where`` and the key.
    """
    ftypes = field_types(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    errors: list[str] = []
    for raw_key, value in mapping.items():
        key = str(raw_key).replace("-", "_")
        if key not in fields:
            allowed = ", ".join(sorted(fields)) or "(none)"
            errors.append(f"{where}: unknown parameter '{raw_key}'{did_you_mean(key, fields)}; allowed: {allowed}")
            continue
        tp, optional = ftypes[key]
        try:
            kwargs[key] = check(fields[key], coerce(value, tp, optional, f"{where}: parameter '{key}'"), where)
        except RecipeError as e:
            errors.append(str(e))
    for name, f in fields.items():
        if name not in kwargs and f.default is _MISSING and f.default_factory is _MISSING and name not in mapping:
            errors.append(f"{where}: missing required parameter '{name}'")
    if errors:
        raise RecipeError("\n".join(errors))
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise RecipeError(f"{where}: {e}") from None
    for key in kwargs:
        only = fields[key].metadata.get("only_for")
        for other, values in (only or {}).items():
            if getattr(obj, other) not in values:
                flag = fields[key].metadata.get("flag") or key
                errors.append(
                    f"{where}: parameter '{flag}' does nothing with {other} {getattr(obj, other)!r}; "
                    f"it applies only with {other} {' or '.join(map(repr, values))}"
                )
    if errors:
        raise RecipeError("\n".join(errors))
    validate = getattr(obj, "validate", None)
    if validate is not None:
        try:
            validate()
        except (ValueError, RecipeError) as e:
            raise RecipeError(f"{where}: {e}") from None
    return obj


def check(f: dataclasses.Field, value: Any, where: str) -> Any:
    meta = f.metadata
    if value is None:
        return value
    choices = meta.get("choices")
    if choices and isinstance(value, str) and value not in choices:
        raise RecipeError(f"{where}: parameter '{f.name}' must be one of {', '.join(choices)}; got {value!r}")
    lo, hi = meta.get("min"), meta.get("max")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if lo is not None and value < lo:
            raise RecipeError(f"{where}: parameter '{f.name}' must be >= {lo}; got {value}")
        if hi is not None and value > hi:
            raise RecipeError(f"{where}: parameter '{f.name}' must be <= {hi}; got {value}")
    return value


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def digest(*parts: Any) -> str:
    """A stable 16-hex-digit hash of JSON-serialisable parts (used for resume markers)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]
