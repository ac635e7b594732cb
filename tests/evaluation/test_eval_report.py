"""``e5kit eval report``: one row per model as measured (backend, precision, weights), none dropped unsaid."""

from __future__ import annotations

import matplotlib
import pytest
from typer.testing import CliRunner

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from e5kit.cli import app
from e5kit.evaluation.report import chart_figure, markdown_table, write_report
from e5kit.evaluation.results import EvalResult, read_results, write_result

TORCH_HASH = "a1" * 32
OPENVINO_HASH = "b2" * 32


def result(score: float, *, model: str = "para-ov", model_path: str = "../para-ov", weights_hash: str | None = TORCH_HASH,
           backend: str | None = None, dtype: str | None = "float32", split: str = "test",
           created_at: str = "2025-06-01T10:00:00+00:00") -> EvalResult:
    """A retrieval result on data set ``mini`` as ``e5kit eval retrieval`` records it (``details.backend`` only off torch)."""
    details = {"backend": {"name": backend, "file": f"{backend}_model.xml"}} if backend else {}
    return EvalResult(
        model=model, model_path=model_path, weights_hash=weights_hash, task="retrieval", dataset="mini", data_path="../mini",
        split=split, metrics={"ndcg_at_10": score}, main_metric="ndcg_at_10", prefix_policy={}, max_length=64, dtype=dtype,
        e5kit_version="0", wall_time_s=1.0, created_at=created_at, details=details,
    )


@pytest.fixture
def close_figures():
    yield
    plt.close("all")


def legend_of(results: list[EvalResult]) -> list[str]:
    return [text.get_text() for text in chart_figure(results).legends[0].get_texts()]


def test_one_export_under_two_backends_gets_a_row_each(tmp_path, close_figures):
    # Given one export evaluated with torch and with openvino into one results folder (two files, as eval writes)
    results = tmp_path / "res-p"
    write_result(results, result(0.836))
    write_result(results, result(0.826, weights_hash=OPENVINO_HASH, backend="openvino"))
    # When the report is rendered
    outcome = CliRunner().invoke(app, ["eval", "report", str(results)])
    # Then both scores are rows, told apart by their backend only, in the printed table and report.md
    assert outcome.exit_code == 0, outcome.output
    table = (results / "report.md").read_text()
    for text in (outcome.output, table):
        assert "| para-ov (torch) | 83.6 |" in text and "| para-ov (openvino) | 82.6 |" in text
    assert "Not shown" not in table
    # And the chart has a bar for each
    assert sorted(legend_of(read_results(results))) == ["para-ov (openvino)", "para-ov (torch)"]


def test_two_models_in_folders_of_one_name_are_told_apart_by_their_weights(tmp_path, close_figures):
    # Given two different torch models, both in a folder named final/
    first = result(0.70, model="final", model_path="../run-a/final", weights_hash="1234abcd" + "0" * 56)
    second = result(0.75, model="final", model_path="../run-b/final", weights_hash="5678ef01" + "0" * 56)
    # When they are tabulated and drawn
    table = markdown_table([first, second])
    # Then each is a row labelled by its short weights hash (backend and precision are alike)
    assert "| final (1234abcd) | 70.0 |" in table and "| final (5678ef01) | 75.0 |" in table
    assert legend_of([first, second]) == ["final (1234abcd)", "final (5678ef01)"]


def test_precision_alone_labels_two_exports_of_one_name(tmp_path):
    # Given one OpenVINO export evaluated at float32 and at bfloat16 (its hash includes the precision)
    full = result(0.80, weights_hash=OPENVINO_HASH, backend="openvino")
    half = result(0.79, weights_hash="c3" * 32, backend="openvino", dtype="bfloat16")
    # When they are tabulated; Then the precision, not the backend they share, tells the rows apart
    table = markdown_table([full, half])
    assert "| para-ov (float32) | 80.0 |" in table and "| para-ov (bfloat16) | 79.0 |" in table


def test_a_rerun_shows_the_newest_and_names_the_file_left_out(tmp_path):
    # Given the same model on the same data twice: the file eval wrote and an older copy of it under another name
    results = tmp_path / "results"
    write_result(results, result(0.836, created_at="2025-06-02T10:00:00+00:00"))
    (results / "old-copy.json").write_text(result(0.801).model_dump_json(), encoding="utf-8")
    # When the report is written
    text, markdown_path, _ = write_report(results)
    # Then the model keeps its plain name and the newer score, and a note names both files, which is shown and why
    assert "| para-ov | 83.6 |" in text and "80.1 |" not in text
    kept = f"para-ov-{TORCH_HASH[:8]}__retrieval__mini__test.json"
    assert (f"- para-ov on mini/test (retrieval): 2 results of the same model; shown (the newest): {kept} "
            f"(83.6, created 2025-06-02T10:00:00+00:00); not shown: old-copy.json (80.1, created 2025-06-01T10:00:00+00:00)") in text
    assert markdown_path.read_text() == text


def test_one_data_set_scored_on_two_splits_gets_a_column_each():
    # Given one model scored on the test and the dev split of one data set
    test, dev = result(0.80), result(0.60, split="dev")
    # When they are tabulated; Then each split is a column of the model's one row
    table = markdown_table([test, dev])
    assert table.splitlines()[0] == "| model | mini/dev (retrieval, ndcg_at_10) | mini/test (retrieval, ndcg_at_10) |"
    assert "| para-ov | 60.0 | 80.0 |" in table


def test_unique_names_stay_plain(tmp_path):
    # Given BM25 and one dense model
    bm25 = result(0.65, model="bm25", model_path="bm25", weights_hash=None, dtype=None)
    # When they are tabulated; Then the rows are the plain names, with no note
    table = markdown_table([bm25, result(0.83)])
    assert table == (
        "| model | mini (retrieval, ndcg_at_10) |\n|---|---|\n| bm25 | 65.0 |\n| para-ov | 83.0 |\n"
    )


def test_an_int8_ir_run_at_two_inference_precisions_is_labelled_by_them(close_figures):
    # Given one OpenVINO int8 IR evaluated at float32 and at bfloat16 inference (both results say dtype int8)
    runs = []
    for precision, score, digest in (("float32", 0.826, OPENVINO_HASH), ("bfloat16", 0.827, "c3" * 32)):
        run = result(score, weights_hash=digest, backend="openvino", dtype="int8")
        run.details["backend"]["precision"] = precision
        runs.append(run)
    # When the table is rendered, Then the rows name the precision each ran at
    table = markdown_table(runs)
    assert "| para-ov (int8, float32) | 82.6 |" in table and "| para-ov (int8, bfloat16) | 82.7 |" in table
