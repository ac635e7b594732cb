"""`e5kit export openvino` (IR, the recorded precision and how it was chosen, the printed fidelity check)
and `--backend openvino` in encode, index/search, eval and serve. Skipped without the openvino package."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from e5kit.cli import app
from e5kit.encoder import Encoder, precision
from e5kit.encoder.openvino_backend import INT8_FULL_XML_FILE, INT8_XML_FILE, MANIFEST, OPENVINO_FOLDER, XML_FILE
from e5kit.encoder.precision import has_bf16

pytest.importorskip("openvino")

runner = CliRunner()
TEXTS = ["how do cells divide", "the cat sat on the mat", "python reads and writes files"]


@pytest.fixture(scope="module")
def exported(tiny_bert_dir, tmp_path_factory):
    """The tiny model exported through the CLI with the default precision (auto)."""
    out = tmp_path_factory.mktemp("tiny-openvino-cli") / "model"
    result = runner.invoke(app, ["export", "openvino", "--model", str(tiny_bert_dir), "--out", str(out), "--check-texts", "16"])
    return out, result


def test_export_writes_the_ir_and_records_the_choice(exported):
    out, result = exported
    assert result.exit_code == 0, result.output
    # Then the fp32 and int8 IRs sit where sentence-transformers' OpenVINO backend looks, beside a model folder
    for name in (XML_FILE, INT8_XML_FILE):
        assert (out / OPENVINO_FOLDER / name).is_file() and (out / OPENVINO_FOLDER / name).with_suffix(".bin").is_file()
    assert (out / "config.json").is_file() and (out / "modules.json").is_file()
    # And the manifest lists both, loads int8 by default, and names its calibration
    manifest = json.loads((out / OPENVINO_FOLDER / MANIFEST).read_text())
    assert manifest["files"] == {XML_FILE: "fp32", INT8_XML_FILE: "int8"} and manifest["default"] == INT8_XML_FILE
    assert manifest["int8"]["calibration"]["source"].startswith("built-in") and manifest["int8"]["batch_independent"] is True
    # And it records the precision auto chose, why, and on which CPU
    choice = manifest["precision_choice"]
    assert manifest["precision"] == choice["precision"] in ("float32", "bfloat16")
    assert choice["reason"] and choice["cpu"].startswith("cpu ") and manifest["normalized"] is False
    # (timings exist exactly where the CPU has bf16 to time)
    assert bool(choice["seconds"]) == has_bf16()


def test_export_prints_the_fidelity_of_each_precision(exported):
    _, result = exported
    # Then the check prints each IR's cosine to torch at float32 (and bf16 where the CPU has it), and alone vs batched
    assert "openvino_model.xml (float32): cosine to torch fp32 over 16 texts: mean 1.00000" in result.output
    assert f"{INT8_XML_FILE} (float32): cosine to torch fp32 over 16 texts: mean " in result.output
    assert result.output.count("cosine alone vs in one batch over 16 texts of spread lengths: min ") == (4 if has_bf16() else 2)
    assert "runs at " in result.output and "backend='openvino'" in result.output


@pytest.fixture
def beir_test_split(beir_dir):
    """The shared tiny BEIR folder with its qrels also as the test split, which the export's --eval-data reads."""
    (beir_dir / "qrels" / "test.tsv").write_text((beir_dir / "qrels" / "train.tsv").read_text(encoding="utf-8"), encoding="utf-8")
    return beir_dir


