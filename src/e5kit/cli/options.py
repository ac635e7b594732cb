"""Command-line options made from a stage's Config fields, so a setting is described and defaulted once.

``config_option(Schema, "k")`` is the option that sets ``Schema.k``: its help is the field's description
(``e5kit.config.field_descriptions``: the Config docstring's ``Attributes:`` entry or ``Field(description=)``)
and its shown default is the field's default, so changing a default in the Config changes ``--help`` too.
The option's own default is None, "not given", so a ``--config`` file's value stands unless the option is
typed (``e5kit.config.load_config`` drops None options).

Example:
    >>> from e5kit.data.holdout import HoldoutConfig
    >>> option = config_option(HoldoutConfig, "max_queries")
    >>> option.help, option.min
    ('At most this many held-out queries per source (the eligible ones with the lowest hash). [default: 500]', 1)
"""

from __future__ import annotations

import typer
import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from e5kit.config import field_descriptions


def shown_default(schema: type[BaseModel], field: str) -> str | None:
    """The default ``--help`` shows for ``field`` as written in YAML; None for a required field, a None default or
    one made when the config is (``default_factory``, e.g. the CPU count): the description says what leaving it
    out means."""
    default = schema.model_fields[field].default
    if default is PydanticUndefined or default is None:
        return None
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, list | dict):
        return yaml.safe_dump(default, default_flow_style=True).strip()
    return str(default)


def config_option(schema: type[BaseModel], field: str, *param_decls: str, note: str = "", **options) -> typer.models.OptionInfo:
    """A typer option that sets ``schema``'s ``field``: help from the field's description (plus ``note``, what
    is particular to the command line, e.g. "Repeatable."), ``[default: ...]`` from its default, and
    ``min``/``max`` from its ``ge``/``le`` bounds (a value outside is a usage error naming the option).

    ``param_decls`` and ``options`` are typer's (``"--output", "-o"``; ``show_default`` and ``help`` are made
    here). Name the command's parameter as the field, so each option's value goes to ``load_config`` under
    the name it has everywhere else (YAML, ``--set``).
    """
    info = schema.model_fields[field]
    bounds = {}
    for constraint in info.metadata:  # annotated_types' Ge / Le, as pydantic keeps Field(ge=..., le=...)
        if hasattr(constraint, "ge"):
            bounds["min"] = constraint.ge
        elif hasattr(constraint, "le"):
            bounds["max"] = constraint.le
    default = shown_default(schema, field)
    parts = [field_descriptions(schema).get(field, ""), note, f"[default: {default}]" if default is not None else ""]
    return typer.Option(None, *param_decls, help=" ".join(part for part in parts if part), show_default=False, **bounds, **options)


def defaults_sentence(schema: type[BaseModel], fields: list[str]) -> str:
    """``Defaults: a 1, b true, ...`` for ``fields`` of ``schema``, from its field defaults (for a command's
    help, so a docstring never restates a default by hand); fields without a shown default are left out."""
    shown = [(field, shown_default(schema, field)) for field in fields]
    return "Defaults: " + ", ".join(f"{field} {value}" for field, value in shown if value is not None) + "."
