"""dcurate.core.weights: the one name -> number parser behind every mapping parameter and mix-fit's prior."""

import pytest

from dcurate.core.errors import RecipeError
from dcurate.core.weights import parse_weights
from dcurate.stages.mix import regmix


def test_pairs_mapping_and_file_agree(tmp_path):
    f = tmp_path / "w.yaml"
    f.write_text("weights:\n  a: 1\n  b: 3\nnote: ignored\n")
    want = {"a": 1.0, "b": 3.0}
    assert parse_weights("a=1,b=3", "w") == want
    assert parse_weights("a:1, b:3", "w") == want
    assert parse_weights({"a": 1, "b": 3}, "w") == want
    assert parse_weights(str(f), "w") == want
    assert regmix.parse_prior(str(f)) == {"a": 0.25, "b": 0.75}


@pytest.mark.parametrize("bad", ["a=yes", "a", "=1", {"a": True}, {"a": "x"}])
def test_refused_with_the_place(bad):
    with pytest.raises(RecipeError, match="^where: "):
        parse_weights(bad, "where")


def test_yaml_booleans_are_not_weights(tmp_path):
    f = tmp_path / "w.yaml"
    f.write_text("a: yes\nb: 1\n")
    with pytest.raises(RecipeError, match="'a' must be a number"):
        parse_weights(str(f), "w")
    with pytest.raises(RecipeError, match="'a' must be a number"):
        regmix.read_weights_file(f)
