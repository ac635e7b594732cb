"""The pretrain config: YAML + dotted overrides, errors that name the field."""

from __future__ import annotations

import pytest

from e5kit.config import ConfigError, load_config
from e5kit.training.config import PretrainConfig

BASE = """
init_model: some/model
data:
  paths: [a.parquet]
output_dir: out
max_steps: 10
"""


def test_yaml_with_dotted_overrides(tmp_path):
    # Given a YAML config
    path = tmp_path / "pretrain.yaml"
    path.write_text(BASE)
    # When nested and top-level fields are overridden from the command line
    config = load_config(PretrainConfig, path, ["data.paths=[x.parquet, y/]", "data.source_weights={reddit: 2, wiki: 1}", "tau=0.05", "symmetric=true"])
    # Then overrides are parsed as YAML values and defaults fill the rest
    assert config.data.paths == ["x.parquet", "y/"]
    assert config.data.source_weights == {"reddit": 2.0, "wiki": 1.0}
    assert (config.tau, config.symmetric, config.max_steps, config.chunk_size) == (0.05, True, 10, 64)
    assert config.prompts == {"query": "query: ", "passage": "passage: "}


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("tau=-1", "tau"),
        ("precision=fp8", "precision"),
        ("bogus=1", "bogus"),
        ("data.paths=[]", "data.paths"),
        ("data.source_weights={a: -1}", "data.source_weights"),
        ("max_steps=zero", "max_steps"),
        ("similarity_fn_name=euclidean", "similarity_fn_name"),
    ],
)
def test_invalid_values_name_the_field(tmp_path, override, field):
    path = tmp_path / "pretrain.yaml"
    path.write_text(BASE)
    with pytest.raises(ConfigError, match=rf"{field}: "):
        load_config(PretrainConfig, path, [override])


def test_missing_required_fields_and_bad_yaml_are_named(tmp_path):
    # Given no file and only one override, then a file with broken YAML
    with pytest.raises(ConfigError, match="init_model: Field required"):
        load_config(PretrainConfig, None, ["max_steps=3"])
    broken = tmp_path / "broken.yaml"
    broken.write_text("init_model: a\ndata: [unclosed\n")
    # Then the errors name the missing field, and the file with its line
    with pytest.raises(ConfigError, match=r"broken.yaml:\d+: invalid YAML"):
        load_config(PretrainConfig, broken)
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(PretrainConfig, None, ["max_steps"])


def test_the_former_normalize_field_points_to_similarity_fn_name(tmp_path):
    path = tmp_path / "pretrain.yaml"
    path.write_text(BASE)
    with pytest.raises(ConfigError, match="normalize was replaced by similarity_fn_name"):
        load_config(PretrainConfig, path, ["normalize=false"])
