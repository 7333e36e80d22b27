"""select: the stage (stage) and its kernels: DSIR (dsir), ZIP-FIT (zipfit) and the exact model of
zlib's deflate sizes (deflate_model)."""

from collections.abc import Mapping
from typing import Any


def preload_modules(options: Mapping[str, Any]) -> list[str]:
    """Modules besides the stage's own that the pool's fork server warms for a select stage with
    these options (recipe keys, CLI values as strings, or the stage's parameters; absent keys take
    the parameters' defaults): ZIP-FIT at level 9 with the auto engine uses the deflate model, whose
    kernels and self-check then run once in the server. Import-free: the console entry calls it at
    start-up, the stage (Select.preload_modules) with its parameters."""
    method = str(options.get("method", "dsir"))
    level = str(options.get("level", 9))
    engine = str(options.get("gzip_engine", "auto"))
    if method == "zipfit" and level == "9" and engine == "auto":
        return ["dcurate.stages.select.deflate_model"]
    return []
