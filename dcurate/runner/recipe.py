"""YAML recipes: ``input``, ``output``, run options and a list of ``{stage: NAME, ...params}``.

The whole recipe is validated before any work starts; every error is listed at once, each naming
the stage index, the key and what is allowed (with a "did you mean" for a misspelt key). Relative
paths in a recipe (``input``, ``output``, ``rejected``, ``workdir`` and stage parameters that are
files, such as ``model`` or ``target``) are relative to the recipe file's folder, so a recipe runs
the same from any working directory. Recipes are data: they are read with ``yaml.safe_load`` and
no code in them is ever evaluated.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dcurate.core import params as core_params
from dcurate.core.errors import RecipeError
from dcurate.core.options import RunOptions
from dcurate.core.stage import get_stage


@dataclass
class Recipe:
    inputs: list[str]
    output: str
    stages: list[tuple[str, Any]]
    options: RunOptions


def _resolve(x: str, base: Path | None) -> str:
    if base is None or x == "-" or os.path.isabs(x) or "://" in x:
        return x
    return os.path.normpath(os.path.join(base, x))


def resolve_paths(cls: type, mapping: dict[str, Any], base: Path | None) -> dict[str, Any]:
    """``mapping`` with the values of ``cls``'s path fields made relative to ``base``."""
    if base is None:
        return mapping
    paths = {f.name for f in dataclasses.fields(cls) if f.metadata.get("path")}
    out = {}
    for k, v in mapping.items():
        if str(k).replace("-", "_") in paths:
            if isinstance(v, str) and "=" not in v:
                v = _resolve(v, base)
            elif isinstance(v, list):
                v = [_resolve(x, base) if isinstance(x, str) else x for x in v]
        out[k] = v
    return out


def parse_stages(items: Any, where: str = "stages", base: Path | None = None) -> list[tuple[str, Any]]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise RecipeError(f"{where}: expected a list of {{stage: NAME, ...}} mappings")
    out = []
    errors = []
    for i, item in enumerate(items):
        loc = f"{where}[{i}]"
        try:
            if not isinstance(item, dict) or "stage" not in item:
                raise RecipeError(f"{loc}: expected a mapping with a 'stage' key, got {item!r}")
            name = item["stage"]
            cls = get_stage(str(name), loc)
            rest = resolve_paths(cls.Params, {k: v for k, v in item.items() if k != "stage"}, base)
            out.append((cls.name, core_params.build(cls.Params, rest, f"{loc} ({cls.name})")))
        except RecipeError as e:
            errors.append(str(e))
    if errors:
        raise RecipeError("\n".join(errors))
    return out


def load(path: str | Path, overrides: dict[str, Any] | None = None, inputs: list[str] | None = None,
         output: str | None = None) -> Recipe:
    """Read and validate a recipe file; ``overrides`` (from CLI flags), ``inputs`` and ``output``
    (paths relative to the working directory) win over the file."""
    p = Path(path)
    remote = "://" in str(path)  # a recipe on object storage: its relative paths are kept as given
    try:
        if remote:
            from dcurate.io import storage

            doc = yaml.safe_load(storage.read_bytes(str(path)).decode())
        else:
            doc = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe file not found") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(doc, dict):
        raise RecipeError(f"{path}: a recipe is a mapping with input, output and stages")
    r = from_dict(doc, str(path), overrides, base=None if remote else p.parent, need_input=not inputs, need_output=not output)
    if inputs:
        r.inputs = list(inputs)
    if output:
        r.output = output
    return r


def from_dict(doc: dict, where: str = "recipe", overrides: dict[str, Any] | None = None, base: Path | None = None,
              need_input: bool = True, need_output: bool = True) -> Recipe:
    """Validate a recipe mapping; relative paths are joined to ``base`` (the recipe's folder)."""
    opt_fields = {f.name for f in dataclasses.fields(RunOptions)}
    allowed = {"input", "output", "stages"} | opt_fields
    errors = []
    for k in doc:
        if str(k).replace("-", "_") not in allowed:
            errors.append(f"{where}: unknown key '{k}'{core_params.did_you_mean(str(k), allowed)}; "
                          f"allowed: {', '.join(sorted(allowed))}")
    if "input" not in doc and need_input:
        errors.append(f"{where}: missing 'input' (a path, directory, glob or list of them)")
    if "output" not in doc and need_output:
        errors.append(f"{where}: missing 'output' (a directory, or '-' for stdout)")
    inputs = doc.get("input") or []
    inputs = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(inputs, list) or not all(isinstance(x, str) for x in inputs):
        errors.append(f"{where}: 'input' must be a path or a list of paths")
        inputs = []
    opts_map = {str(k).replace("-", "_"): v for k, v in doc.items() if str(k).replace("-", "_") in opt_fields}
    opts_map = resolve_paths(RunOptions, opts_map, base)
    if overrides:
        opts_map.update({k: v for k, v in overrides.items() if v is not None})
    options = stages = None
    for step in ("options", "stages"):
        try:
            if step == "options":
                options = core_params.build(RunOptions, opts_map, where)
            else:
                stages = parse_stages(doc.get("stages"), "stages", base)
        except RecipeError as e:
            errors.append(str(e))
    if errors:
        raise RecipeError("\n".join(errors))
    assert options is not None and stages is not None
    output = str(doc.get("output", ""))
    return Recipe([_resolve(x, base) for x in inputs], _resolve(output, base) if output else output, stages, options)
