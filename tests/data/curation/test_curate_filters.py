"""Filters: each against a naive re-implementation or a hand-checked case."""

from __future__ import annotations

import json
import random
import sys

import numpy as np
import pyarrow as pa
import pytest

from e5kit.data.filters import clean, decontaminate, exact_dedup, language, length, near_dedup, perplexity, visible
from e5kit.data.filters.base import words
from e5kit.io.pairs import Pair


def test_clean_strips_urls_and_boilerplate_but_never_markup():
    # Given plain text with a URL, a boilerplate line and markup-like characters (HTML is the readers' job)
    cleaner = clean.CleanFilter(clean.Config())
    pair = Pair("Tea &amp; health", "Green tea, see https://example.org/x now.\nAccept cookies\nif (a<b && c>d) is code.")
    # When cleaned, Then URL and boilerplate go, the rest stays as written
    assert cleaner.keep(pair) is True
    assert (pair.query, pair.passage) == ("Tea &amp; health", "Green tea, see now.\nif (a<b && c>d) is code.")
    # And a side left empty is not dropped here: the visible-text rule that always follows drops it
    emptied = Pair("ok", "Subscribe")
    assert cleaner.keep(emptied) is True
    assert emptied.passage == "" and visible.VisibleTextFilter().keep(emptied) == "passage has no visible text"


def test_length_bounds_and_identical_sides():
    bounds = length.LengthFilter(length.Config(min_query_words=2, max_passage_words=5, min_passage_words=2))
    assert bounds.keep(Pair("one", "two words")) == "query under 2 words"
    assert bounds.keep(Pair("two words", "a b c d e f")) == "passage over 5 words"
    assert bounds.keep(Pair("Same text", "same, text!")) == "query and passage are the same text"
    assert bounds.keep(Pair("two words", "three words here")) is True


def test_language_keeps_english_and_drops_german():
    identify = language.LanguageFilter(language.Config())
    english = Pair("q", "The committee approved the budget for the new public library after a long debate.")
    german = Pair("q", "Der Ausschuss hat den Haushalt für die neue öffentliche Bibliothek nach langer Debatte genehmigt.")
    assert identify.keep(english) is True
    assert identify.keep(german) == "passage not in en"
    with pytest.raises(ValueError, match="unknown code"):
        language.LanguageFilter(language.Config(languages=["xx"]))


#: A bigram KenLM model in ARPA text form: four known words, one seen pair; every other word is the rare <unk>.
BIGRAM_ARPA = """\\data\\
ngram 1=7
ngram 2=1

\\1-grams:
-5.0\t<unk>\t0
-99\t<s>\t0
-0.7\t</s>
-0.6\tgreen\t0
-0.6\ttea\t0
-0.6\tis\t0
-0.6\tfluent\t0

\\2-grams:
-0.2\tgreen tea

\\end\\
"""


def test_perplexity_filter_with_a_real_kenlm_model(tmp_path):
    kenlm = pytest.importorskip("kenlm")
    # Given a KenLM model that knows four words (log10 probabilities; zero backoff weights)
    model_path = tmp_path / "bigram.arpa"
    model_path.write_text(BIGRAM_ARPA)
    check = perplexity.PerplexityFilter(perplexity.Config(model_path=model_path, max_perplexity=1000))
    # Then known words (across a newline) score low and are kept, unknown ones score high and are dropped
    assert kenlm.Model(str(model_path)).perplexity("green tea is fluent") == pytest.approx(10 ** ((3 * 0.6 + 0.2 + 0.7) / 5))
    assert check.keep(Pair("q", "green tea\nis fluent")) is True
    assert check.keep(Pair("q", "zx qv kj")) == "passage perplexity over 1000"


def test_perplexity_without_kenlm_is_a_clear_error(tmp_path, monkeypatch):
    # Given kenlm cannot be imported (it is an optional extra), asking for the filter says what to install
    monkeypatch.setitem(sys.modules, "kenlm", None)
    with pytest.raises(ValueError, match="pip install kenlm"):
        perplexity.load_kenlm(tmp_path / "model.arpa")
    # And with kenlm present, a missing model file is named
    monkeypatch.setitem(sys.modules, "kenlm", object())
    with pytest.raises(ValueError, match="model.arpa: no such file"):
        perplexity.load_kenlm(tmp_path / "model.arpa")


def naive_shares_ngram(text: str, eval_texts: list[str], n: int) -> bool:
    grams = lambda tokens: {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}  # noqa: E731
    mine = grams(words(text))
    if len(words(text)) < n:
        return any(words(text) == words(other) for other in eval_texts)
    return any(mine & grams(words(other)) for other in eval_texts)