def test_full_int8_adds_an_every_matmul_ir_held_to_the_same_bounds(tiny_bert_dir, tmp_path, beir_test_split):
    out = tmp_path / "model"
    # When exported with --full-int8
    result = runner.invoke(app, ["export", "openvino", "--model", str(tiny_bert_dir), "--out", str(out), "--check-texts", "16", "--dtype", "float32", "--full-int8"])
    assert result.exit_code == 0, result.output
    # Then the manifest lists a third IR, int8, not the default, and says what it leaves in float (nothing)
    manifest = json.loads((out / OPENVINO_FOLDER / MANIFEST).read_text())
    assert manifest["files"] == {XML_FILE: "fp32", INT8_XML_FILE: "int8", INT8_FULL_XML_FILE: "int8"} and manifest["default"] == INT8_XML_FILE
    assert manifest["int8_full"]["kept_float"].startswith("none") and manifest["int8"]["kept_float"].startswith("the feed-forward")
    # And it went through the fidelity check, and loads by file name as an int8 model, batch independent
    assert f"{INT8_FULL_XML_FILE} (float32): cosine to torch fp32 over 16 texts: mean " in result.output
    full = Encoder.load(out, backend="openvino", file_name=INT8_FULL_XML_FILE)
    assert full.dtype == "int8"
    from e5kit.encoder.precision import MIN_BATCH_COSINE, mean_cosine

    mixed = ["cells", "how do cells divide and grow in the body of an animal over many days", "a cat"]
    alone = np.concatenate([full.encode([text], role="passage") for text in mixed])
    assert mean_cosine(alone, full.encode(mixed, role="passage", batch_size=3))[1] >= MIN_BATCH_COSINE
    # And --eval-data compares every int8 IR's nDCG@10 with torch fp32's, not only the default's
    evaluated = runner.invoke(app, ["export", "openvino", "--model", str(tiny_bert_dir), "--out", str(tmp_path / "e"), "--check-texts", "16",
                                    "--dtype", "float32", "--full-int8", "--eval-data", str(beir_test_split)])
    for name in (INT8_XML_FILE, INT8_FULL_XML_FILE):
        assert "nDCG@10 torch fp32 " in evaluated.output and f"exported (openvino {name}, int8) " in evaluated.output, evaluated.output
    # And without int8 it is refused in one line
    refused = runner.invoke(app, ["export", "openvino", "--model", str(tiny_bert_dir), "--out", str(tmp_path / "x"), "--quantize", "none", "--full-int8"])
    assert refused.exit_code == 2 and "--full-int8 needs --quantize int8" in refused.output


def _largest_int8_weight(xml) -> int:
    """The largest |weight| of the IR's int8 MatMul weights (embedding tables, also int8, feed Gather and cannot saturate)."""
    import openvino

    def feeds_matmul(op, hops=4) -> bool:
        consumers = [target.get_node() for output in op.outputs() for target in output.get_target_inputs()]
        return any(node.get_type_name() == "MatMul" or (hops and feeds_matmul(node, hops - 1)) for node in consumers)

    constants = [op for op in openvino.Core().read_model(str(xml)).get_ops()
                 if op.get_type_name() == "Constant" and op.get_element_type() == openvino.Type.i8 and feeds_matmul(op)]
    assert constants, f"{xml}: no int8 MatMul weights"
    return max(int(np.abs(op.get_data().astype(np.int32)).max()) for op in constants)


@pytest.fixture(scope="module")
def weight_ranges(tiny_bert_dir, tmp_path_factory):
    """The openvino/ folders of the tiny model exported with 7-bit (--reduce-range) and 8-bit int8 weights, both int8 IRs."""
    root = tmp_path_factory.mktemp("tiny-openvino-ranges")
    for flag in ("--reduce-range", "--no-reduce-range"):
        result = runner.invoke(app, ["export", "openvino", "--model", str(tiny_bert_dir), "--out", str(root / flag), "--check-texts", "8",
                                     "--dtype", "float32", "--full-int8", flag])
        assert result.exit_code == 0, result.output
    return root / "--reduce-range" / OPENVINO_FOLDER, root / "--no-reduce-range" / OPENVINO_FOLDER


