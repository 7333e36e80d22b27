"""Typed parameters: coercion from YAML/CLI values, validation messages, mapping files."""

from dataclasses import dataclass

import pytest

from dcurate.core import params as P
from dcurate.core.errors import RecipeError


@dataclass
class Demo:
    n: int = P.param(3, "a count", min=0)
    frac: float | None = P.param(None, "a fraction", min=0, max=1)
    mode: str = P.param("a", "a choice", choices=["a", "b"])
    on: bool = P.param(False, "a switch")
    names: list[str] = P.param([], "names")
    weights: dict[str, float] = P.param({}, "weights")

    def validate(self):
        if self.mode == "b" and self.frac is None:
            raise ValueError("mode b needs frac")


def test_coercion_from_strings_and_yaml_values():
    d = P.build(Demo, {"n": "7", "frac": 0.5, "mode": "b", "on": "yes", "names": "x, y", "weights": "a=1,b=0.5"}, "t")
    assert (d.n, d.frac, d.mode, d.on, d.names, d.weights) == (7, 0.5, "b", True, ["x", "y"], {"a": 1.0, "b": 0.5})
    assert P.build(Demo, {"n": 4.0, "weights": {"a": 2}, "names": ["p", "q,r"]}, "t").names == ["p", "q", "r"]
    assert P.build(Demo, {"frac": "none"}, "t").frac is None


@pytest.mark.parametrize(
    "mapping,message",
    [
        ({"n": "x"}, r"t: parameter 'n': expected int, got 'x'"),
        ({"n": 2.5}, r"expected int"),
        ({"n": -1}, r"'n' must be >= 0"),
        ({"frac": 2}, r"'frac' must be <= 1"),
        ({"mode": "c"}, r"'mode' must be one of a, b"),
        ({"bogus": 1}, r"unknown parameter 'bogus'; allowed: frac, mode, n, names, on, weights"),
        ({"mode": "b"}, r"mode b needs frac"),
        ({"weights": "a"}, r"expected mapping name=number"),
    ],
)
def test_errors_name_the_key_and_what_is_allowed(mapping, message):
    with pytest.raises(RecipeError, match=message):
        P.build(Demo, mapping, "t")


def test_mapping_from_a_yaml_file(tmp_path):
    f = tmp_path / "w.yaml"
    f.write_text("weights:\n  wiki: 0.5\n  code: 0.5\nmix_fit: {target: loss}\n")
    assert P.build(Demo, {"weights": str(f)}, "t").weights == {"wiki": 0.5, "code": 0.5}
    g = tmp_path / "plain.json"
    g.write_text('{"a": 1}')
    assert P.build(Demo, {"weights": str(g)}, "t").weights == {"a": 1.0}
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(RecipeError, match="no name: number mapping"):
        P.build(Demo, {"weights": str(bad)}, "t")


def test_digest_is_stable_and_order_independent():
    assert P.digest({"a": 1, "b": 2}) == P.digest({"b": 2, "a": 1})
    assert P.digest({"a": 1}) != P.digest({"a": 2})
