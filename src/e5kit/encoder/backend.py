"""The ``Backend`` protocol the ``Encoder`` runs its forward pass through, the torch backend, and the
helpers every backend shares (``normalize_rows``).

A backend turns padded token ids into pooled embeddings and says what it is: its ``name`` ("torch", "onnx",
"openvino"), embedding ``dimension``, Hugging Face ``config`` (position limit), preferred batch size, and
a ``fingerprint`` that embedding caches and evaluation results key on. Everything before the forward
pass (prompts, validation, tokenising, length-sorted batching, truncation counts) is the Encoder's,
so every backend embeds the same inputs.
"""

from __future__ import annotations

import hashlib
import logging
from copy import deepcopy
from functools import partial
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from transformers import PreTrainedModel

from e5kit.encoder import model_format
from e5kit.encoder.pooling import pool
from e5kit.encoder.precision import PrecisionChoice, PrecisionProbe, choose_precision, measure_precisions, probe_inputs

logger = logging.getLogger(__name__)

#: The attribute of a loaded module holding its checkpoint's pooler weights (``load_transformer``);
#: a plain attribute, so they are neither parameters (trained, hashed, checkpointed) nor moved by ``.to``.
POOLER_ATTRIBUTE = "e5kit_pooler_state"

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@runtime_checkable
class Backend(Protocol):
    """What the ``Encoder`` needs from a runtime.

    Attributes:
        name: "torch", "onnx" or "openvino".
        pooling: The pooling the forward pass applies ("mean", "cls", "max").
        config: The Hugging Face model config (hidden size, position limit).
        device: The torch device inputs go to (CPU for ONNX Runtime).
        dtype: Weight precision ("float32", "float16", "bfloat16", or "int8" for a quantised graph).
        default_batch_size: Texts per forward pass when the caller does not say.
        sequence_multiple: Padded batches are rounded up to a multiple of this many tokens
            (``e5kit.encoder.batching.padded_length``); 1: padded to the longest text.
        forward_overhead_tokens: What one forward pass costs beyond its tokens, in tokens' worth of
            time: how ``e5kit.encoder.batching.plan_batches`` weighs one more pass against padding.
        compiles_per_shape: Whether the runtime builds its kernels for each new (batch, seq_len) input
            shape at the first pass of that shape (OpenVINO's CPU plugin), which makes that pass slower
            than the next: a server runs the shapes it will meet once at start (``Encoder.warm_up``).
    """

    name: str
    pooling: str
    config: object
    device: torch.device
    dtype: str
    default_batch_size: int
    sequence_multiple: int
    forward_overhead_tokens: int
    compiles_per_shape: bool

    @property
    def dimension(self) -> int:
        """Embedding size."""

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray, *, normalize: bool) -> np.ndarray:
        """(batch, seq_len) int64 ids and mask -> (batch, dim) float32 pooled embeddings, L2-normalised if ``normalize``."""

    def fingerprint(self) -> str:
        """A hex digest that changes exactly when the embeddings can: caches and results key on it."""

    def load_options(self) -> dict[str, str | None]:
        """``Encoder.load`` arguments that load this backend again as it runs (backend, file, precision), for another process."""


def normalize_rows(embeddings: np.ndarray) -> np.ndarray:
    """(batch, dim) float32 -> the same rows L2-normalised, in place (and returned).

    Uses ``torch.nn.functional.normalize``'s epsilon (1e-12), so every backend agrees on zero vectors.
    """
    embeddings /= np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    return embeddings


