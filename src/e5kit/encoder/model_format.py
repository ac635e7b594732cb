"""Reading and writing model directories in the sentence-transformers format.

e5kit keeps its models as sentence-transformers directories (``modules.json``,
``1_Pooling/config.json``, ``config_sentence_transformers.json`` carrying the
role prompts) so that ``SentenceTransformer(path)`` and
``transformers.AutoModel.from_pretrained(path)`` load them unchanged. It writes
the classic layout (understood by sentence-transformers 2.x to 6.x) and reads
both the classic and the 6.x layout, as well as plain Hugging Face checkpoints.

Why this is not sentence-transformers' own code (a dependency): reading, ``SentenceTransformer(path)``
builds every module and loads the weights (and imports sentence-transformers, seconds) just to learn
the pooling, prompts and limit; e5kit needs them first, without the weights (``e5kit index`` and the
ONNX backend never load torch weights), and fails with the missing or malformed file named, where
sentence-transformers falls back to a plain transformer with mean pooling. Writing,
``SentenceTransformer.save`` needs a SentenceTransformer wrapping e5kit's module and tokenizer, and
writes whatever layout the installed version writes; e5kit writes the classic layout, which
sentence-transformers 2.x to 6.x all read (tests/encoder/test_model_format.py loads e5kit's folders with the
installed sentence-transformers and compares the embeddings).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, ValidationError

from e5kit.config import describe_first_problem

#: E5's role prefixes, used for plain Hugging Face checkpoints (E5 initialises from BERT).
E5_PROMPTS: dict[str, str] = {"query": "query: ", "passage": "passage: "}
#: Other names of e5kit's roles. sentence-transformers 6's ``encode_document`` takes the first of the
#: prompts "document", "passage", "corpus" that a model has, and every model it loads has a
#: "document" prompt ("" unless saved), so e5kit saves the passage prefix under "document" too and
#: reads these names as the role they stand for.
ROLE_ALIASES: dict[str, str] = {"document": "passage", "doc": "passage", "corpus": "passage"}

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
    "vocab.json",
)
POOLING_MODES = ("mean", "cls", "max")
#: Inference backends ``Encoder.load`` accepts; every config's ``backend`` field is typed with it.
BackendName = Literal["torch", "onnx", "openvino", "auto"]
BACKENDS: tuple[str, ...] = get_args(BackendName)
#: Written by ``e5kit export auto``: the backend, file and precision measured fastest (within the
#: fidelity bounds) on the exporting machine, which ``Encoder.load(dir, backend="auto")`` loads.
BACKEND_RECORD = "e5kit_backend.json"
#: Similarity functions e5kit scores with, named as sentence-transformers' ``similarity_fn_name``.
#: "cosine" (E5, and sentence-transformers' default) L2-normalises before the dot product; "dot" is the
#: raw dot product, used only where a model or config declares it.
SIMILARITY_FUNCTIONS = ("cosine", "dot")

_LEGACY_POOLING_KEYS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# Each sentence-transformers module setting below is honoured exactly, or refused with the file and
# field named: a model e5kit loads embeds as SentenceTransformer(path) embeds it. Fields a module does
# not know are refused too, as sentence-transformers' Pooling and Transformer refuse them.
#: Pooling config fields besides the honoured values' below: the mode (``pooling_mode``, or the legacy
#: flags, read by ``_pooling_from_config``) and the declared size, which changes no vector.
_POOLING_FIELDS = ("pooling_mode", *_LEGACY_POOLING_KEYS, "word_embedding_dimension", "embedding_dimension")
#: Pooling config values e5kit honours. ``include_prompt`` false leaves the prompt's tokens out of the
#: pooling; the exported ONNX and OpenVINO graphs pool inside, over every token the model attends to.
_POOLING_VALUES: dict[str, tuple[Any, ...]] = {"include_prompt": (True,)}
#: Where sentence-transformers reads a Transformer module's settings: the first of these files that
#: holds any (the others are names older versions wrote).
TRANSFORMER_CONFIG_FILES = (
    "sentence_bert_config.json",
    "sentence_roberta_config.json",
    "sentence_distilbert_config.json",
    "sentence_camembert_config.json",
    "sentence_albert_config.json",
    "sentence_xlm-roberta_config.json",
    "sentence_xlnet_config.json",
)
#: Transformer config fields besides the honoured values' below: the token limit (read), ``do_lower_case``
#: (``_check_lower_case``), and ``unpad_inputs``, which runs the same pooling on flash attention's
#: unpadded batches.
_TRANSFORMER_FIELDS = ("max_seq_length", "do_lower_case", "unpad_inputs")
#: Transformer config values e5kit honours, sentence-transformers' defaults for a text encoder: the
#: text alone, tokenised by the model's tokenizer and truncated at the token limit whatever the role,
#: through the forward pass, whose last hidden state is pooled.
_TRANSFORMER_VALUES: dict[str, tuple[Any, ...]] = {
    "transformer_task": ("feature-extraction",),
    "modality_config": ({"text": {"method": "forward", "method_output_name": "last_hidden_state"}},),
    "module_output_name": ("token_embeddings",),
    "processing_kwargs": (None, {}),
    "query_length": (None,),
    "document_length": (None,),
    "query_expansion": (None,),
    # Arguments sentence-transformers passes to from_pretrained: honoured when empty (as saved by most models).
    "model_args": (None, {}),
    "tokenizer_args": (None, {}),
    "config_args": (None, {}),
}
#: Normalize config values e5kit honours: normalising the pooled vector. sentence-transformers ignores
#: the fields Normalize does not know, and so does e5kit.
_NORMALIZE_VALUES: dict[str, tuple[Any, ...]] = {
    "module_input_name": ("sentence_embedding",),
    "module_output_name": (None, "sentence_embedding"),
}


class ModelDirectoryError(ValueError):
    """A model directory is missing a file or holds a malformed one."""


@dataclass
class ModelSpec:
    """What a model directory says about how to embed with it.

    Attributes:
        transformer_dir: Folder holding the Hugging Face config, weights and tokenizer.
        pooling: One of ``POOLING_MODES``.
        similarity_fn_name: One of ``SIMILARITY_FUNCTIONS``: "cosine" when the model has a Normalize
            module or declares no similarity (sentence-transformers' default), else what
            ``config_sentence_transformers.json`` declares.
        max_length: Token limit (prompt and special tokens included); None = model's own limit.
        prompts: Role name -> prefix, e.g. ``{"query": "query: "}``.
        is_sentence_transformers: True when the folder had a ``modules.json``.
    """

    transformer_dir: Path
    pooling: str = "mean"
    similarity_fn_name: str = "cosine"
    max_length: int | None = None
    prompts: dict[str, str] = field(default_factory=dict)
    is_sentence_transformers: bool = False


def read_json(path: Path) -> Any:
    """Parse a JSON file, naming the file and position on failure."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ModelDirectoryError(
            f"{path}: malformed JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from error


def read_json_object(path: Path, remedy: str = "") -> dict[str, Any]:
    """``read_json`` of a file that must hold a JSON object (a config, manifest or record).

    Raises:
        ModelDirectoryError: the file is malformed or holds another JSON value (the file is named,
            then ``remedy`` when given).
    """
    data = read_json(path)
    if not isinstance(data, dict):
        raise ModelDirectoryError(f"{path}: expected a JSON object, got {type(data).__name__}" + (f"; {remedy}" if remedy else ""))
    return data


def read_record(path: Path, schema: type[BaseModel], remedy: str) -> dict[str, Any]:
    """The JSON object in ``path`` (a manifest or record an e5kit export wrote), checked against ``schema``.

    Args:
        schema: A pydantic model of the fields loading relies on; fields it does not declare are kept.
        remedy: What the error tells the user to do, e.g. "export again".

    Returns:
        The object with ``schema``'s defaults filled in.

    Raises:
        ModelDirectoryError: the file is not valid JSON, not an object, or a field is missing or of the
            wrong type (the file and the field are named).
    """
    data = read_json_object(path, remedy)
    try:
        return schema.model_validate(data).model_dump()
    except ValidationError as error:
        raise ModelDirectoryError(f"{path}: {describe_first_problem(error)}; {remedy}") from None


class BackendRecordSchema(BaseModel):
    """The fields of ``BACKEND_RECORD`` that ``Encoder.load(backend="auto")`` reads."""

    model_config = ConfigDict(extra="allow")
    backend: Literal["torch", "onnx", "openvino"]
    file_name: str | None = None
    dtype: str | None = None
    cpu: str | None = None


def files_sha256(prefix: str, files: list[Path]) -> str:
    """SHA-256 of ``prefix`` then the bytes of ``files`` in order, read in 1 MiB blocks (an exported
    model's fingerprint: the prefix keeps backends and precisions from sharing cache entries)."""
    digest = hashlib.sha256(prefix.encode())
    for file in files:
        with file.open("rb") as stream:
            while block := stream.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def _require_files(folder: Path, names: tuple[str, ...], what: str) -> None:
    if not any((folder / name).is_file() for name in names):
        present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        raise ModelDirectoryError(
            f"{folder}: no {what} file found (expected one of {', '.join(names)}); "
            f"the folder holds: {', '.join(present) or 'nothing'}"
        )


def check_transformer_dir(folder: Path) -> None:
    """Fail with a message naming the missing file unless ``folder`` is a loadable checkpoint."""
    if not (folder / "config.json").is_file():
        raise ModelDirectoryError(
            f"{folder}: missing config.json; not a Hugging Face or sentence-transformers model directory"
        )
    read_json(folder / "config.json")
    _require_files(folder, WEIGHT_FILES, "model weights")
    _require_files(folder, TOKENIZER_FILES, "tokenizer")


def _read_settings(path: Path, values: dict[str, tuple[Any, ...]], fields: tuple[str, ...] | None) -> dict[str, Any]:
    """The JSON object of a module's config file, once every field in it is one e5kit honours.

    Args:
        values: Fields e5kit honours only at the listed values.
        fields: The module's other fields; None: the module ignores fields it does not know.

    Raises:
        ModelDirectoryError: naming the file and the first field refused.
    """
    config = read_json_object(path)
    if fields is not None:
        known = [*fields, *values]
        for name in config:
            if name not in known:
                raise ModelDirectoryError(f"{path}: field {name!r} is not supported (supported: {', '.join(known)})")
    for name, allowed in values.items():
        if name in config and config[name] not in allowed:
            raise ModelDirectoryError(
                f"{path}: {name} {json.dumps(config[name])} is not supported (supported: {' or '.join(json.dumps(value) for value in allowed)})"
            )
    return config


def _pooling_from_config(path: Path) -> str:
    config = _read_settings(path, _POOLING_VALUES, _POOLING_FIELDS)
    if "pooling_mode" in config:  # sentence-transformers >= 6
        mode = config["pooling_mode"]
        mode = mode[0] if isinstance(mode, list) and len(mode) == 1 else mode
    else:
        chosen = [name for key, name in _LEGACY_POOLING_KEYS.items() if config.get(key)]
        if len(chosen) != 1:
            raise ModelDirectoryError(f"{path}: expected exactly one pooling mode to be set, found {chosen or 'none'}")
        mode = chosen[0]
    if mode not in POOLING_MODES:
        raise ModelDirectoryError(f"{path}: pooling mode {mode!r} is not supported (supported: {', '.join(POOLING_MODES)})")
    return mode


def _max_length_from_transformer_config(folder: Path) -> int | None:
    """``max_seq_length`` of the Transformer module's settings in ``folder`` (``TRANSFORMER_CONFIG_FILES``),
    None when it has none, once every setting there is one e5kit honours."""
    for name in TRANSFORMER_CONFIG_FILES:
        path = folder / name
        config = _read_settings(path, _TRANSFORMER_VALUES, _TRANSFORMER_FIELDS) if path.is_file() else {}
        if config:
            if config.get("do_lower_case"):
                _check_lower_case(path, folder)
            return config.get("max_seq_length")
    return None


def _check_lower_case(path: Path, folder: Path) -> None:
    """Refuse ``do_lower_case`` unless the tokenizer in ``folder`` lowercases every text itself.

    sentence-transformers honours it by putting a Lowercase step in front of the tokenizer's
    normaliser (unless the normaliser holds one already), while e5kit tokenises with the tokenizer as
    saved; both give the same tokens when the normaliser holds a Lowercase step, or is an uncased
    BERT's, which lowercases after stripping accents, so that lowercasing first changes nothing.
    """
    from tokenizers import normalizers
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    normalizer = tokenizer.backend_tokenizer.normalizer if tokenizer.is_fast else None
    steps = list(normalizer) if isinstance(normalizer, normalizers.Sequence) else [normalizer]
    if not (
        any(isinstance(step, normalizers.Lowercase) for step in steps)
        or (isinstance(normalizer, normalizers.BertNormalizer) and normalizer.lowercase)
    ):
        raise ModelDirectoryError(
            f"{path}: do_lower_case true is not supported with this tokenizer, which keeps case "
            "(sentence-transformers lowercases the texts; e5kit tokenises them as the tokenizer does)"
        )


def _max_length_from_tokenizer(folder: Path) -> int | None:
    config_path = folder / "tokenizer_config.json"
    if not config_path.is_file():
        return None
    limit = read_json(config_path).get("model_max_length")
    # Tokenizers without a limit store a huge sentinel (1e30).
    return int(limit) if isinstance(limit, (int, float)) and limit < 1_000_000 else None


def read_backend_record(root: Path) -> dict | None:
    """``root``'s ``BACKEND_RECORD`` (keys of ``BackendRecordSchema``, and the measurements), or None when it has none.

    Raises:
        ModelDirectoryError: the record is not valid JSON, or a field is missing or wrong (it is named).
    """
    path = root / BACKEND_RECORD
    return read_record(path, BackendRecordSchema, "run e5kit export auto again") if path.is_file() else None


def read_model_dir(root: Path) -> ModelSpec:
    """Describe the model in ``root`` (sentence-transformers or plain Hugging Face layout).

    Raises:
        ModelDirectoryError: if a required file is missing or malformed, naming it, or a module's
            setting is one e5kit would not embed with as sentence-transformers does (file and field named).
    """
    if not root.is_dir():
        raise ModelDirectoryError(f"{root}: not a directory")
    modules_path = root / "modules.json"
    if not modules_path.is_file():
        check_transformer_dir(root)
        return ModelSpec(
            transformer_dir=root,
            max_length=_max_length_from_tokenizer(root),
            prompts=dict(E5_PROMPTS),
        )

    modules = read_json(modules_path)
    if not isinstance(modules, list) or not all(isinstance(m, dict) and "type" in m for m in modules):
        raise ModelDirectoryError(f"{modules_path}: expected a list of objects with a 'type' field")
    spec = ModelSpec(transformer_dir=root, is_sentence_transformers=True)
    seen_transformer = seen_pooling = has_normalize = False
    for index, module in enumerate(modules):
        kind = module["type"].rsplit(".", 1)[-1]
        folder = root / module.get("path", "")
        if kind == "Transformer":
            spec.transformer_dir, seen_transformer = folder, True
        elif kind == "Pooling":
            config_path = folder / "config.json"
            if not config_path.is_file():
                raise ModelDirectoryError(f"{config_path}: missing (modules.json lists a Pooling module at index {index})")
            spec.pooling, seen_pooling = _pooling_from_config(config_path), True
        elif kind == "Normalize":
            if (folder / "config.json").is_file():  # written by sentence-transformers >= 6
                _read_settings(folder / "config.json", _NORMALIZE_VALUES, fields=None)
            has_normalize = True
        else:
            raise ModelDirectoryError(
                f"{modules_path}: module {index} has type {module['type']!r}, which e5kit does not support "
                "(supported: Transformer, Pooling, Normalize)"
            )
    if not seen_transformer:
        raise ModelDirectoryError(f"{modules_path}: lists no Transformer module")
    if not seen_pooling:
        raise ModelDirectoryError(f"{modules_path}: lists no Pooling module")
    check_transformer_dir(spec.transformer_dir)

    spec.max_length = _max_length_from_transformer_config(spec.transformer_dir) or _max_length_from_tokenizer(spec.transformer_dir)

    st_config_path = root / "config_sentence_transformers.json"
    st_config = read_json(st_config_path) if st_config_path.is_file() else {}
    prompts = st_config.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise ModelDirectoryError(f"{st_config_path}: 'prompts' must map prompt names to strings")
    try:
        spec.prompts = canonical_prompts({name: text for name, text in prompts.items() if text})
    except ValueError as error:
        raise ModelDirectoryError(f"{st_config_path}: {error}") from error
    declared = st_config.get("similarity_fn_name") or "cosine"
    # On L2-normalised vectors every similarity sentence-transformers knows ranks as cosine does.
    if has_normalize:
        declared = "cosine"
    elif declared not in SIMILARITY_FUNCTIONS:
        raise ModelDirectoryError(
            f"{st_config_path}: similarity_fn_name {declared!r} is not supported (supported: {', '.join(SIMILARITY_FUNCTIONS)})"
        )
    spec.similarity_fn_name = declared
    return spec


def canonical_prompts(prompts: dict[str, str]) -> dict[str, str]:
    """``prompts`` with alias names (``ROLE_ALIASES``) folded into the role they stand for.

    Raises:
        ValueError: an alias and its role (or two aliases) carry different prefixes, so e5kit's role
            and sentence-transformers' ``encode_document`` would disagree.
    """
    canonical = {name: text for name, text in prompts.items() if name not in ROLE_ALIASES}
    for alias, role in ROLE_ALIASES.items():
        if alias in prompts and canonical.setdefault(role, prompts[alias]) != prompts[alias]:
            raise ValueError(
                f"prompts {alias!r} ({prompts[alias]!r}) and {role!r} ({canonical[role]!r}) differ, but e5kit reads "
                f"{alias!r} as {role!r}; make them equal, or pass prompts= to Encoder.load"
            )
    return canonical


def st_prompts(prompts: dict[str, str]) -> dict[str, str]:
    """``prompts`` as saved for sentence-transformers: the passage prefix also under "document", the
    name sentence-transformers 6's ``encode_document`` looks up first."""
    saved = dict(prompts)
    if "passage" in prompts:
        saved.setdefault("document", prompts["passage"])
    return saved


def write_st_metadata(
    root: Path,
    *,
    dimension: int,
    pooling: str,
    similarity_fn_name: str,
    max_length: int,
    prompts: dict[str, str],
    versions: dict[str, str],
) -> None:
    """Write the sentence-transformers files around a saved Hugging Face checkpoint in ``root``.

    The similarity is declared twice, so every tool that loads the folder scores the same way: a
    cosine model gets a Normalize module (its embeddings come out L2-normalised everywhere) and
    ``similarity_fn_name`` names the function in ``config_sentence_transformers.json``. The prompts
    are saved with ``st_prompts``, so ``SentenceTransformer.encode_query`` / ``encode_document``
    add the query / passage prefix.
    """
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if similarity_fn_name not in SIMILARITY_FUNCTIONS:
        raise ValueError(f"similarity_fn_name must be one of {', '.join(SIMILARITY_FUNCTIONS)}, got {similarity_fn_name!r}")
    if similarity_fn_name == "cosine":
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (root / "2_Normalize").mkdir(exist_ok=True)
    pooling_config = {"word_embedding_dimension": dimension, "include_prompt": True}
    pooling_config.update({key: name == pooling for key, name in _LEGACY_POOLING_KEYS.items()})
    (root / "1_Pooling").mkdir(exist_ok=True)
    _write_json(root / "1_Pooling" / "config.json", pooling_config)
    _write_json(root / "modules.json", modules)
    _write_json(root / "sentence_bert_config.json", {"max_seq_length": max_length, "do_lower_case": False})
    _write_json(
        root / "config_sentence_transformers.json",
        {
            "__version__": versions,
            "prompts": st_prompts(prompts),
            "default_prompt_name": None,
            "similarity_fn_name": similarity_fn_name,
        },
    )


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
