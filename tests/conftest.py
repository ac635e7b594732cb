"""Shared fixtures: a tiny random BERT with a tiny WordPiece tokenizer (as a folder, an Encoder and a
cross-encoder), the texts it embeds, a small BEIR train split, and the ../shared folder."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch
from tiny_texts import SENTENCES, long_text

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

WORDS = (
    "the a an of to in is and or for on with as by at from that this it be are was were "
    "cell cells protein gene genes cancer disease patients study results effect treatment "
    "query passage what how why when who where which does do can not no yes more less "
    "python file files read write parse data model train test text search index embed vector "
    "cat dog sat mat sun moon sky blue red green fast slow big small new old good bad"
).split()


def write_tiny_tokenizer(folder: Path):
    """A WordPiece tokenizer over a few hundred words plus single characters (so nothing is [UNK]-only)."""
    from transformers import AutoTokenizer

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,:;!?'\"-()")
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + letters + [f"##{c}" for c in letters] + sorted(set(WORDS))
    vocab = list(dict.fromkeys(tokens))  # a repeated entry ("a") would give ids beyond the vocabulary size
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer", "do_lower_case": true}')
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.model_max_length = 64
    return tokenizer


def build_tiny_bert(folder: Path, seed: int = 0) -> Path:
    """Save a randomly initialised 2-layer BERT (hidden 32) and its tokenizer as a Hugging Face checkpoint."""
    from transformers import BertConfig, BertModel

    tokenizer = write_tiny_tokenizer(folder)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_st_without_normalize(folder: Path, seed: int = 0) -> Path:
    """The tiny BERT as a sentence-transformers folder like paraphrase-MiniLM-L3-v2: mean pooling, no
    Normalize module, no prompts, no declared similarity (so cosine, sentence-transformers' default)."""
    import json

    build_tiny_bert(folder, seed)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64, "do_lower_case": False}))
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ]
        )
    )
    return folder


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A plain Hugging Face checkpoint directory (no sentence-transformers files): E5 prompts, cosine."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_unnormalized_dir(tmp_path_factory) -> Path:
    """A sentence-transformers folder without a Normalize module (see ``build_tiny_st_without_normalize``)."""
    return build_tiny_st_without_normalize(tmp_path_factory.mktemp("tiny-st-no-normalize"))


@pytest.fixture(scope="session")
def tiny_encoder(tiny_bert_dir):
    """The tiny BERT as an Encoder (inference; tests/training has its own, a factory of train-mode encoders)."""
    from e5kit.encoder import Encoder

    return Encoder.load(tiny_bert_dir, device="cpu")


@pytest.fixture(scope="session")
def texts() -> list[str]:
    """The sentences of tiny_texts plus one text longer than the tiny model's 64-token limit."""
    return SENTENCES + [long_text(200)]


@pytest.fixture(scope="session")
def tiny_cross_encoder_dir(tiny_bert_dir, tmp_path_factory) -> Path:
    """A random 1-label BertForSequenceClassification sharing the tiny BERT's tokenizer and config."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-cross-encoder")
    config = BertConfig.from_pretrained(tiny_bert_dir, num_labels=1)
    torch.manual_seed(1)
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(folder)
    return folder


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


@pytest.fixture(name="write_jsonl")
def write_jsonl_fixture():
    return write_jsonl


#: Topics of ``beir_dir``'s documents and queries (words the tiny tokenizer knows).
TOPICS = {
    "cell": "cell cells protein gene",
    "cancer": "cancer disease patients treatment",
    "python": "python file read write parse",
    "search": "search index embed vector text",
    "animals": "cat dog sat mat",
    "sky": "sun moon sky blue",
}


def build_beir(folder: Path, docs_per_topic: int = 6) -> Path:
    """A small BEIR folder with a train split: docs about 6 topics; each query is judged relevant to 2 docs of its topic."""
    corpus, queries, qrels = [], [], ["query-id\tcorpus-id\tscore"]
    for topic, words in TOPICS.items():
        for index in range(docs_per_topic):
            corpus.append({"_id": f"{topic}-{index}", "title": topic, "text": f"{words} {'the ' * index}data {index}"})
        for index in range(2):
            query_id = f"q-{topic}-{index}"
            queries.append({"_id": query_id, "text": f"what is {words.split()[index]} {topic}"})
            qrels += [f"{query_id}\t{topic}-{index}\t1", f"{query_id}\t{topic}-{index + 2}\t2"]
    write_jsonl(folder / "corpus.jsonl", corpus)
    write_jsonl(folder / "queries.jsonl", queries)
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "qrels" / "train.tsv").write_text("\n".join(qrels) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(name="beir_dir")
def beir_dir_fixture(tmp_path) -> Path:
    """``build_beir``'s train split (the mining, teacher, fine-tuning-format and fine-tuning tests; tests/evaluation has its own test split)."""
    return build_beir(tmp_path / "beir")


@pytest.fixture
def restore_root_level():
    """The root logger's and transformers' levels as they were before the test (the CLI's log options change them)."""
    from transformers.utils import logging as transformers_logging

    level, transformers_level = logging.getLogger().level, transformers_logging.get_verbosity()
    yield
    logging.getLogger().setLevel(level)
    transformers_logging.set_verbosity(transformers_level)


@pytest.fixture
def single_torch_thread():
    """One intra-op thread: tiny-model steps are ~100x slower when 2 threads fight other jobs for 2 cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def pair_sources(tmp_path) -> list[dict]:
    """Two generic JSONL sources ("alpha", "beta") of 160 pairs each: a distinct query per pair (its source,
    a number and three words of its 24-word passage), enough for a held-out split of each."""
    import json
    import random

    vocabulary = [f"word{i}" for i in range(300)]
    sources = []
    for seed, name in enumerate(("alpha", "beta")):
        rng = random.Random(seed)
        path = tmp_path / f"{name}.jsonl"
        with path.open("w") as handle:
            for i in range(160):
                passage = " ".join(rng.choice(vocabulary) for _ in range(24))
                handle.write(json.dumps({"query": f"{name} topic {i} " + " ".join(passage.split()[:3]), "passage": passage}) + "\n")
        sources.append({"type": "generic", "name": name, "paths": [str(path)]})
    return sources


@pytest.fixture
def pair_sources_curate() -> dict:
    """Curation overrides for ``pair_sources``: its made-up words are no language, and its passages share words."""
    return {"workers": 1, "filters": {"language": {"enabled": False}, "near_dedup": {"enabled": False}}}


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the repository; tests using it skip cleanly when it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared is absent")
    return SHARED


def pytest_collection_modifyitems(config, items):
    """Skip tests marked slow unless E5KIT_SLOW_TESTS=1 (they take minutes on a 2-core CPU)."""
    if os.environ.get("E5KIT_SLOW_TESTS") == "1":
        return
    skip_slow = pytest.mark.skip(reason="slow full-size run; set E5KIT_SLOW_TESTS=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder in which no file can be created: mode 555 for a normal user. Root writes through
    permission bits, so as root it is /sys/kernel (sysfs refuses new files); skipped when that is writable."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    folder = Path("/sys/kernel")
    try:
        (folder / ".e5kit-write-probe").touch()
    except OSError:
        yield folder
        return
    (folder / ".e5kit-write-probe").unlink()
    pytest.skip("running as root, and /sys/kernel is writable: no folder refuses writes (root ignores permission bits)")