def auto_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch device (None: ``auto_device``), checked to exist on this machine.

    Raises:
        ValueError: a malformed name, or a CUDA/MPS device this machine or this torch build lacks (one
            line, instead of torch's assertion at the first tensor moved there).
    """
    if device is None:
        return auto_device()
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"device {device!r} is not a torch device name ({error})") from None
    if resolved.type == "cuda" and (not torch.cuda.is_available() or (resolved.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"device {device!r} is not available: this machine has {torch.cuda.device_count()} CUDA device(s) visible to torch {torch.__version__}")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} is not available: MPS needs Apple silicon and a torch build with MPS")
    return resolved


class TorchBackend:
    """A Hugging Face encoder run by torch; the one backend that trains (``module``, ``embed``).

    Args:
        module: A Hugging Face encoder returning ``last_hidden_state``.
        pooling: "mean" (E5), "cls" or "max".
        device: Torch device; None picks CUDA when present.
        dtype: "float32", "float16" (CUDA only), "bfloat16", or "auto" (CPU only): bfloat16 where
            ``e5kit.encoder.precision.choose_precision`` finds it faster and faithful on this CPU (timed
            on a probe batch as the backend loads; the decision is kept in ``precision_choice``), else float32.

    Raises:
        ValueError: an unknown ``dtype``, float16 off CUDA, or auto off the CPU.
    """

    name = "torch"
    default_batch_size = 32
    sequence_multiple = 1
    # A first pass at a new shape cost 3.6 ms (float32) and 2.4 ms (bfloat16) more than the next on average
    # (all-MiniLM-L6-v2, 2 threads, 12 shapes, AMD EPYC Zen 5, scratch timing; OpenVINO's: 13 ms): no warm-up.
    compiles_per_shape = False

    def __init__(self, module: PreTrainedModel, pooling: str = "mean", device: str | torch.device | None = None, dtype: str = "float32") -> None:
        if dtype not in (*DTYPES, "auto"):
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, auto, got {dtype!r}")
        self.device = resolve_device(device)
        if dtype == "float16" and self.device.type != "cuda":
            raise ValueError("dtype float16 needs a CUDA device; on CPU use bfloat16 or float32")
        if dtype == "auto" and self.device.type != "cpu":
            raise ValueError("dtype auto chooses between float32 and bfloat16 on the CPU; on CUDA pass the dtype")
        self.pooling = pooling
        self.config = module.config
        self.precision_choice: PrecisionChoice | None = None
        if dtype == "auto":
            module = module.to(self.device).eval()
            self.precision_choice = choose_precision(partial(self._time_precisions, module))
            logger.info("torch: auto precision %s (%s)", self.precision_choice.precision, self.precision_choice.reason)
            dtype = self.precision_choice.precision
        self.module = module.to(device=self.device, dtype=DTYPES[dtype]).eval()
        self.dtype = dtype

    @property
    def dimension(self) -> int:
        """Embedding size."""
        return int(self.module.config.hidden_size)

    @property
    def forward_overhead_tokens(self) -> int:
        """Measured for all-MiniLM-L6-v2 on 2 Xeon cores (t(1 text) - (t(8) - t(1)) / 7 at 128 tokens): 56
        tokens' worth in float32, 1,084 in bfloat16 (a pass's fixed cost there is ~32 ms); a GPU, whose
        passes cost little per token, is given bfloat16's, so that it keeps full batches."""
        return 64 if self.device.type == "cpu" and self.dtype == "float32" else 1024

    def load_options(self) -> dict[str, str | None]:
        """``Encoder.load`` arguments for this backend in another process: torch at this precision."""
        return {"backend": self.name, "dtype": self.dtype}

    def embed(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pooled embeddings of tokenised inputs with autograd enabled (the training path); (batch, dim), not normalised."""
        hidden = self.module(**features).last_hidden_state  # (batch, seq_len, dim)
        return pool(hidden, features["attention_mask"], self.pooling)

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray, *, normalize: bool) -> np.ndarray:
        """Inference: (batch, seq_len) int64 ids and mask -> (batch, dim) float32 embeddings."""
        return self._forward(self.module, input_ids, attention_mask, normalize=normalize)

    def _time_precisions(self, module: PreTrainedModel) -> PrecisionProbe:
        """``measure_precisions`` of ``module`` (float32) and a bfloat16 copy of it on ``probe_inputs``."""
        probe = probe_inputs(module.config.vocab_size, getattr(module.config, "max_position_embeddings", None))
        copy = deepcopy(module).to(torch.bfloat16)  # the float32 weights stay intact whichever wins
        forwards = {"float32": partial(self._forward, module, normalize=False), "bfloat16": partial(self._forward, copy, normalize=False)}
        return measure_precisions(forwards, *probe, sequence_multiple=self.sequence_multiple)

    def _forward(self, module: PreTrainedModel, input_ids: np.ndarray, attention_mask: np.ndarray, *, normalize: bool) -> np.ndarray:
        features = {
            "input_ids": torch.from_numpy(input_ids).to(self.device),
            "attention_mask": torch.from_numpy(attention_mask).to(self.device),
        }
        with torch.inference_mode():
            hidden = module(**features).last_hidden_state  # (batch, seq_len, dim)
            embeddings = pool(hidden.float(), features["attention_mask"], self.pooling)
            if normalize:
                embeddings = torch.nn.functional.normalize(embeddings, dim=-1)
        return embeddings.cpu().numpy()

    def fingerprint(self) -> str:
        """SHA-256 over the pooling and the module's parameter names, dtypes, shapes and bytes.

        Hashing the tensors (not files) works for models built in memory and ignores irrelevant file
        differences such as safetensors metadata. Computed afresh on each call: training changes the
        weights. (The value is what ``e5kit.evaluation.cache.weights_hash`` always gave, so existing
        caches and results stay valid.)
        """
        digest = hashlib.sha256(f"pooling={self.pooling}".encode())
        for name, tensor in self.module.state_dict().items():
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()


def weights_fingerprint(root: Path) -> str:
    """SHA-256 of the model in ``root`` as e5kit embeds with it: its pooling, and its torch weights'
    names, shapes and float32 values.

    Equal for two folders exactly when they embed alike, however the weights are stored: an export
    (e5kit re-saves its source's weights, in float32, without buffers some checkpoints carry) compares
    equal to its source, a model with other weights or pooling does not. It is ``TorchBackend.fingerprint``
    of the model as ``load_transformer`` loads it (float32, no pooler, only persistent tensors), so it
    equals a float32 torch Encoder's own fingerprint. Loads the weights (seconds).

    Raises:
        model_format.ModelDirectoryError: ``root`` is not a model directory (the file is named).
    """
    spec = model_format.read_model_dir(root)
    return TorchBackend(load_transformer(spec.transformer_dir), spec.pooling, device="cpu").fingerprint()


def load_transformer(folder: Path) -> PreTrainedModel:
    """``AutoModel.from_pretrained(folder)`` without the pooler head, which e5kit never uses.

    Encoders that have one (BERT, RoBERTa, XLM-R, ...) are built with it and then lose it: the module
    e5kit trains and hashes has no pooler, so a checkpoint saved without pooler weights (most
    sentence-transformers models) gives the same weights, and embedding-cache key, on every load, and
    transformers' load report about the pooler is not printed. The checkpoint's own pooler weights,
    when it has them, stay beside the module (``POOLER_ATTRIBUTE``) for ``saved_state_dict``: loaders
    that build the pooler (``SentenceTransformer(path)``, ``AutoModel``) then find it in what e5kit
    saves instead of initialising it at random and reporting it missing. Any other missing,
    unexpected or resized weight is still reported, as one warning of the ``e5kit.encoder`` logger.
    """
    import inspect

    from transformers import AutoConfig, AutoModel
    from transformers.models.auto.modeling_auto import MODEL_MAPPING
    from transformers.utils import logging as transformers_logging

    config = AutoConfig.from_pretrained(folder)
    model_class = MODEL_MAPPING[type(config)] if type(config) in MODEL_MAPPING else None
    has_pooler = bool(model_class) and "add_pooling_layer" in inspect.signature(model_class.__init__).parameters
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # its load report would name the pooler weights a checkpoint lacks
    try:
        # A checkpoint without pooler weights gets a random pooler, which is then dropped; its draws must
        # not shift the seeded stream that training's dropout and sampling continue from.
        with torch.random.fork_rng(devices=[]):
            model, info = AutoModel.from_pretrained(folder, config=config, output_loading_info=True)
    finally:
        transformers_logging.set_verbosity(verbosity)
    if has_pooler:
        if not any(str(key).startswith("pooler.") for key in info.get("missing_keys", ())):
            setattr(model, POOLER_ATTRIBUTE, {f"pooler.{name}": tensor.detach() for name, tensor in model.pooler.state_dict().items()})
        model.pooler = None
    problems = {
        kind: sorted(key for key in info.get(kind, ()) if not str(key).startswith("pooler."))
        for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")
    }
    if any(problems.values()):
        logger.warning(
            "%s: weights that do not match %s: %s", folder, type(model).__name__,
            "; ".join(f"{kind.replace('_', ' ')}: {', '.join(map(str, keys))}" for kind, keys in problems.items() if keys),
        )
    return model


def saved_state_dict(module: PreTrainedModel) -> dict[str, torch.Tensor]:
    """The weights ``Encoder.save`` writes: the module's, plus the pooler weights ``load_transformer``
    set aside (in the module's dtype), so the saved checkpoint has every weight its class builds."""
    state = module.state_dict()
    dtype = next(iter(state.values())).dtype
    state.update({name: tensor.to(dtype) for name, tensor in getattr(module, POOLER_ATTRIBUTE, {}).items()})
    return state
