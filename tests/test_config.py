"""The shared config I/O: --set overrides, YAML errors with lines, validation naming the field."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, Field

from e5kit.config import ConfigError, apply_overrides, load_config


class Tiny(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: int = Field(1, ge=1)
    sources: list[dict] = []


def test_overrides_reach_nested_keys_and_list_items():
    # Given a tree with a list of sections, When dotted and indexed overrides are applied
    tree = apply_overrides({"sources": [{"paths": []}]}, ["sources.0.paths=[a.jsonl]", "train.max_steps=5", "flag=true"])
    # Then values are parsed as YAML and missing sections are created
    assert tree == {"sources": [{"paths": ["a.jsonl"]}], "train": {"max_steps": 5}, "flag": True}


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("steps", "expected key=value"),
        ("sources.3.paths=[]", "sources has no item 3"),
        ("steps.sub=1", "steps is not a section"),
        ("steps=[", "not valid YAML"),
    ],
)
def test_bad_overrides_name_the_assignment(assignment, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides({"steps": 2, "sources": [{}]}, [assignment])


def test_load_config_precedence_and_errors(tmp_path):
    config = tmp_path / "stage.yaml"
    config.write_text("steps: 3\n")
    # Given a file, an option and an override, Then --set wins over options, options over the file
    assert load_config(Tiny, config).steps == 3
    assert load_config(Tiny, config, options={"steps": 4}).steps == 4
    assert load_config(Tiny, config, ["steps=5"], options={"steps": 4}).steps == 5
    # And invalid values, unknown fields and broken YAML are named
    with pytest.raises(ConfigError, match=r"stage.yaml: invalid tiny config: steps: Input should be greater"):
        load_config(Tiny, config, ["steps=0"])
    with pytest.raises(ConfigError, match="colour: Extra inputs"):
        load_config(Tiny, None, ["colour=red"])
    config.write_text("steps: [1,\n")
    with pytest.raises(ConfigError, match=r"stage.yaml:\d+: invalid YAML"):
        load_config(Tiny, config)