def test_decontamination_matches_naive_ngram_overlap(tmp_path):
    # Given an evaluation folder (BEIR layout) and candidate texts with and without overlap
    rng = random.Random(0)
    vocabulary = [f"w{i}" for i in range(300)]
    eval_texts = [" ".join(rng.choices(vocabulary, k=40)) for _ in range(30)]
    folder = tmp_path / "beir" / "toy"
    folder.mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": str(i), "title": "", "text": t}) for i, t in enumerate(eval_texts[:20])))
    (folder / "queries.jsonl").write_text("\n".join(json.dumps({"_id": str(i), "text": t}) for i, t in enumerate(eval_texts[20:])))
    (folder / "queries.jsonl").open("a").write("\n" + json.dumps({"_id": "short", "text": "Is tea healthy?"}))
    candidates = [" ".join(rng.choices(vocabulary, k=30)) for _ in range(40)]
    candidates += [f"prefix words {t[:90]} suffix" for t in eval_texts[:10]] + ["is TEA healthy", "is tea good"]
    index, skips = decontaminate.EvalIndex.build([tmp_path / "beir"], ngram=5)
    check = decontaminate.DecontaminationFilter(decontaminate.Config(eval_paths=[folder], ngram=5), index)
    # When each candidate is checked as a passage, the result equals the naive n-gram set intersection
    for text in candidates:
        expected = naive_shares_ngram(text, eval_texts + ["Is tea healthy?"], 5)
        assert (check.keep(Pair("unrelated query", text)) == "passage overlaps evaluation data") is expected, text
    assert check.keep(Pair("is tea healthy", "a b c")) == "query overlaps evaluation data"
    assert not skips


def test_exact_dedup_ignores_case_and_punctuation():
    dedup = exact_dedup.ExactDedup()
    keys = [exact_dedup.dedup_key(Pair(q, p), "pair") for q, p in [("A b", "c"), ("a, B!", "C"), ("a b", "d")]]
    assert [dedup.is_duplicate(key) for key in keys] == [False, True, False]


def test_dedup_filters_answer_keep_like_the_other_filters_and_their_batches_agree():
    # Given pairs with exact and near repeats, the later ones in a second batch
    rng = random.Random(2)
    texts = [" ".join(rng.choices([f"w{i}" for i in range(400)], k=60)) for _ in range(4)]
    near_copy = texts[0].replace(texts[0].split()[30], "changed", 1)
    pairs = [Pair("q0", texts[0]), Pair("Q0!", texts[0]), Pair("q1", texts[1]), Pair("q2", near_copy), Pair("q3", texts[2]), Pair("q1", texts[1])]
    near_config = near_dedup.Config(threshold=0.7, num_perm=64)
    # When asked pair by pair (keep, the one filter protocol)
    exact, near = exact_dedup.ExactDedup(), near_dedup.NearDedup(near_config)
    one_by_one = []
    for pair in pairs:
        verdict = exact.keep(pair)
        one_by_one.append(verdict if verdict is not True else near.keep(pair))
    assert one_by_one == [True, "exact duplicate", True, "near duplicate (MinHash)", True, "exact duplicate"]
    # Then the global pass's form (key columns in batches, a keep mask over the rows still kept) agrees
    exact, near = exact_dedup.ExactDedup(), near_dedup.NearDedup(near_config)
    kept = []
    for batch in (pairs[:3], pairs[3:]):
        keys = pa.array([exact.key(pair) for pair in batch], pa.int64())
        signatures = pa.array([near.key(pair) for pair in batch], pa.binary())
        mask = exact.keep_keys(keys, np.ones(len(batch), dtype=bool))
        mask &= near.keep_keys(signatures.slice(0), mask)
        kept += mask.tolist()
    assert kept == [verdict is True for verdict in one_by_one]


def test_near_dedup_catches_small_edits_and_keeps_different_texts():
    config = near_dedup.Config(threshold=0.7, num_perm=128, shingle_words=3)
    rng = random.Random(1)
    base = " ".join(rng.choices([f"w{i}" for i in range(500)], k=200))
    edited = base.replace(base.split()[100], "changed", 1)
    other = " ".join(rng.choices([f"w{i}" for i in range(500)], k=200))
    index = near_dedup.NearDedup(config)
    flags = [index.is_duplicate(near_dedup.signature(Pair("q", text), config)) for text in (base, edited, other)]
    assert flags == [False, True, False]
    # And the signature estimate agrees with the true Jaccard of the shingle sets
    a, b = set(near_dedup.shingles(base, 3)), set(near_dedup.shingles(edited, 3))
    estimate = np.mean(near_dedup.signature(Pair("q", base), config) == near_dedup.signature(Pair("q", edited), config))
    assert abs(estimate - len(a & b) / len(a | b)) < 0.15