def test_int8_weights_keep_to_7_bits_when_asked_in_every_int8_ir(weight_ranges, monkeypatch, caplog):
    # Given the model exported with --reduce-range (as on a CPU without VNNI) and with --no-reduce-range
    seven, eight = weight_ranges
    # Then both int8 IRs of the first keep every weight within 7 bits, and the manifest records it for each
    for name, section in ((INT8_XML_FILE, "int8"), (INT8_FULL_XML_FILE, "int8_full")):
        assert _largest_int8_weight(seven / name) <= 64 < _largest_int8_weight(eight / name)
        assert json.loads((seven / MANIFEST).read_text())[section]["reduce_range"] is True
        assert json.loads((eight / MANIFEST).read_text())[section]["reduce_range"] is False
    # And loading the 8-bit ones on an AVX2-only CPU warns, naming the IR; the 7-bit ones load quietly
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    with caplog.at_level("WARNING", logger="e5kit"):
        Encoder.load(seven.parent, backend="openvino", file_name=INT8_FULL_XML_FILE)
        assert not caplog.records
        Encoder.load(eight.parent, backend="openvino", file_name=INT8_FULL_XML_FILE)
    assert len(caplog.records) == 1 and INT8_FULL_XML_FILE in caplog.text and "--reduce-range" in caplog.text


EMBED_IRS = """
import sys, numpy as np
from e5kit.encoder import Encoder
vectors = [Encoder.load(folder, backend="openvino", file_name=name, dtype="float32").encode(sys.argv[2:], role="passage")
           for folder in ("SEVEN", "EIGHT") for name in ("INT8", "FULL")]
np.save(sys.argv[1], np.stack(vectors))
"""


