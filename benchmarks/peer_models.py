"""e5kit's peers on one model, loaded offline from local files: the engines e5kit's benchmarks compare against.

Runs in the benchmarks' separate peer environment (sentence-transformers with its ``onnx`` and
``openvino`` extras, optimum-intel, nncf, fastembed; see ``encode_backends.py``), whose pins differ
from e5kit's, so this module never imports e5kit. Every export is made from ``model_dir`` (a local
sentence-transformers folder), kept under ``cache_dir`` and reused by later loads; nothing is
downloaded (``HF_HUB_OFFLINE`` is set when unset).

Interface:

    load_st_peer(engine, model_dir, cache_dir, calibration, threads) -> SentenceTransformer
        engine in ST_ENGINES:
          "torch-fp32"             sentence-transformers on torch, fp32 (the reference embeddings)
          "onnx-int8-avx2"         ST's ONNX backend, ``export_dynamic_quantized_onnx_model(.., "avx2")``
          "onnx-int8-avx512_vnni"  the same with the "avx512_vnni" config
          "openvino-int8-static"   ST's OpenVINO backend, NNCF static int8 through optimum-intel's
                                   OVQuantizer, calibrated on ``calibration`` (the texts given, one per
                                   sample: ST's own ``export_static_quantized_openvino_model`` would
                                   download GLUE/SST-2 for it)
        calibration: texts for the static int8 calibration (other engines ignore them).
        threads: torch threads, ONNX Runtime intra-op threads, OpenVINO INFERENCE_NUM_THREADS.

    load_fastembed(model_dir, cache_dir, threads) -> fastembed.TextEmbedding
        fastembed's own description of sentence-transformers/all-MiniLM-L6-v2 (mean pooling,
        normalised) over ``specific_model_path``: the fp32 ONNX graph sentence-transformers exported
        from ``model_dir`` plus its tokenizer files, instead of a download of Qdrant's copy of it;
        truncated at the model's max_seq_length as sentence-transformers does.

    load_peer(engine, model_dir, cache_dir, calibration, threads) -> (encode, description)
        Any of PEER_ENGINES (ST_ENGINES and "fastembed") as ``encode(texts, batch_size) -> (n, dim)
        float32 ndarray`` and one line saying what was loaded; what ``bench_worker.py`` drives.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every file is local: fail at once rather than retry a download

ST_ENGINES = ("torch-fp32", "onnx-int8-avx2", "onnx-int8-avx512_vnni", "openvino-int8-static")
PEER_ENGINES = (*ST_ENGINES, "fastembed")
#: The model fastembed knows under this name pools by the mean and normalises, as the ST folder does.
FASTEMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
#: sentence-transformers' file suffix for its static OpenVINO int8 export (its default).
OV_INT8_SUFFIX = "qint8_quantized"


def _staged(target: Path, build: Callable[[Path], None]) -> Path:
    """``target``, built once by ``build(temporary folder)`` and moved into place whole (a killed build leaves no half folder)."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(staging)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _st_folder(model_dir: str, cache_dir: Path) -> Path:
    """A writable copy of the model folder: sentence-transformers writes its exports into the model's folder."""
    return _staged(cache_dir / "st-model", lambda folder: shutil.copytree(model_dir, folder, dirs_exist_ok=True))


#: sentence-transformers' fp32 graph files per backend, as its ``save_pretrained`` names them; the last is moved in last.
ST_GRAPHS = {"onnx": ("onnx/model.onnx",), "openvino": ("openvino/openvino_model.bin", "openvino/openvino_model.xml")}


def _st_graph(folder: Path, backend: str) -> None:
    """sentence-transformers' own fp32 export of ``folder`` to ``backend`` (through optimum), made once."""
    files = ST_GRAPHS[backend]
    if (folder / files[-1]).is_file():
        return
    from sentence_transformers import SentenceTransformer

    with tempfile.TemporaryDirectory(prefix=f".{backend}-", dir=folder.parent) as staging:
        SentenceTransformer(str(folder), backend=backend, device="cpu", model_kwargs={"export": True}).save_pretrained(staging)
        (folder / backend).mkdir(exist_ok=True)
        for name in files:
            os.replace(Path(staging) / name, folder / name)


def _onnx_int8(folder: Path, config: str) -> str:
    """ST's dynamic int8 ONNX graph for quantisation ``config`` (made once), as a file name relative to ``folder``."""
    found = sorted((folder / "onnx").glob(f"model_q*8_{config}.onnx"))
    if not found:
        from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

        _st_graph(folder, "onnx")
        fp32 = SentenceTransformer(str(folder), backend="onnx", device="cpu", model_kwargs={"file_name": "onnx/model.onnx"})
        export_dynamic_quantized_onnx_model(fp32, config, str(folder))
        found = sorted((folder / "onnx").glob(f"model_q*8_{config}.onnx"))
    return found[0].relative_to(folder).as_posix()


