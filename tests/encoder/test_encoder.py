"""Encoder behaviour: prefixes, pooling, batching, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from e5kit.encoder import Encoder, pool
from e5kit.encoder.batching import padded_length, plan_batches


@pytest.fixture(scope="module")
def encoder(tiny_bert_dir) -> Encoder:
    return Encoder.load(tiny_bert_dir, device="cpu")


TEXTS = ["the cat sat on the mat", "how do cells divide", "python can read and write files", "a"]


def test_plain_checkpoint_gets_e5_prompts(encoder):
    # Given a plain Hugging Face checkpoint, When loaded, Then it embeds the E5 way
    assert encoder.prompts == {"query": "query: ", "passage": "passage: "}
    assert encoder.pooling == "mean" and encoder.normalize


def test_prefix_is_applied_exactly_once(encoder):
    # Given texts with and without the prefix already present
    prepared = encoder.prepare(["cats", "query: cats"], role="query")
    # Then the prefix appears once in each
    assert prepared == ["query: cats", "query: cats"]
    encoder.encode_queries(["cats", "query: cats"])
    assert encoder.last_stats.already_prefixed == 1
    token_ids = encoder.tokenize(["cats"], role="query")["input_ids"][0].tolist()
    assert token_ids.count(encoder.tokenizer.convert_tokens_to_ids("query")) == 1
    # And encode_queries equals embedding the prefixed text raw
    np.testing.assert_allclose(
        encoder.encode_queries(["cats"]), encoder.encode(["query: cats"], role="none"), atol=1e-6
    )
    np.testing.assert_allclose(encoder.encode_queries(["query: cats"]), encoder.encode_queries(["cats"]), atol=1e-6)


def test_query_and_passage_roles_differ(encoder):
    queries = encoder.encode_queries(TEXTS)
    passages = encoder.encode_passages(TEXTS)
    assert not np.allclose(queries, passages)
    np.testing.assert_allclose(encoder.encode(TEXTS, role="document"), passages, atol=1e-6)


def test_role_is_required_when_model_has_prompts(encoder):
    with pytest.raises(ValueError, match="role"):
        encoder.encode(TEXTS)
    with pytest.raises(ValueError, match="unknown role 'questions'"):
        encoder.encode(TEXTS, role="questions")


def test_model_without_prompts_needs_no_role(tiny_bert_dir):
    plain = Encoder.load(tiny_bert_dir, prompts={}, device="cpu")
    np.testing.assert_allclose(plain.encode(TEXTS), plain.encode(TEXTS, role="query"), atol=1e-6)


def test_output_is_float32_normalised_in_input_order(encoder):
    # Given texts of very different lengths, When batched by length (batch 2)
    batched = encoder.encode_passages(TEXTS, batch_size=2)
    # Then each row equals the text embedded alone
    alone = np.vstack([encoder.encode_passages([t]) for t in TEXTS])
    assert batched.dtype == np.float32 and batched.shape == (len(TEXTS), encoder.dimension)
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


def test_unnormalised_output_on_request(encoder):
    raw = encoder.encode_passages(TEXTS, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), encoder.encode_passages(TEXTS), atol=1e-5)


def test_mean_pooling_matches_naive_loop():
    torch.manual_seed(0)
    hidden = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    expected = torch.stack([hidden[i, : int(mask[i].sum())].mean(dim=0) for i in range(3)])
    torch.testing.assert_close(pool(hidden, mask, "mean"), expected)
    torch.testing.assert_close(pool(hidden, mask, "cls"), hidden[:, 0])
    expected_max = torch.stack([hidden[i, : int(mask[i].sum())].max(dim=0).values for i in range(3)])
    torch.testing.assert_close(pool(hidden, mask, "max"), expected_max)


def test_empty_list_gives_empty_matrix(encoder):
    result = encoder.encode_queries([])
    assert result.shape == (0, encoder.dimension) and result.dtype == np.float32


@pytest.mark.parametrize(
    ("texts", "error", "message"),
    [
        (["ok", "fine", None], TypeError, "index 2 is NoneType"),
        (["ok", 5], TypeError, "index 1 is int"),
        (["ok", ""], ValueError, "index 1 has no visible text"),
        (["   "], ValueError, "index 0 has no visible text"),
        # Zero-width and format characters only: each would embed to the same vector as the others.
        (["ok", "\u200b"], ValueError, "index 1 has no visible text"),
        (["\u2060\u00ad \ufeff"], ValueError, "index 0 has no visible text"),
        ("a single string", TypeError, "single string"),
    ],
)
def test_bad_texts_name_the_index(encoder, texts, error, message):
    with pytest.raises(error, match=message):
        encoder.encode_queries(texts)


def test_over_long_text_is_truncated_and_counted(encoder):
    # Given one text far beyond the 64-token limit and one short text
    long_text = "cells " * 500
    result = encoder.encode_passages([long_text, "short", "cells " * 10])
    # Then nothing crashes and exactly one truncation is counted
    assert result.shape == (3, encoder.dimension)
    assert encoder.last_stats.truncated == 1
    assert encoder.last_stats.texts == 3
    # And the tokens each text used are counted in input order, the cut one at the limit
    lengths = [len(ids) for ids in encoder.tokenizer(encoder.prepare(["short", "cells " * 10], "passage"))["input_ids"]]
    assert encoder.last_stats.token_counts.tolist() == [encoder.max_length, *lengths]


def test_warm_up_is_a_no_op_on_backends_that_do_not_build_kernels_per_shape(encoder, monkeypatch):
    # Given the torch backend, whose passes cost the same the first time at a shape as after
    assert not encoder.backend.compiles_per_shape
    monkeypatch.setattr(encoder.backend, "forward", lambda *args, **kwargs: pytest.fail("warm_up ran a forward pass"))
    # When asked to warm up, Then it runs nothing and says so
    assert encoder.warm_up(batch_size=8, max_length=64) == 0


def test_encode_with_stats_returns_them_and_leaves_last_stats_alone(encoder):
    # Given an earlier call's stats
    encoder.encode_passages(["cells " * 500])
    earlier = encoder.last_stats
    # When a concurrent-safe call runs
    embeddings, stats = encoder.encode_with_stats(["cats", "dogs"], role="query")
    # Then last_stats still describes the earlier call
    assert encoder.last_stats is earlier and earlier.truncated == 1
    # And the call's own stats come back with the same embeddings encode gives
    assert stats.texts == 2 and stats.truncated == 0 and len(stats.token_counts) == 2
    np.testing.assert_allclose(embeddings, encoder.encode_queries(["cats", "dogs"]), atol=1e-6)


def test_token_ids_in_bounded_calls_equal_one_call_and_count_every_cut(encoder):
    from e5kit.encoder import TOKENIZER_CALL_TEXTS, EncodeStats

    # Given more texts than one tokenizer call takes, every third one over a 12-token limit
    texts = [("cells " * 40 if i % 3 == 0 else f"text {i}") for i in range(TOKENIZER_CALL_TEXTS + 50)]
    stats = EncodeStats()
    # When they are tokenised at that limit
    token_ids = encoder.token_ids(texts, max_length=12, stats=stats)
    # Then the ids equal a single call's, in order, and every cut text is counted across calls
    assert token_ids == encoder.tokenizer(texts, truncation=True, max_length=12)["input_ids"]
    assert stats.truncated == len(range(0, len(texts), 3))
    # And padding gives rectangular ids with a mask of the real tokens
    input_ids, attention_mask = encoder.pad(token_ids[:3])
    assert input_ids.shape == attention_mask.shape == (3, 12)
    assert attention_mask.sum(axis=1).tolist() == [len(ids) for ids in token_ids[:3]]


@pytest.mark.parametrize(
    ("longest", "multiple", "limit", "expected"),
    [(119, 16, 512, 128), (57, 16, 512, 64), (64, 16, 512, 64), (41, 16, 512, 48), (9, 16, 512, 16), (250, 16, 256, 256), (250, 16, 252, 252), (119, 1, 512, 119)],
)
def test_padded_length_rounds_up_to_the_multiple_within_the_limit(longest, multiple, limit, expected):
    # Given a batch's longest text, the backend's multiple and the encoder's token limit
    # Then the padded length is the next multiple, short texts included, but never past the limit
    assert padded_length(longest, multiple, limit) == expected


def _plan_cost(lengths, sizes, overhead, multiple, limit):
    starts = np.cumsum([0, *sizes[:-1]])
    return sum(overhead + size * padded_length(lengths[start], multiple, limit) for start, size in zip(starts, sizes))


@pytest.mark.parametrize("seed", range(6))
def test_plan_batches_costs_the_least_of_every_split(seed):
    from itertools import product

    # Given 9 lengths sorted longest first, a batch limit of 4 and a pass overhead
    rng = np.random.default_rng(seed)
    lengths = sorted(rng.integers(5, 200, size=9).tolist(), reverse=True)
    overhead, multiple, limit = int(rng.integers(0, 150)), int(rng.choice([1, 16])), 256
    # When batches are planned
    sizes = plan_batches(lengths, 4, overhead, multiple, limit)
    # Then they cover the texts in order, none over the limit, at the least cost of all 2^8 ways to cut them
    assert sum(sizes) == len(lengths) and max(sizes) <= 4
    every = []
    for cuts in product([False, True], repeat=len(lengths) - 1):
        split, size = [], 1
        for cut in cuts:
            if cut:
                split.append(size)
                size = 0
            size += 1
        split.append(size)
        if max(split) <= 4:
            every.append(_plan_cost(lengths, split, overhead, multiple, limit))
    assert _plan_cost(lengths, sizes, overhead, multiple, limit) == min(every)


def test_a_long_text_no_longer_pads_a_batch_of_short_ones():
    # Given a server's batch: one 256-token text and 15 of about 100 tokens, passes worth 96 tokens
    lengths = [256, *range(110, 95, -1)]
    # Then the long text runs on its own and the short ones share passes
    assert plan_batches(lengths, 16, 96, 16, 256) == [1, 15]
    # And when a pass costs more than padding could, the texts fill the fewest batches
    assert plan_batches(lengths, 8, 10_000) == [8, 8]
    assert plan_batches([], 8, 96) == []


def test_text_exactly_at_the_limit_is_not_counted_as_truncated(encoder):
    prefix_and_specials = len(encoder.tokenizer("passage: ")["input_ids"])
    exact = "cells " * (encoder.max_length - prefix_and_specials)
    assert len(encoder.tokenizer("passage: " + exact)["input_ids"]) == encoder.max_length
    encoder.encode_passages([exact])
    assert encoder.last_stats.truncated == 0


def test_bfloat16_runs_on_cpu_and_stays_close(tiny_bert_dir, encoder):
    bf16 = Encoder.load(tiny_bert_dir, device="cpu", dtype="bfloat16")
    result = bf16.encode_passages(TEXTS)
    assert result.dtype == np.float32
    assert np.min(np.sum(result * encoder.encode_passages(TEXTS), axis=1)) > 0.98


def test_float16_on_cpu_is_refused_with_advice(tiny_bert_dir):
    with pytest.raises(ValueError, match="float16 needs a CUDA device"):
        Encoder.load(tiny_bert_dir, device="cpu", dtype="float16")


def test_resolve_device_names_a_malformed_or_missing_device():
    from e5kit.encoder import auto_device, resolve_device

    # Given device names a user may type; When resolved; Then CPU and None resolve, the others are one clear ValueError
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(None) == auto_device()
    with pytest.raises(ValueError, match="'gpu0' is not a torch device name"):
        resolve_device("gpu0")
    with pytest.raises(ValueError, match=f"'cuda:{torch.cuda.device_count()}' is not available"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")
