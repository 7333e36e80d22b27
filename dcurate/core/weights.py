"""One parser for name -> number mappings ("a=1,b=2", a mapping, or a YAML/JSON file), used by every
parameter of type ``dict[str, float]`` (mix weights, Gopher n-gram limits, ...) and by ``mix-fit``'s
prior. Booleans are not numbers here: YAML's ``yes``/``true`` as a weight is refused."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dcurate.core.errors import RecipeError


def _number(v: Any) -> float:
    if isinstance(v, bool):
        raise ValueError("a boolean is not a number")
    return float(v)


def parse_pairs(text: str, where: str) -> dict[str, float]:
    """``name=number`` (or ``name:number``) pairs separated by commas."""
    out: dict[str, float] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        k, sep, v = item.partition("=")
        if not sep:
            k, sep, v = item.partition(":")
        try:
            if not sep or not k.strip():
                raise ValueError
            out[k.strip()] = _number(v)
        except ValueError:
            raise RecipeError(f"{where}: expected mapping name=number, got {item.strip()!r}") from None
    return out


def read_file(path: str | os.PathLike, where: str = "weights file") -> dict[str, float]:
    """A YAML/JSON file holding the mapping itself, or a ``weights:`` mapping beside other keys
    (the file ``mix-fit`` writes)."""
    import yaml

    p = Path(path)
    if not p.exists():
        raise RecipeError(f"{where}: {p}: no such file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise RecipeError(f"{where}: {p}: not readable YAML: {e}") from None
    if isinstance(data, dict) and isinstance(data.get("weights"), dict):
        data = data["weights"]
    if not isinstance(data, dict) or not data:
        raise RecipeError(f"{where}: {p} holds no name: number mapping (nor a 'weights:' mapping)")
    out: dict[str, float] = {}
    for k, v in data.items():
        try:
            out[str(k)] = _number(v)
        except (TypeError, ValueError):
            raise RecipeError(f"{where}: {p}: the value of '{k}' must be a number; got {v!r}") from None
    return out


def parse_weights(spec: str | dict | os.PathLike, where: str) -> dict[str, float]:
    """Pairs, a mapping, or a file (a string without '=' naming an existing file)."""
    if isinstance(spec, dict):
        try:
            return {str(k): _number(v) for k, v in spec.items()}
        except (TypeError, ValueError):
            raise RecipeError(f"{where}: every value must be a number; got {spec}") from None
    text = str(spec)
    if "=" not in text and os.path.isfile(text):
        return read_file(text, where)
    return parse_pairs(text, where)