def _openvino_int8_static(folder: Path, calibration: Sequence[str], threads: int) -> str:
    """NNCF static int8 IR calibrated on ``calibration`` (made once), as a file name relative to ``folder``."""
    target = folder / "openvino" / f"openvino_model_{OV_INT8_SUFFIX}.xml"
    if target.is_file():
        return target.relative_to(folder).as_posix()
    if not calibration:
        raise ValueError("openvino-int8-static needs calibration texts")
    import nncf
    from optimum.intel.openvino import OVConfig, OVQuantizationConfig, OVQuantizer
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.backend.utils import save_or_push_to_hub_model

    _st_graph(folder, "openvino")
    fp32 = SentenceTransformer(
        str(folder),
        backend="openvino",
        device="cpu",
        model_kwargs={"file_name": "openvino/openvino_model.xml", "ov_config": {"INFERENCE_NUM_THREADS": threads}},
    )
    # One sample per text, unpadded and truncated as encode() does, in the IR's inputs (ids, mask, token types).
    samples = [dict(fp32.tokenizer(text, truncation=True, max_length=fp32.max_seq_length, return_tensors="np")) for text in calibration]
    config = OVQuantizationConfig(num_samples=len(samples))
    quantizer = OVQuantizer.from_pretrained(fp32.transformers_model)
    save_or_push_to_hub_model(
        export_function=lambda save_dir: quantizer.quantize(
            nncf.Dataset(samples), save_directory=save_dir, ov_config=OVConfig(quantization_config=config)
        ),
        export_function_name="peer_models.openvino_int8_static",
        config=config,
        model_name_or_path=str(folder),
        file_suffix=OV_INT8_SUFFIX,
        backend="openvino",
        model=fp32,
    )
    return target.relative_to(folder).as_posix()


def load_st_peer(engine: str, model_dir: str, cache_dir: Path, calibration: list[str], threads: int):
    """sentence-transformers on ``model_dir`` as ``engine`` (one of ST_ENGINES), on ``threads`` CPU threads; see the module docstring."""
    if engine not in ST_ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ST_ENGINES)}, got {engine!r}")
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    if engine == "torch-fp32":
        return SentenceTransformer(str(model_dir), device="cpu")
    folder = _st_folder(model_dir, Path(cache_dir))
    if engine.startswith("onnx-int8-"):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        file_name = _onnx_int8(folder, engine.removeprefix("onnx-int8-"))
        return SentenceTransformer(
            str(folder),
            backend="onnx",
            device="cpu",
            model_kwargs={"file_name": file_name, "session_options": options, "provider": "CPUExecutionProvider"},
        )
    file_name = _openvino_int8_static(folder, calibration, threads)
    return SentenceTransformer(
        str(folder),
        backend="openvino",
        device="cpu",
        model_kwargs={"file_name": file_name, "ov_config": {"INFERENCE_NUM_THREADS": threads}},
    )


def load_fastembed(model_dir: str, cache_dir: Path, threads: int):
    """fastembed's TextEmbedding for all-MiniLM-L6-v2 on ST's fp32 ONNX export of ``model_dir``; see the module docstring."""
    from fastembed import TextEmbedding

    source = _st_folder(model_dir, Path(cache_dir))
    _st_graph(source, "onnx")

    def build(folder: Path) -> None:  # fastembed's description names model.onnx at the top of the folder
        shutil.copy2(source / "onnx" / "model.onnx", folder / "model.onnx")
        for name in ("tokenizer.json", "special_tokens_map.json", "vocab.txt", "config.json"):
            if (source / name).is_file():
                shutil.copy2(source / name, folder / name)
        # fastembed truncates at the smaller of tokenizer_config's max_length and model_max_length: the Hub
        # folder says 512 (model_max_length) or, once saved by sentence-transformers, 128 (max_length, from
        # its tokenizer.json). Both are set to the model's max_seq_length, where sentence-transformers (and
        # fastembed's own description of this model) truncate: 256.
        sbert = json.loads((source / "sentence_bert_config.json").read_text(encoding="utf-8"))
        config = json.loads((source / "tokenizer_config.json").read_text(encoding="utf-8"))
        config["max_length"] = config["model_max_length"] = sbert.get("max_seq_length", config["model_max_length"])
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")

    folder = _staged(Path(cache_dir) / "fastembed-model", build)
    return TextEmbedding(
        FASTEMBED_MODEL, threads=threads, providers=["CPUExecutionProvider"], specific_model_path=str(folder), local_files_only=True
    )


def load_peer(engine: str, model_dir: str, cache_dir: Path, calibration: list[str], threads: int):
    """``engine`` (one of PEER_ENGINES) as (``encode(texts, batch_size) -> ndarray``, description)."""
    import numpy as np

    if engine == "fastembed":
        import fastembed

        model = load_fastembed(model_dir, cache_dir, threads)
        return (
            lambda texts, batch_size: np.stack(list(model.embed(texts, batch_size=batch_size))).astype(np.float32),
            f"fastembed {fastembed.__version__}, {FASTEMBED_MODEL} on ST's fp32 ONNX export",
        )
    import sentence_transformers

    model = load_st_peer(engine, model_dir, cache_dir, calibration, threads)
    return (
        lambda texts, batch_size: model.encode(texts, batch_size=batch_size, convert_to_numpy=True),
        f"sentence-transformers {sentence_transformers.__version__} {engine}, max_seq_length {model.max_seq_length}",
    )
