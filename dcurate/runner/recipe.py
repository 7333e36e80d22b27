"""YAML recipes: ``input``, ``output``, run options and a list of ``{stage: NAME, ...params}``.

The whole recipe is validated before any work starts; errors name the stage index, the key and
what is allowed. Recipes are data: they are read with ``yaml.safe_load`` and no code in them is
ever evaluated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dcurate.core import params as P
from dcurate.core.errors import RecipeError
from dcurate.core.options import RunOptions
from dcurate.core.stage import get_stage


@dataclass
class Recipe:
    inputs: list[str]
    output: str
    stages: list[tuple[str, Any]]
    options: RunOptions


def parse_stages(items: Any, where: str = "stages") -> list[tuple[str, Any]]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise RecipeError(f"{where}: expected a list of {{stage: NAME, ...}} mappings")
    out = []
    for i, item in enumerate(items):
        loc = f"{where}[{i}]"
        if not isinstance(item, dict) or "stage" not in item:
            raise RecipeError(f"{loc}: expected a mapping with a 'stage' key, got {item!r}")
        name = item["stage"]
        cls = get_stage(str(name), loc)
        rest = {k: v for k, v in item.items() if k != "stage"}
        out.append((cls.name, P.build(cls.Params, rest, f"{loc} ({cls.name})")))
    return out


def load(path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read and validate a recipe file; ``overrides`` (from CLI flags) win over the file."""
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe file not found") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(doc, dict):
        raise RecipeError(f"{path}: a recipe is a mapping with input, output and stages")
    return from_dict(doc, str(path), overrides, base=p.parent)


def from_dict(doc: dict, where: str = "recipe", overrides: dict[str, Any] | None = None, base: Path | None = None) -> Recipe:
    opt_fields = {f.name for f in dataclasses.fields(RunOptions)}
    allowed = {"input", "output", "stages"} | opt_fields
    unknown = [k for k in doc if str(k).replace("-", "_") not in allowed]
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; allowed: {', '.join(sorted(allowed))}")
    if "input" not in doc:
        raise RecipeError(f"{where}: missing 'input' (a path, directory, glob or list of them)")
    if "output" not in doc:
        raise RecipeError(f"{where}: missing 'output' (a directory, or '-' for stdout)")
    inputs = doc["input"]
    inputs = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(inputs, list) or not all(isinstance(x, str) for x in inputs):
        raise RecipeError(f"{where}: 'input' must be a path or a list of paths")

    def resolve(x: str) -> str:
        # Relative paths in a recipe are relative to the working directory, as on the CLI.
        return x

    opts_map = {str(k).replace("-", "_"): v for k, v in doc.items() if str(k).replace("-", "_") in opt_fields}
    if overrides:
        opts_map.update({k: v for k, v in overrides.items() if v is not None})
    options = P.build(RunOptions, opts_map, where)
    stages = parse_stages(doc.get("stages"), "stages")
    return Recipe([resolve(x) for x in inputs], resolve(str(doc["output"])), stages, options)
