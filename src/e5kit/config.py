"""Stage configs: a YAML mapping, ``--set key=value`` overrides, pydantic validation that names the field.

Every config-driven command (curate, holdout, filter consistency, pretrain, finetune, eval, serve,
quickstart, ablate) reads its settings through ``load_config`` here, and nowhere else, so precedence,
``--set`` and the errors are the same everywhere: dots reach nested keys, digits index lists
(``sources.0.paths=[a.jsonl]``), and values are parsed as YAML (numbers, booleans, lists). The example configs ship inside the package (``e5kit/configs/*.yaml``); a config
path that does not exist and names one of them (``pretrain``, ``pretrain.yaml`` or
``configs/pretrain.yaml``) reads the bundled file.

Example:
    >>> tree = apply_overrides({"data": {"paths": []}}, ["data.paths=[a.parquet]", "max_steps=10"])
    >>> tree
    {'data': {'paths': ['a.parquet']}, 'max_steps': 10}
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Schema = TypeVar("Schema", bound=BaseModel)


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file and line, or the field."""


def bundled_configs() -> dict[str, Path]:
    """The example configs installed with e5kit: name (path under ``configs/`` without ``.yaml``, e.g.
    ``curate`` or ``ablations/e5_paper``) -> file, sorted by name."""
    folder = Path(__file__).resolve().parent / "configs"
    return {path.relative_to(folder).with_suffix("").as_posix(): path for path in sorted(folder.rglob("*.yaml"))}


def resolve_config(path: str | Path) -> Path:
    """``path`` itself when it exists, else the bundled config it names: ``NAME``, ``NAME.yaml`` or
    ``configs/NAME.yaml`` (the repository's folder of the same files); NAME may name a subfolder
    (``ablations/e5_paper``). Anything else is returned as is (reading it then fails, naming it)."""
    path = Path(path)
    if path.exists() or path.suffix not in ("", ".yaml"):
        return path
    name = path.as_posix().removesuffix(".yaml").removeprefix("configs/")
    return bundled_configs().get(name, path)


def config_origin(path: str | Path) -> str:
    """How errors name a config file: its path as given, or ``bundled config NAME`` for a bundled one."""
    resolved = resolve_config(path)
    if resolved == Path(path):
        return str(path)
    return f"bundled config {next(name for name, file in bundled_configs().items() if file == resolved)}"


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML config file (empty file -> {}); a bundled config's name reads it
    (``resolve_config``).

    Raises:
        ConfigError: missing file, invalid YAML (with its line), or a top level that is not a mapping.
    """
    origin, path = config_origin(path), resolve_config(path)
    if not path.is_file():
        names = ", ".join(bundled_configs())
        raise ConfigError(f"{path}: no such config file (bundled configs, usable by name: {names})")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{origin}{where}: invalid YAML ({getattr(error, 'problem', error)})") from error
    if not isinstance(tree, dict):
        raise ConfigError(f"{origin}: expected a mapping of config keys at the top level")
    return tree


def apply_overrides(tree: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply ``key.sub.0.field=value`` assignments to a config tree, in place, and return it.

    Raises:
        ConfigError: naming the assignment when it has no ``=``, its value is not YAML, or its path
            walks through a scalar or past the end of a list.
    """
    for assignment in assignments:
        key, separator, raw_value = assignment.partition("=")
        if not separator or not key.strip():
            raise ConfigError(f"--set {assignment!r}: expected key=value (e.g. max_steps=100)")
        try:
            value = yaml.safe_load(raw_value) if raw_value.strip() else ""
        except yaml.YAMLError as error:
            raise ConfigError(f"--set {assignment!r}: value is not valid YAML ({error})") from error
        *parents, leaf = key.strip().split(".")
        node: Any = tree
        for depth, part in enumerate([*parents, leaf]):
            where = ".".join(parents[:depth]) or "(config)"
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"--set {assignment!r}: {where} has no item {part}")
                part = int(part)
            elif not isinstance(node, dict):
                raise ConfigError(f"--set {assignment!r}: {where} is not a section")
            if depth == len(parents):
                node[part] = value
            else:
                if isinstance(node, dict) and node.get(part) is None:
                    node[part] = {}
                node = node[part]
    return tree


