"""InfoNCE: equal to a per-row naive implementation, blocked or not, with masking and symmetry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from e5kit.training.losses.infonce import info_nce_loss


def naive_info_nce(queries, passages, tau, symmetric=False, query_texts=None, passage_texts=None):
    """Row-by-row -log softmax, skipping false negatives by comparing the texts themselves."""

    def direction(rows, columns):
        total = 0.0
        for i in range(len(rows)):
            terms = []
            for j in range(len(columns)):
                duplicate = query_texts is not None and (query_texts[j] == query_texts[i] or passage_texts[j] == passage_texts[i])
                if j == i or not duplicate:
                    terms.append(float(rows[i] @ columns[j]) / tau)
            positive = float(rows[i] @ columns[i]) / tau
            total += -(positive - math.log(sum(math.exp(t - positive) for t in terms)) - positive)
        return total / len(rows)

    forward = direction(queries, passages)
    return (forward + direction(passages, queries)) / 2 if symmetric else forward


def embeddings(count, dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(count, dim, generator=generator, dtype=torch.float64), dim=-1)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("block_rows", [None, 1, 3])
def test_loss_equals_naive_with_and_without_blocks(symmetric, block_rows):
    # Given random unit vectors for 7 pairs
    queries, passages = embeddings(7), embeddings(7, seed=1)
    # When the loss is computed (blocked under checkpointing or in one block)
    loss = info_nce_loss(queries, passages, queries, passages, tau=0.05, symmetric=symmetric, block_rows=block_rows)
    # Then it equals the per-row naive cross-entropy
    assert float(loss) == pytest.approx(naive_info_nce(queries, passages, 0.05, symmetric), rel=1e-9)


@pytest.mark.parametrize("symmetric", [False, True])
def test_false_negatives_with_equal_texts_are_masked(symmetric):
    # Given pairs where queries 0 and 2 are the same text and passages 1 and 3 are the same text
    query_texts = ["q0", "q1", "q0", "q3", "q4"]
    passage_texts = ["p0", "p1", "p2", "p1", "p4"]
    keys = {"query_keys": torch.tensor([hash(t) for t in query_texts]), "passage_keys": torch.tensor([hash(t) for t in passage_texts])}
    queries, passages = embeddings(5, seed=2), embeddings(5, seed=3)
    # When the loss masks false negatives
    masked = info_nce_loss(queries, passages, queries, passages, tau=0.1, symmetric=symmetric, block_rows=2, **keys)
    plain = info_nce_loss(queries, passages, queries, passages, tau=0.1, symmetric=symmetric)
    # Then it equals the naive loss that drops those columns, and differs from the unmasked loss
    expected = naive_info_nce(queries, passages, 0.1, symmetric, query_texts, passage_texts)
    assert float(masked) == pytest.approx(expected, rel=1e-9)
    assert float(masked) < float(plain)


def test_local_rows_with_offset_are_a_slice_of_the_global_loss():
    # Given a global batch of 6 split into two "processes" of 3 rows
    queries, passages = embeddings(6, seed=4), embeddings(6, seed=5)
    full = info_nce_loss(queries, passages, queries, passages, tau=0.02, symmetric=True)
    # When each half computes its local-row loss against the whole batch
    halves = [
        info_nce_loss(queries[s : s + 3], passages[s : s + 3], queries, passages, offset=s, tau=0.02, symmetric=True)
        for s in (0, 3)
    ]
    # Then the mean of the local losses is the global loss
    assert float(sum(halves) / 2) == pytest.approx(float(full), rel=1e-12)


def test_gradients_through_blocked_loss_match_unblocked():
    # Given leaf embeddings
    queries, passages = embeddings(9, seed=6).requires_grad_(), embeddings(9, seed=7).requires_grad_()
    # When the loss is backpropagated in blocks of 2 rows and in one block
    grads = []
    for block_rows in (2, None):
        queries.grad = passages.grad = None
        info_nce_loss(queries, passages, queries, passages, tau=0.01, symmetric=True, block_rows=block_rows).backward()
        grads.append((queries.grad.clone(), passages.grad.clone()))
    # Then the gradients agree
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-12)


def test_text_keys_treat_copies_differing_in_case_width_or_spacing_as_the_same_text():
    from e5kit.training.gradcache import text_keys

    # Given a text, its copies in upper case, full-width letters and extra spacing, and a different text
    keys = text_keys(["Cell  protein", "CELL PROTEIN", "ｃｅｌｌ protein\u200b", "cell proteins"], torch.device("cpu"))
    # Then the copies share one key (masked as in-batch false negatives, as mining rejects them), the other differs
    assert keys[0] == keys[1] == keys[2] and keys[3] != keys[0]
