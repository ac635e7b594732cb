"""Settings of sentence-transformers' modules (Pooling, Transformer, Normalize): each one e5kit loads
embeds as sentence-transformers embeds it, and each other one is refused, naming the file and field."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from e5kit.encoder import Encoder
from e5kit.encoder.model_format import ModelDirectoryError

# Capitals and accents, so that a setting that changes case or accents changes the tokens.
TEXTS = ["The Cat sat on the MAT", "How do cells divide?", "Python can read and write files " * 4, "Café résumé naïve"]
TEXT_DEFAULTS = {"text": {"method": "forward", "method_output_name": "last_hidden_state"}}


@pytest.fixture(scope="module")
def saved_dir(tiny_bert_dir, tmp_path_factory):
    return Encoder.load(tiny_bert_dir, device="cpu").save(tmp_path_factory.mktemp("saved") / "model")


@pytest.fixture
def model_copy(saved_dir, tmp_path):
    return shutil.copytree(saved_dir, tmp_path / "model")


def set_fields(path, **fields):
    config = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**config, **fields}))


def assert_embeds_as_sentence_transformers(folder):
    from sentence_transformers import SentenceTransformer

    st_model = SentenceTransformer(str(folder), device="cpu")
    e5 = Encoder.load(folder, device="cpu")
    for role in ("query", "passage"):
        expected = st_model.encode(TEXTS, prompt_name=role, convert_to_numpy=True)
        np.testing.assert_allclose(e5.encode(TEXTS, role=role), expected, atol=1e-5)
    return e5


def test_every_honoured_setting_spelled_out_embeds_as_sentence_transformers(model_copy):
    # Given a folder whose modules spell out every setting e5kit honours, as sentence-transformers 6
    # writes them (its default values, which e5kit's own folders leave implicit)
    set_fields(
        model_copy / "sentence_bert_config.json",
        max_seq_length=48,
        do_lower_case=False,
        transformer_task="feature-extraction",
        modality_config=TEXT_DEFAULTS,
        module_output_name="token_embeddings",
        unpad_inputs=False,
        processing_kwargs={},
        query_length=None,
        document_length=None,
        query_expansion=None,
    )
    (model_copy / "1_Pooling" / "config.json").write_text(
        json.dumps({"embedding_dimension": 32, "pooling_mode": "mean", "include_prompt": True})
    )
    set_fields(model_copy / "2_Normalize" / "config.json", module_input_name="sentence_embedding", module_output_name="sentence_embedding")
    # When e5kit and sentence-transformers both embed with it, Then the vectors agree
    assert assert_embeds_as_sentence_transformers(model_copy).max_length == 48


def test_do_lower_case_with_a_tokenizer_that_lowercases_embeds_as_sentence_transformers(model_copy):
    # Given do_lower_case on a model whose (uncased BERT) tokenizer lowercases every text itself, to
    # which sentence-transformers still adds its own lowercasing step
    set_fields(model_copy / "sentence_bert_config.json", do_lower_case=True)
    # When both embed texts with capitals and accents, Then the vectors agree
    assert_embeds_as_sentence_transformers(model_copy)


def test_settings_in_an_older_config_file_name_are_honoured(model_copy):
    # Given a Transformer whose settings are in sentence_roberta_config.json, a name older
    # sentence-transformers versions wrote and every version still reads, with a limit of 8 tokens
    (model_copy / "sentence_bert_config.json").unlink()
    (model_copy / "sentence_roberta_config.json").write_text(json.dumps({"max_seq_length": 8, "do_lower_case": False}))
    # When both embed texts longer than that, Then both cut them at 8 tokens
    assert assert_embeds_as_sentence_transformers(model_copy).max_length == 8


@pytest.mark.parametrize("backend", ["torch", "onnx", "openvino"])
def test_include_prompt_false_is_refused_on_every_backend(model_copy, backend):
    # Given a Pooling that leaves the prompt's tokens out, which the exported graphs cannot (they pool
    # every token the model attends to)
    set_fields(model_copy / "1_Pooling" / "config.json", include_prompt=False)
    # When loaded with any backend, Then the file and field are named, before any backend is built
    with pytest.raises(ModelDirectoryError, match=r"1_Pooling/config.json: include_prompt false is not supported \(supported: true\)"):
        Encoder.load(model_copy, backend=backend)


def test_do_lower_case_with_a_tokenizer_that_keeps_case_is_refused(model_copy):
    # Given do_lower_case on a model whose tokenizer keeps case (sentence-transformers would lowercase
    # the texts, e5kit's tokenizer does not)
    set_fields(model_copy / "tokenizer_config.json", do_lower_case=False)
    set_fields(model_copy / "sentence_bert_config.json", do_lower_case=True)
    # When e5kit loads it, Then it refuses, naming the file and field
    with pytest.raises(ModelDirectoryError, match=r"sentence_bert_config.json: do_lower_case true is not supported with this tokenizer"):
        Encoder.load(model_copy, device="cpu")


@pytest.mark.parametrize(
    ("file", "field", "value", "message"),
    [
        ("1_Pooling/config.json", "pooling_dropout", 0.1, "field 'pooling_dropout' is not supported"),
        ("sentence_bert_config.json", "transformer_task", "sequence-classification", 'transformer_task "sequence-classification" is not supported'),
        ("sentence_bert_config.json", "modality_config", {"text": {"method": "forward", "method_output_name": "pooler_output"}}, "modality_config {"),
        ("sentence_bert_config.json", "module_output_name", "scores", 'module_output_name "scores" is not supported'),
        ("sentence_bert_config.json", "processing_kwargs", {"text": {"padding_side": "left"}}, "processing_kwargs {"),
        ("sentence_bert_config.json", "query_length", 8, "query_length 8 is not supported"),
        ("sentence_bert_config.json", "document_length", 8, "document_length 8 is not supported"),
        ("sentence_bert_config.json", "query_expansion", {"length": 32}, "query_expansion {"),
        ("sentence_bert_config.json", "tokenizer_args", {"add_prefix_space": True}, 'tokenizer_args {"add_prefix_space": true} is not supported'),
        ("2_Normalize/config.json", "module_input_name", "token_embeddings", 'module_input_name "token_embeddings" is not supported'),
        ("2_Normalize/config.json", "module_output_name", "normalized", 'module_output_name "normalized" is not supported'),
    ],
)
def test_a_setting_e5kit_would_not_embed_with_is_refused_naming_file_and_field(model_copy, file, field, value, message):
    # Given one module setting that sentence-transformers acts on and e5kit does not do the same way
    set_fields(model_copy / file, **{field: value})
    # When e5kit loads the folder, Then one line names the file and the field
    with pytest.raises(ModelDirectoryError, match=re.escape(f"{file}: {message}")) as refused:
        Encoder.load(model_copy, device="cpu")
    assert "\n" not in str(refused.value)