def describe_validation_error(error: ValidationError) -> str:
    """One clause per problem, each naming the dotted field, e.g. ``data.paths: Field required``."""
    return "; ".join(f"{'.'.join(map(str, problem['loc'])) or '(config)'}: {problem['msg']}" for problem in error.errors())


def describe_first_problem(error: ValidationError) -> str:
    """The first problem of ``error``, for a one-line message about a file e5kit wrote: ``field 'a.b':
    problem``, or the problem alone when it is the whole value's (a damaged file has many problems;
    the first names where to look)."""
    first = error.errors()[0]
    return f"field {'.'.join(map(str, first['loc']))!r}: {first['msg']}" if first["loc"] else first["msg"]


def validate_config(schema: type[Schema], tree: dict[str, Any], origin: str = "config") -> Schema:
    """Validate a config tree into ``schema``.

    Raises:
        ConfigError: ``"{origin}: invalid {stage} config: field: problem; ..."``.
    """
    try:
        return schema.model_validate(tree)
    except ValidationError as error:
        stage = schema.__name__.removesuffix("Config").lower()
        raise ConfigError(f"{origin}: invalid {stage} config: {describe_validation_error(error)}") from error


def load_config(
    schema: type[Schema], path: str | Path | None = None, overrides: list[str] | None = None, options: dict | None = None
) -> Schema:
    """Defaults < YAML file < command-line ``options`` (None = not given) < ``--set`` overrides, validated.

    Raises:
        ConfigError: on an unreadable file, a bad override or an invalid field, naming it.
    """
    tree = read_yaml_mapping(path) if path is not None else {}
    tree.update({key: value for key, value in (options or {}).items() if value is not None and value != []})
    apply_overrides(tree, list(overrides or []))
    return validate_config(schema, tree, config_origin(path) if path is not None else "command line")


def field_descriptions(schema: type[BaseModel]) -> dict[str, str]:
    """Each documented field of ``schema`` -> its description on one line: ``Field(description=...)``, else its
    entry in the ``Attributes:`` section of the docstring of ``schema`` or of the class it inherits the field
    from (``double backquotes`` dropped), so the Config's docstring is where a setting is explained, once.

    Example:
        >>> class Tiny(BaseModel):
        ...     \"\"\"A stage.
        ...
        ...     Attributes:
        ...         steps: Optimizer steps, at
        ...             most ``limit``.
        ...     \"\"\"
        ...     steps: int = 2
        >>> field_descriptions(Tiny)
        {'steps': 'Optimizer steps, at most limit.'}
    """
    described: dict[str, str] = {}
    for cls in reversed([cls for cls in schema.__mro__ if issubclass(cls, BaseModel)]):  # a subclass's entry wins
        described.update(_docstring_attributes(cls.__doc__ or ""))
    for name, info in schema.model_fields.items():
        if info.description:
            described[name] = " ".join(info.description.split())
    return {name: described[name] for name in schema.model_fields if name in described}


def _docstring_attributes(docstring: str) -> dict[str, str]:
    """The ``name: text`` entries of a Google-style ``Attributes:`` section (continuation lines indented deeper)."""
    lines = inspect.cleandoc(docstring).splitlines()
    if "Attributes:" not in lines:
        return {}
    entries: dict[str, list[str]] = {}
    indent = None
    for line in lines[lines.index("Attributes:") + 1:]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if depth == 0:  # the next section
            break
        indent = depth if indent is None else indent
        entry = re.match(r"(\w+): (.*)", line.strip())
        if depth == indent and entry:
            entries[entry[1]] = [entry[2]]
        elif entries:
            entries[next(reversed(entries))].append(line.strip())
    return {name: " ".join(" ".join(parts).replace("``", "").split()) for name, parts in entries.items()}
