"""Save/load in the sentence-transformers format, both directions, and clear errors on broken folders."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from huggingface_hub import ModelCard

from e5kit.encoder import Encoder
from e5kit.encoder.model_format import ModelDirectoryError

TEXTS = ["the cat sat on the mat", "how do cells divide", "python can read and write files " * 4]


@pytest.fixture(scope="module")
def saved_dir(tiny_bert_dir, tmp_path_factory):
    encoder = Encoder.load(tiny_bert_dir, device="cpu")
    return encoder.save(tmp_path_factory.mktemp("saved") / "model")


def test_round_trip_keeps_embeddings_and_settings(tiny_bert_dir, saved_dir):
    original = Encoder.load(tiny_bert_dir, device="cpu")
    reloaded = Encoder.load(saved_dir, device="cpu")
    assert reloaded.prompts == original.prompts
    assert (reloaded.pooling, reloaded.normalize, reloaded.max_length) == ("mean", True, 64)
    np.testing.assert_allclose(reloaded.encode_queries(TEXTS), original.encode_queries(TEXTS), atol=1e-6)
    # The card is a Hub model card (huggingface_hub parses its front matter) titled "e5kit model"
    card = ModelCard.load(saved_dir / "README.md")
    assert card.data.library_name == "sentence-transformers" and card.text.lstrip().startswith("# e5kit model")


def test_sentence_transformers_loads_what_e5kit_saves_with_equal_embeddings(saved_dir):
    from sentence_transformers import SentenceTransformer

    # Given a model saved by e5kit, When loaded by sentence-transformers
    st_model = SentenceTransformer(str(saved_dir), device="cpu")
    e5 = Encoder.load(saved_dir, device="cpu")
    # Then the stored prompts are there and embeddings agree within 1e-5 for both roles
    assert st_model.prompts["query"] == "query: " and st_model.prompts["passage"] == "passage: "
    assert st_model.max_seq_length == 64
    for role in ("query", "passage"):
        expected = st_model.encode(TEXTS, prompt_name=role, convert_to_numpy=True)
        np.testing.assert_allclose(e5.encode(TEXTS, role=role), expected, atol=1e-5)


def test_sentence_transformers_6_encode_query_and_encode_document_add_e5_prefixes(saved_dir):
    from sentence_transformers import SentenceTransformer

    # Given a model saved by e5kit, loaded by sentence-transformers
    st_model = SentenceTransformer(str(saved_dir), device="cpu")
    e5 = Encoder.load(saved_dir, device="cpu")
    # When it embeds with its role methods and no prompt named
    queries = st_model.encode_query(TEXTS, convert_to_numpy=True)
    documents = st_model.encode_document(TEXTS, convert_to_numpy=True)
    # Then they equal e5kit's queries and passages: "passage: " is saved under "document", the name
    # encode_document looks up first (every model it loads has one, empty unless saved)
    np.testing.assert_allclose(queries, e5.encode_queries(TEXTS), atol=1e-5)
    np.testing.assert_allclose(documents, e5.encode_passages(TEXTS), atol=1e-5)
    assert st_model.prompts["document"] == "passage: "
    assert not np.allclose(documents, st_model.encode(TEXTS, prompt_name=None, convert_to_numpy=True), atol=1e-3)


def test_e5kit_reads_sentence_transformers_prompt_names_as_its_roles(saved_dir, tmp_path):
    # Given the saved folder, e5kit's roles are what they were: "document" folds into "passage"
    e5 = Encoder.load(saved_dir, device="cpu")
    assert e5.prompts == {"query": "query: ", "passage": "passage: "}
    np.testing.assert_allclose(e5.encode(TEXTS, role="document"), e5.encode_passages(TEXTS), atol=1e-6)
    # And a folder with only sentence-transformers' name for passages gives the passage role that prefix
    folder = shutil.copytree(saved_dir, tmp_path / "document-only")
    config_path = folder / "config_sentence_transformers.json"
    config = json.loads(config_path.read_text())
    config["prompts"] = {"query": "search_query: ", "document": "search_document: ", "passage": ""}
    config_path.write_text(json.dumps(config))
    assert Encoder.load(folder, device="cpu").prompts == {"query": "search_query: ", "passage": "search_document: "}
    # But prompts that disagree about passages are refused, naming both
    config["prompts"] = {"query": "query: ", "document": "doc: ", "passage": "passage: "}
    config_path.write_text(json.dumps(config))
    with pytest.raises(ModelDirectoryError, match="prompts 'document' \\('doc: '\\) and 'passage' \\('passage: '\\) differ"):
        Encoder.load(folder, device="cpu")


def test_transformers_automodel_loads_what_e5kit_saves(saved_dir):
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(saved_dir)
    tokenizer = AutoTokenizer.from_pretrained(saved_dir)
    assert model.config.hidden_size == 32 and tokenizer("query: cats")["input_ids"]


def test_e5kit_loads_what_sentence_transformers_saves(tiny_bert_dir, tmp_path):
    from sentence_transformers import SentenceTransformer, models

    # Given a model built and saved by sentence-transformers itself, with prompts and CLS pooling
    transformer = models.Transformer(str(tiny_bert_dir), max_seq_length=48)
    pooling = models.Pooling(32, pooling_mode="cls")
    st_model = SentenceTransformer(
        modules=[transformer, pooling, models.Normalize()],
        prompts={"query": "search_query: ", "passage": "search_document: "},
        device="cpu",
    )
    st_model.save(str(tmp_path / "st"))
    # When e5kit loads it, Then settings and embeddings agree
    e5 = Encoder.load(tmp_path / "st", device="cpu")
    assert (e5.pooling, e5.normalize, e5.max_length) == ("cls", True, 48)
    assert e5.prompts["query"] == "search_query: "
    expected = st_model.encode(TEXTS, prompt_name="query", convert_to_numpy=True)
    np.testing.assert_allclose(e5.encode_queries(TEXTS), expected, atol=1e-5)


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model directory"):
        Encoder.load(str(tmp_path / "nope" / "model"))


def test_missing_config_json(saved_dir, tmp_path):
    broken = shutil.copytree(saved_dir, tmp_path / "m")
    (broken / "config.json").unlink()
    with pytest.raises(ModelDirectoryError, match="missing config.json"):
        Encoder.load(broken)


def test_missing_weights(saved_dir, tmp_path):
    broken = shutil.copytree(saved_dir, tmp_path / "m")
    (broken / "model.safetensors").unlink()
    with pytest.raises(ModelDirectoryError, match="no model weights file found.*model.safetensors"):
        Encoder.load(broken)


def test_missing_tokenizer(tiny_bert_dir, tmp_path):
    broken = shutil.copytree(tiny_bert_dir, tmp_path / "m")
    for name in ("vocab.txt", "tokenizer.json"):
        (broken / name).unlink(missing_ok=True)
    with pytest.raises(ModelDirectoryError, match="no tokenizer file found"):
        Encoder.load(broken)


def test_malformed_modules_json(saved_dir, tmp_path):
    broken = shutil.copytree(saved_dir, tmp_path / "m")
    (broken / "modules.json").write_text('[{"idx": 0,')
    with pytest.raises(ModelDirectoryError, match=r"modules.json: malformed JSON at line 1"):
        Encoder.load(broken)


def test_missing_pooling_config(saved_dir, tmp_path):
    broken = shutil.copytree(saved_dir, tmp_path / "m")
    (broken / "1_Pooling" / "config.json").unlink()
    with pytest.raises(ModelDirectoryError, match=r"1_Pooling/config.json: missing"):
        Encoder.load(broken)


def test_unsupported_module_is_named(saved_dir, tmp_path):
    broken = shutil.copytree(saved_dir, tmp_path / "m")
    modules = json.loads((broken / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (broken / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelDirectoryError, match="module 3 has type 'sentence_transformers.models.Dense'"):
        Encoder.load(broken)