@pytest.mark.skipif(not precision.has_int8_dot(), reason="this CPU has no VNNI: capping OpenVINO to AVX2 changes nothing here")
def test_7_bit_weights_give_the_same_vectors_on_avx2_kernels(weight_ranges, tmp_path):
    import os
    import subprocess
    import sys

    seven, eight = weight_ranges
    code = (EMBED_IRS.replace("SEVEN", str(seven.parent)).replace("EIGHT", str(eight.parent))
            .replace("INT8", INT8_XML_FILE).replace("FULL", INT8_FULL_XML_FILE))
    texts = [f"text {i} about cells, cats and files " * (1 + i % 5) for i in range(32)]
    # When both exports embed the same texts on this CPU's int8 kernels (VNNI) and with oneDNN capped to
    # AVX2's, whose uint8 x int8 pair sums saturate in int16 (ONEDNN_MAX_CPU_ISA, read by OpenVINO's CPU plugin)
    runs = {}
    for isa in ("", "AVX2"):
        env = {**os.environ, "ONEDNN_MAX_CPU_ISA": isa} if isa else {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
        subprocess.run([sys.executable, "-c", code, str(tmp_path / f"{isa or 'native'}.npy"), *texts], env=env, check=True)
        runs[isa] = np.load(tmp_path / f"{isa or 'native'}.npy")
    gap = np.abs(runs[""] - runs["AVX2"]).max(axis=(1, 2))  # per IR: 7-bit int8, 7-bit full, 8-bit int8, 8-bit full
    # Then the 7-bit IRs give the same vectors on both (float rounding only), the 8-bit ones do not (saturation)
    assert gap[:2].max() < 1e-4 < gap[2:].min(), gap


def test_a_worker_loads_the_ir_and_precision_this_process_runs(exported):
    from e5kit.retrieval.engines import EncoderSpec

    out, result = exported
    assert result.exit_code == 0, result.output
    # Given the export loaded on its fp32 IR at float32 (its default is the int8 IR at the recorded precision)
    encoder = Encoder.load(out, backend="openvino", file_name=XML_FILE, dtype="float32")
    # When a worker loads the spec made of it, Then it runs the same IR at the same precision
    spec = EncoderSpec.of(encoder, str(out))
    assert (spec.backend, spec.file_name, spec.dtype) == ("openvino", XML_FILE, "float32")
    worker = spec.load()
    assert worker.backend.file == encoder.backend.file and worker.backend.precision == "float32"
    np.testing.assert_array_equal(worker.encode(TEXTS, role="passage"), encoder.encode(TEXTS, role="passage"))


def test_threads_are_not_pinned_to_cores(exported):
    out, _ = exported
    # Given the export loaded with two threads, Then OpenVINO leaves their placement to the OS scheduler
    # (pinned threads wait on a core another process holds; see openvino_backend.compile_model)
    encoder = Encoder.load(out, backend="openvino", threads=2)
    assert encoder.backend.compiled.get_property("ENABLE_CPU_PINNING") is False


def test_auto_on_a_cpu_without_bf16_records_float32_untimed(tiny_bert_dir, tmp_path, monkeypatch):
    from e5kit.export.openvino import export_openvino

    # Given a CPU without AVX512_BF16 or AMX (the flag reader monkeypatched)
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    # When exported with auto, Then float32 is recorded, with no timings and the reason
    result = export_openvino(Encoder.load(tiny_bert_dir, device="cpu"), tmp_path / "m", quantize="none")
    manifest = json.loads((tmp_path / "m" / OPENVINO_FOLDER / MANIFEST).read_text())
    assert result.choice.precision == manifest["precision"] == "float32"
    assert manifest["precision_choice"]["seconds"] == {} and "avx512_bf16" in manifest["precision_choice"]["reason"]


def test_an_asked_precision_is_recorded_as_asked(tiny_bert_dir, tmp_path):
    result = runner.invoke(app, ["export", "openvino", "--model", str(tiny_bert_dir), "--out", str(tmp_path / "m"), "--dtype", "float32",
                                 "--quantize", "none", "--check-texts", "8"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "m" / OPENVINO_FOLDER / MANIFEST).read_text())
    assert manifest["precision_choice"]["reason"] == "asked for at export" and manifest["precision"] == "float32"
    assert manifest["files"] == {XML_FILE: "fp32"} and not (tmp_path / "m" / OPENVINO_FOLDER / INT8_XML_FILE).exists()


def test_int8_ir_is_close_to_torch_and_batch_independent(exported, tiny_encoder, texts):
    out, _ = exported
    from e5kit.encoder.precision import mean_cosine
    from e5kit.export.check import MIN_BATCH_COSINE

    # Given the int8 IR (the default) and the fp32 one, each named by file_name
    int8 = Encoder.load(out, backend="openvino", dtype="float32")
    fp32 = Encoder.load(out, backend="openvino", file_name=XML_FILE, dtype="float32")
    assert int8.dtype == "int8" and int8.backend.file.name == INT8_XML_FILE and fp32.dtype == "float32"
    # When texts of very different lengths are embedded alone and in one forward pass
    from e5kit.export.check import one_batch

    mixed = [texts[0], texts[-1], texts[3], " ".join(texts[4:7]), "cats"]
    alone = np.concatenate([int8.encode([text], role="passage") for text in mixed])
    batched = one_batch(int8, mixed, "passage")
    # Then a text's int8 vector does not depend on its batch, and stays near torch's (the tiny model's bound)
    assert mean_cosine(alone, batched)[1] >= MIN_BATCH_COSINE
    assert mean_cosine(tiny_encoder.encode(mixed, role="passage"), batched)[0] >= 0.99
    # And the fp32 IR is torch's
    assert mean_cosine(tiny_encoder.encode(mixed, role="passage"), fp32.encode(mixed, role="passage"))[1] >= 0.9999
    # And an IR the export does not list is refused by name
    from e5kit.encoder.model_format import ModelDirectoryError

    with pytest.raises(ModelDirectoryError, match="lists no IR 'other.xml'"):
        Encoder.load(out, backend="openvino", file_name="other.xml")


def test_batches_are_padded_to_a_multiple_of_16_tokens_without_changing_vectors(exported):
    out, _ = exported
    # Given the fp32 IR as loaded (sequence_multiple 16), and the same IR padding to the longest text only
    aligned = Encoder.load(out, backend="openvino", file_name=XML_FILE, dtype="float32")
    plain = Encoder.load(out, backend="openvino", file_name=XML_FILE, dtype="float32")
    plain.backend.sequence_multiple = 1
    widths = []
    forward = aligned.backend.forward
    aligned.backend.forward = lambda input_ids, attention_mask, normalize: widths.append(input_ids.shape[1]) or forward(input_ids, attention_mask, normalize=normalize)
    # When a batch of 58 tokens and a text of 5 are embedded
    long_text = next(" ".join(["cells"] * n) for n in range(1, 64) if len(aligned.token_ids(aligned.prepare([" ".join(["cells"] * n)], "passage"))[0]) == 58)
    batch = [long_text, "cats"]
    vectors = aligned.encode(batch, role="passage", batch_size=2)
    short = aligned.encode(["cats"], role="passage")
    # Then the 58 tokens are padded to 64, and the short text alone to 16 (the batch's length blocks, so
    # that alone and in a batch it takes the same kernel path)
    assert len(aligned.token_ids(aligned.prepare(["cats"], "passage"))[0]) < 16
    assert widths == [64, 16]
    # And the vectors are those of padding to the longest text
    np.testing.assert_allclose(vectors, plain.encode(batch, role="passage", batch_size=2), atol=1e-5)
    np.testing.assert_allclose(short, plain.encode(["cats"], role="passage"), atol=1e-5)


def test_encode_index_search_and_serve_take_backend_openvino(exported, tiny_bert_dir, tmp_path):
    out, _ = exported
    expected = Encoder.load(tiny_bert_dir, device="cpu").encode(TEXTS, role="passage")
    # When `e5kit encode --backend openvino` embeds a file, Then its vectors are torch's (bf16 within 0.999)
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["encode", "-m", str(out), "--backend", "openvino", "-r", "passage", "-i", str(texts), "-o", str(tmp_path / "v.npy")])
    assert result.exit_code == 0, result.output
    assert (np.load(tmp_path / "v.npy") * expected).sum(axis=1).min() >= 0.999
    # When an index is built and searched on the openvino backend
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": text}) + "\n" for i, text in enumerate(TEXTS)))
    built = runner.invoke(app, ["index", "build", "--model", str(out), "--backend", "openvino", "--corpus", str(corpus), "--out", str(tmp_path / "idx")])
    assert built.exit_code == 0, built.output
    found = runner.invoke(app, ["search", str(tmp_path / "idx"), TEXTS[1], "-k", "3", "--json"])
    # Then the index remembers the backend, and the search (on the same backend) ranks every document
    assert found.exit_code == 0, found.output
    assert json.loads((tmp_path / "idx" / "index.json").read_text())["backend"] == "openvino"
    hits = json.loads(found.stdout.splitlines()[0])["hits"]
    assert [hit["doc_id"] for hit in hits][:1] == ["d1"] and len(hits) == 3  # the query is d1's own text
    # And a server given only the index serves its model on the backend the index was built with
    from fastapi.testclient import TestClient

    from e5kit.cli.serve import build_app
    from e5kit.serving.config import ServeConfig

    with TestClient(build_app(ServeConfig(index=tmp_path / "idx"))) as client:
        assert client.get("/health").json()["backend"] == "openvino"


def test_eval_takes_backend_openvino(exported, tmp_path):
    out, _ = exported
    # Given a tiny BEIR folder
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": text}) + "\n" for i, text in enumerate(TEXTS)))
    (beir / "queries.jsonl").write_text(json.dumps({"_id": "q0", "text": "cells"}) + "\n" + json.dumps({"_id": "q1", "text": "a cat"}) + "\n")
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\nq1\td1\t1\n")
    # When `e5kit eval retrieval --backend openvino` runs on the export
    result = runner.invoke(app, ["eval", "retrieval", "--model", str(out), "--backend", "openvino", "--data", str(beir),
                                 "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")])
    # Then it scores and records the backend
    assert result.exit_code == 0, result.output
    [scores] = [json.loads(path.read_text()) for path in (tmp_path / "results").glob("*.json")]
    precision = Encoder.load(out, backend="openvino").backend.precision  # the export's recorded precision, as eval ran it
    assert scores["details"]["backend"] == {"name": "openvino", "file": INT8_XML_FILE, "precision": precision} and scores["metrics"]["ndcg_at_10"] > 0
