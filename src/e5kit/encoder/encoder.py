"""The E5 encoder: role prefixes, input validation, length-sorted batching, truncation counts.

The forward pass is a ``Backend``'s (``e5kit.encoder.backend``): torch, ONNX Runtime for a folder
written by ``e5kit export onnx``, or OpenVINO for one written by ``e5kit export openvino``; everything
else is this class's, so every backend embeds the same inputs.

Example:
    >>> encoder = Encoder.load("path/to/model")               # doctest: +SKIP
    >>> queries = encoder.encode_queries(["how do cells divide"])   # "query: " added here
    >>> passages = encoder.encode_passages(["Mitosis is ..."])      # "passage: " added here
    >>> scores = queries @ passages.T                                # cosine: vectors are L2-normalised
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from e5kit.encoder import model_format
from e5kit.encoder.backend import Backend, TorchBackend, load_transformer, saved_state_dict
from e5kit.encoder.batching import padded_length, plan_batches
from e5kit.encoder.precision import cpu_description
from e5kit.hub import resolve_model_dir
from e5kit.io.files import AtomicFolder
from e5kit.io.text import has_visible_text
from e5kit.progress import progress_bar

logger = logging.getLogger(__name__)

#: Other names of roles ("document" is sentence-transformers 6's name for passages).
ROLE_ALIASES = model_format.ROLE_ALIASES
#: Inference backends ``Encoder.load`` accepts.
BACKENDS = model_format.BACKENDS
#: The role that embeds raw text with no prefix, even on a model that has prompts.
NO_PROMPT = "none"
#: Texts are sorted by token length this many at a time (``encode`` bounds its id lists per block).
TOKENIZE_BLOCK = 16384
#: Texts per tokenizer call: a fast tokenizer holds every text's full encoding (tokens, offsets) until
#: it truncates, ~100 MB for 4,096 abstracts, so calls stay small.
TOKENIZER_CALL_TEXTS = 256


@dataclass
class EncodeStats:
    """What the last ``encode`` call did.

    Attributes:
        texts: Number of texts embedded.
        truncated: Texts longer than ``max_length`` tokens (prefix included), cut to fit.
        already_prefixed: Texts that already began with the role prefix, which was then not added again.
        token_counts: Tokens embedded per text, in input order (prefix and special tokens included,
            after truncation).
    """

    texts: int = 0
    truncated: int = 0
    already_prefixed: int = 0
    token_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


class Encoder:
    """A bi-encoder that embeds text the E5 way, on a torch, ONNX Runtime or OpenVINO ``Backend``.

    The role prefixes live with the model (``prompts``), and the encoder adds them itself, once.
    Outputs are float32 numpy arrays, scored by dot product: L2-normalised when the similarity is
    cosine (the default, as in E5 and sentence-transformers), raw for "dot".

    Args:
        model: A Hugging Face encoder returning ``last_hidden_state`` (run by a ``TorchBackend``), or
            a ``Backend`` (``TorchBackend``, ``OnnxBackend``, ``OpenVinoBackend``); ``device`` and ``dtype`` then do not apply.
        tokenizer: Its tokenizer.
        prompts: Role name -> prefix, e.g. ``{"query": "query: ", "passage": "passage: "}``; empty for
            models trained without prefixes. Aliases (``ROLE_ALIASES``: "document", ...) are read as
            the role they name; ValueError when an alias and its role carry different prefixes.
        pooling: "mean" (E5), "cls" or "max" (a backend's own pooling must match).
        similarity_fn_name: "cosine" (L2-normalised embeddings, whatever the model's own modules) or
            "dot" (raw embeddings); sentence-transformers' name for the setting.
        max_length: Token limit per text, prefix and special tokens included.
        device: Torch device; None picks CUDA when present.
        dtype: "float32", "float16" (CUDA only), "bfloat16", or "auto" (CPU: bfloat16 where measured
            faster and faithful, see ``TorchBackend``).
    """

    def __init__(
        self,
        model: PreTrainedModel | Backend,
        tokenizer: PreTrainedTokenizerBase,
        *,
        prompts: dict[str, str] | None = None,
        pooling: str = "mean",
        similarity_fn_name: str = "cosine",
        max_length: int = 512,
        device: str | torch.device | None = None,
        dtype: str = "float32",
    ) -> None:
        if pooling not in model_format.POOLING_MODES:
            raise ValueError(f"pooling must be one of {model_format.POOLING_MODES}, got {pooling!r}")
        if isinstance(model, Backend):
            if model.pooling != pooling:
                raise ValueError(f"the {model.name} backend pools with {model.pooling!r}, not {pooling!r}")
            self.backend = model
        else:
            self.backend = TorchBackend(model, pooling, device=device, dtype=dtype)
        if similarity_fn_name not in model_format.SIMILARITY_FUNCTIONS:
            raise ValueError(f"similarity_fn_name must be one of {', '.join(model_format.SIMILARITY_FUNCTIONS)}, got {similarity_fn_name!r}")
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no padding token; set tokenizer.pad_token before building an Encoder")
        self.tokenizer = tokenizer
        self.prompts = model_format.canonical_prompts({name: text for name, text in (prompts or {}).items() if text})
        self.pooling = pooling
        self.similarity_fn_name = similarity_fn_name
        position_limit = getattr(self.backend.config, "max_position_embeddings", None) or max_length
        self.max_length = min(max_length, position_limit)
        self.last_stats = EncodeStats()

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def load(
        cls,
        name_or_path: str | Path,
        *,
        prompts: dict[str, str] | None = None,
        max_length: int | None = None,
        similarity_fn_name: str | None = None,
        device: str | torch.device | None = None,
        dtype: str | None = None,
        backend: str = "torch",
        file_name: str | None = None,
        threads: int | None = None,
    ) -> Encoder:
        """Load a sentence-transformers directory, a plain Hugging Face checkpoint, or a Hub model.

        Settings stored with the model (prompts, pooling, similarity, max length) are used unless
        overridden here. A plain Hugging Face checkpoint gets E5's "query: "/"passage: " prompts and
        cosine similarity; a sentence-transformers folder without a Normalize module scores with the
        similarity it declares, cosine when it declares none (sentence-transformers' default).

        Args:
            dtype: torch: "float32" (default), "float16" (CUDA only), "bfloat16" or "auto" (see
                ``TorchBackend``); openvino: the inference precision, "float32", "bfloat16" or "auto"
                (default: the one ``e5kit export openvino`` chose and recorded); onnx: refused (the
                graph fixes its precision).
            backend: "torch"; "onnx" for a directory written by ``e5kit export onnx`` (CPU inference
                with ONNX Runtime; ``device`` only "cpu"); "openvino" for one written by
                ``e5kit export openvino``, or the fp32 graph of an ONNX export (CPU inference with
                OpenVINO, ``pip install 'e5kit[openvino]'``; ``device`` only "cpu"); "auto" for the
                backend, file and precision ``e5kit export auto`` measured fastest and recorded in the
                folder (``model_format.BACKEND_RECORD``; ``file_name`` and ``dtype`` then come from the
                record), torch for a folder without that record.
            file_name: onnx: a file in ``onnx/``; openvino: an IR in ``openvino/`` (default: the
                export manifest's default, int8 when exported with ``--quantize int8``).
            threads: Inference threads: ONNX Runtime's or OpenVINO's for this model (default: one per
                physical core); torch's for the whole process (``torch.set_num_threads``; default: torch's).

        Raises:
            FileNotFoundError: the model cannot be found locally or downloaded.
            model_format.ModelDirectoryError: a required file is missing or malformed (it is named).
            ValueError: an unknown backend or dtype, or an option the backend does not take (dtype
                for onnx, file_name for torch, either for auto, a device other than the CPU for
                onnx and openvino).
            ImportError: backend "openvino" without the openvino package.
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        _check_backend_options(backend, file_name=file_name, dtype=dtype)
        root = resolve_model_dir(name_or_path)
        spec = model_format.read_model_dir(root)
        asked = backend
        if backend == "auto":
            backend, file_name, recorded_dtype = _recorded_backend(root)
            dtype = recorded_dtype if backend != "onnx" else None
        if backend != "torch" and device is not None and str(device).split(":")[0] != "cpu":
            chosen = f"backend={backend!r}" + (f" (what e5kit export auto recorded in {root})" if asked == "auto" else "")
            raise ValueError(f"{chosen} runs on the CPU; device={str(device)!r} applies to backend='torch' only")
        if backend == "onnx":
            from e5kit.encoder.onnx_backend import OnnxBackend

            model = OnnxBackend.load(root, spec, file_name=file_name, threads=threads)
        elif backend == "openvino":
            from e5kit.encoder.openvino_backend import OpenVinoBackend

            model = OpenVinoBackend.load(root, spec, file_name=file_name, dtype=dtype, threads=threads)
        else:
            if threads is not None:
                torch.set_num_threads(threads)  # torch's intra-op pool is the process's, not the model's
            model = load_transformer(spec.transformer_dir)
        return cls(
            model,
            AutoTokenizer.from_pretrained(spec.transformer_dir),
            prompts=spec.prompts if prompts is None else prompts,
            pooling=spec.pooling,
            similarity_fn_name=similarity_fn_name or spec.similarity_fn_name,
            max_length=max_length or spec.max_length or 512,
            device=device,
            dtype=dtype or "float32",
        )

    def save(self, path: str | Path, model_card: str | None = None) -> Path:
        """Save as a sentence-transformers directory that also loads with ``AutoModel.from_pretrained``.

        The folder is written whole or not at all (``e5kit.io.files.AtomicFolder``): a run killed mid-save
        leaves the previous folder, or none, never a half model that a later stage would load.

        Args:
            path: Output folder (created; an existing model folder, or an empty folder, is replaced).
            model_card: Markdown for README.md; when None, ``e5kit.model_card.build_model_card``'s card
                (Hub front matter, usage) without training details.

        Raises:
            e5kit.io.files.OutputPathError: ``path`` is a file, or a non-empty folder that holds no model.
            TypeError: the encoder runs on ONNX Runtime or OpenVINO (save the torch model and export that).
        """
        module = self._torch_module("save the torch model and export it with `e5kit export onnx` instead")
        with AtomicFolder(path, replaces="config.json") as staged:
            self._write_model_files(module, staged.temporary, model_card, name=Path(path).resolve().name)
        return Path(path)

    def write_model_files(self, root: Path, model_card: str | None, name: str) -> None:
        """Write the files of :meth:`save` into the existing folder ``root`` (a staging folder that the
        caller renames into place); ``name`` is the model's name in the default card."""
        module = self._torch_module("save the torch model and export it with `e5kit export onnx` instead")
        self._write_model_files(module, root, model_card, name)

    def _write_model_files(self, module: PreTrainedModel, root: Path, model_card: str | None, name: str) -> None:
        import sentence_transformers
        import transformers

        module.save_pretrained(root, state_dict=saved_state_dict(module))
        self.tokenizer.model_max_length = self.max_length
        self.tokenizer.save_pretrained(root)
        model_format.write_st_metadata(
            root,
            dimension=self.dimension,
            pooling=self.pooling,
            similarity_fn_name=self.similarity_fn_name,
            max_length=self.max_length,
            prompts=self.prompts,
            versions={
                "sentence_transformers": sentence_transformers.__version__,
                "transformers": transformers.__version__,
                "pytorch": torch.__version__,
            },
        )
        if model_card is None:
            from e5kit.model_card import build_model_card

            model_card = build_model_card(self, title="e5kit model", model_name=name)
        (root / "README.md").write_text(model_card, encoding="utf-8")

    # ------------------------------------------------------------------ properties
    @property
    def model(self) -> PreTrainedModel:
        """The torch backend's module (what training updates and ``save`` writes).

        Raises:
            TypeError: on the onnx and openvino backends, which have no torch module.
        """
        return self._torch_module("load the model with backend='torch' to train or save it")

    def _torch_module(self, hint: str) -> PreTrainedModel:
        if not isinstance(self.backend, TorchBackend):
            where = getattr(self.backend, "file", self.backend.name)
            raise TypeError(f"{where}: the {self.backend.name} backend is inference-only and has no torch module; {hint}")
        return self.backend.module

    @property
    def device(self) -> torch.device:
        """The torch device inputs go to (CPU for ONNX Runtime and OpenVINO)."""
        return self.backend.device

    @property
    def dtype(self) -> str:
        """The backend's precision: "float32", "float16", "bfloat16", or "int8" (a quantised ONNX graph or OpenVINO IR)."""
        return self.backend.dtype

    @property
    def default_batch_size(self) -> int:
        """Texts per forward pass when ``encode`` is not told (torch 32, ONNX and OpenVINO 8)."""
        return self.backend.default_batch_size

    @property
    def dimension(self) -> int:
        """Embedding size."""
        return int(self.backend.dimension)

    @property
    def normalize(self) -> bool:
        """Whether embeddings come out L2-normalised: exactly when the similarity is cosine."""
        return self.similarity_fn_name == "cosine"

    def fingerprint(self) -> str:
        """The backend's fingerprint (torch: its weights hash; ONNX, OpenVINO: its model files' hash), which
        embedding caches and evaluation results key on."""
        return self.backend.fingerprint()

    # ------------------------------------------------------------------ text preparation
    def prompt_for(self, role: str | None) -> str:
        """The prefix for ``role``; "" for models without prompts or for role "none".

        Raises:
            ValueError: when the model has prompts and ``role`` is missing or unknown, so a caller
                cannot silently embed E5 inputs without their prefix.
            TypeError: ``role`` is not a string (``encode(texts, 8)`` meant ``batch_size=8``).
        """
        if role is not None and not isinstance(role, str):
            raise TypeError(f"role must be a string or None, got {type(role).__name__} {role!r} (batch_size and the other options are keyword-only)")
        if role == NO_PROMPT or not self.prompts:
            return ""
        role = ROLE_ALIASES.get(role, role) if role is not None else None
        if role not in self.prompts:
            known = ", ".join(f"{name!r}" for name in self.prompts)
            hint = f"unknown role {role!r}" if role is not None else "no role given"
            raise ValueError(
                f"{hint}: this model embeds text with role prefixes; pass role= one of {known}, "
                f"or role='{NO_PROMPT}' for raw text"
            )
        return self.prompts[role]

    def prepare(self, texts: Sequence[str], role: str | None) -> list[str]:
        """Validate ``texts`` and add the role prefix once (texts that already carry it are left as is).

        Raises:
            TypeError/ValueError: naming the index of the first None or non-string text, or of the first
                text without visible characters (``e5kit.io.text.has_visible_text``): such texts would all
                embed to the same vector.
        """
        return self._prepare(texts, role)[0]

    def _prepare(self, texts: Sequence[str], role: str | None) -> tuple[list[str], int]:
        """``prepare``, plus how many texts already carried the prefix."""
        if isinstance(texts, str):
            raise TypeError("expected a list of strings, got a single string; wrap it in a list")
        prefix = self.prompt_for(role)
        prepared: list[str] = []
        already = 0
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text at index {index} is {type(text).__name__}, expected str")
            if not has_visible_text(text):
                raise ValueError(f"text at index {index} has no visible text (empty, whitespace or zero-width characters only)")
            if prefix and text.startswith(prefix):
                already += 1
                prepared.append(text)
            else:
                prepared.append(prefix + text)
        return prepared, already

    def tokenize(self, texts: Sequence[str], role: str | None) -> dict[str, torch.Tensor]:
        """Prefix, tokenise, truncate and pad ``texts`` into tensors on the encoder's device (for training)."""
        features = self.tokenizer(
            self.prepare(texts, role),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {name: tensor.to(self.device) for name, tensor in features.items()}

    # ------------------------------------------------------------------ embedding
    def embed(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Embed tokenised inputs with autograd enabled (the training path); (batch, dim), L2-normalised for cosine.

        Raises:
            TypeError: on the onnx and openvino backends, which compute no gradients.
        """
        self._torch_module("load the model with backend='torch' to train")
        embeddings = self.backend.embed(features)
        return torch.nn.functional.normalize(embeddings, dim=-1) if self.normalize else embeddings

    def encode(
        self,
        texts: Sequence[str],
        role: str | None = None,
        *,
        batch_size: int | None = None,
        normalize: bool | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Embed ``texts`` in the given role; what the call did is left in ``last_stats``.

        Texts are tokenised in blocks, sorted by token length and cut into batches by
        ``plan_batches`` (little padding, few passes), truncated at ``max_length`` (counted in
        ``last_stats.truncated``), and returned in input order.

        Args:
            texts: Strings to embed; an empty list gives a (0, dim) array.
            role: "query", "passage" (or another prompt name of the model); optional for models without
                prompts; "none" embeds raw text.
            batch_size: Most texts per forward pass (default: the backend's ``default_batch_size``).
            normalize: Override the similarity's normalisation (E5 classification uses raw features).
            show_progress: False: no progress bar; True or None: one on a terminal once encoding takes
                a few seconds, at any number of texts (see ``e5kit.progress``).

        Returns:
            (len(texts), dim) float32 array.
        """
        embeddings, self.last_stats = self._encode(texts, role, batch_size, normalize, show_progress)
        return embeddings

    def encode_with_stats(self, texts: Sequence[str], role: str | None = None, **options) -> tuple[np.ndarray, EncodeStats]:
        """``encode`` (same options) that returns its ``EncodeStats`` instead of keeping them in ``last_stats``.

        For callers that share one Encoder between threads (the server), where ``last_stats`` may
        already belong to another call.
        """
        return self._encode(texts, role, **options)

    def _encode(self, texts, role, batch_size=None, normalize=None, show_progress=None) -> tuple[np.ndarray, EncodeStats]:
        prepared, already = self._prepare(texts, role)
        stats = EncodeStats(texts=len(prepared), already_prefixed=already, token_counts=np.zeros(len(prepared), dtype=np.int64))
        output = np.empty((len(prepared), self.dimension), dtype=np.float32)
        if not prepared:
            return output, stats
        normalize = self.normalize if normalize is None else normalize
        batch_size = batch_size or self.default_batch_size
        with progress_bar(total=len(prepared), desc="encoding", unit="text", show=show_progress) as progress:
            for start in range(0, len(prepared), TOKENIZE_BLOCK):
                block_ids = self.token_ids(prepared[start : start + TOKENIZE_BLOCK], stats=stats)
                lengths = np.array([len(ids) for ids in block_ids], dtype=np.int64)
                stats.token_counts[start : start + len(block_ids)] = lengths
                order = np.argsort(-lengths, kind="stable")
                sizes = plan_batches(lengths[order], batch_size, self.backend.forward_overhead_tokens, self.backend.sequence_multiple, self.max_length)
                for batch_index in np.split(order, np.cumsum(sizes)[:-1]):
                    embeddings = self._embed_arrays(*self.pad([block_ids[i] for i in batch_index]), normalize)
                    output[start + batch_index] = embeddings
                    progress.update(len(batch_index))
        if stats.truncated:
            logger.info("%d of %d texts were longer than %d tokens and were truncated", stats.truncated, stats.texts, self.max_length)
        return output, stats

    def warm_up(self, batch_size: int | None = None, max_length: int | None = None, *, show_progress: bool | None = None) -> int:
        """Run one forward pass at every input shape ``encode`` can give the backend within these bounds,
        where the backend builds kernels per shape (``Backend.compiles_per_shape``); elsewhere nothing.

        The shapes are every batch size from 1 to ``batch_size`` times every padded length
        (``padded_length``) of texts up to ``max_length`` tokens: what ``encode(texts,
        batch_size=batch_size)`` passes for texts of at most that many tokens. Each pass embeds pad
        tokens, so it costs the time of real texts of that shape.

        Args:
            batch_size: The ``batch_size`` later ``encode`` calls pass (default: ``default_batch_size``).
            max_length: Longest text, in tokens, to warm for (default and cap: the encoder's ``max_length``).

        Returns:
            The number of shapes run: 0 where the backend needs no warm-up.
        """
        if not self.backend.compiles_per_shape:
            return 0
        limit = min(max_length or self.max_length, self.max_length)
        lengths = sorted({padded_length(length, self.backend.sequence_multiple, self.max_length) for length in range(1, limit + 1)})
        shapes = [(size, length) for length in lengths for size in range(1, (batch_size or self.default_batch_size) + 1)]
        with progress_bar(total=len(shapes), desc="warming up input shapes", unit="shape", show=show_progress) as progress:
            for size, length in shapes:
                self._embed_arrays(*self.pad([[self.tokenizer.pad_token_id] * length] * size), normalize=False)
                progress.update(1)
        return len(shapes)

    def encode_queries(self, texts: Sequence[str], **kwargs) -> np.ndarray:
        """``encode(texts, role="query")``."""
        return self.encode(texts, role="query", **kwargs)

    def encode_passages(self, texts: Sequence[str], **kwargs) -> np.ndarray:
        """``encode(texts, role="passage")``."""
        return self.encode(texts, role="passage", **kwargs)

    def token_ids(self, texts: Sequence[str], max_length: int | None = None, stats: EncodeStats | None = None) -> list[list[int]]:
        """Token ids of already-prefixed ``texts`` (see ``prepare``), truncated at ``max_length``.

        Args:
            texts: Prefixed texts.
            max_length: Token limit (default: the encoder's ``max_length``).
            stats: When given, texts longer than the limit are counted in ``stats.truncated``.
        """
        max_length = max_length or self.max_length
        token_ids: list[list[int]] = []
        for start in range(0, len(texts), TOKENIZER_CALL_TEXTS):
            block = texts[start : start + TOKENIZER_CALL_TEXTS]
            block_ids = self.tokenizer(
                block, truncation=True, max_length=max_length, return_attention_mask=False, return_token_type_ids=False
            )["input_ids"]
            if stats is not None:
                # Only texts that hit the limit exactly can have been cut; re-tokenise just those to know.
                at_limit = [block[i] for i, ids in enumerate(block_ids) if len(ids) >= max_length]
                if at_limit:
                    full_lengths = self.tokenizer(
                        at_limit, return_attention_mask=False, return_token_type_ids=False, verbose=False
                    )["input_ids"]
                    stats.truncated += sum(len(ids) > max_length for ids in full_lengths)
            token_ids.extend(block_ids)
        return token_ids

    def pad(self, batch_ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Right-pad token id lists into (batch, length) int64 ``input_ids`` and ``attention_mask``.

        ``length`` is the longest list's, rounded up by ``padded_length`` to the backend's
        ``sequence_multiple``; the padding is masked out, so it changes no embedding beyond rounding.
        """
        longest = padded_length(max(len(ids) for ids in batch_ids), self.backend.sequence_multiple, self.max_length)
        input_ids = np.full((len(batch_ids), longest), self.tokenizer.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((len(batch_ids), longest), dtype=np.int64)
        for row, ids in enumerate(batch_ids):
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        return input_ids, attention_mask

    def _embed_arrays(self, input_ids: np.ndarray, attention_mask: np.ndarray, normalize: bool) -> np.ndarray:
        """The backend's batch step: (batch, seq_len) int64 ids and mask -> (batch, dim) float32 embeddings."""
        return self.backend.forward(input_ids, attention_mask, normalize=normalize)


def _check_backend_options(backend: str, *, file_name: str | None, dtype: str | None) -> None:
    """Refuse an ``Encoder.load`` option the backend would not use, rather than drop it silently."""
    if backend == "auto" and (file_name is not None or dtype is not None):
        raise ValueError("backend='auto' takes the file and precision e5kit export auto recorded; pass a backend to choose them")
    if backend == "torch" and file_name is not None:
        raise ValueError("file_name applies to backend='onnx' or 'openvino' only")
    if backend == "onnx" and dtype is not None:
        raise ValueError(f"dtype={dtype!r} does not apply to backend='onnx': the exported graph fixes its precision (choose the graph with file_name)")


def _recorded_backend(root: Path) -> tuple[str, str | None, str | None]:
    """(backend, file_name, dtype) that ``e5kit export auto`` recorded in ``root``; torch float32 without a record.

    The record names the CPU it was measured on: loading it on another CPU logs that the choice may
    not be the fastest here (int8 and bf16 speed differ several-fold between CPUs).
    """
    record = model_format.read_backend_record(root)
    if record is None:
        logger.info("%s: no %s (from e5kit export auto); backend auto runs torch", root, model_format.BACKEND_RECORD)
        return "torch", None, None
    if record["cpu"] != cpu_description():
        logger.warning("%s: the backend was chosen on %s; this machine is %s: run e5kit export auto here to measure again",
                       root / model_format.BACKEND_RECORD, record["cpu"], cpu_description())
    return record["backend"], record["file_name"], record["dtype"]
