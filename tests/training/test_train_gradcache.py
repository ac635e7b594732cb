"""GradCache gives the gradients of the plain big batch, for several chunk sizes, with dropout replayed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from e5kit.training.gradcache import GradCache, length_sorted_chunks

TAU = 0.05


def plain_batch_gradients(encoder, queries, passages, symmetric):
    """The reference: one forward over the whole batch, the loss written out, one backward."""
    encoder.model.zero_grad()
    q = encoder.embed(encoder.tokenize(queries, "query"))
    p = encoder.embed(encoder.tokenize(passages, "passage"))
    targets = torch.arange(len(queries))
    loss = F.cross_entropy(q @ p.T / TAU, targets)
    if symmetric:
        loss = (loss + F.cross_entropy(p @ q.T / TAU, targets)) / 2
    loss.backward()
    return float(loss.detach()), {name: param.grad.clone() for name, param in encoder.model.named_parameters() if param.grad is not None}


def gradcache_gradients(encoder, queries, passages, symmetric, chunk_size):
    encoder.model.zero_grad()
    cache = GradCache(encoder, chunk_size=chunk_size, tau=TAU, symmetric=symmetric, mask_false_negatives=False, query_max_length=64, passage_max_length=64)
    loss = cache.step(queries, passages)
    return loss, {name: param.grad.clone() for name, param in encoder.model.named_parameters() if param.grad is not None}


@pytest.mark.parametrize("symmetric", [False, True])
def test_gradients_equal_the_plain_big_batch(tiny_encoder, make_pairs, symmetric):
    # Given a tiny encoder without dropout and a batch of 12 pairs
    encoder = tiny_encoder()
    pairs = make_pairs(12)
    queries, passages = [p["query"] for p in pairs], [p["passage"] for p in pairs]
    expected_loss, expected = plain_batch_gradients(encoder, queries, passages, symmetric)
    for chunk_size in (1, 5, 12, 32):
        # When GradCache computes the same batch in chunks (12 and 32 hold it in one: the single-pass path)
        loss, grads = gradcache_gradients(encoder, queries, passages, symmetric, chunk_size)
        # Then loss and every parameter gradient match within 1e-5
        assert loss == pytest.approx(expected_loss, abs=1e-5)
        assert grads.keys() == expected.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(grad, expected[name], rtol=0, atol=1e-5, msg=f"{name} (chunk {chunk_size})")


def test_dropout_chunks_replay_their_own_rng(tiny_encoder, make_pairs):
    # Given dropout on and chunks of 3: a naive chunked run that keeps every graph consumes the RNG
    # in the same order as GradCache's first pass
    encoder = tiny_encoder(dropout=True)
    pairs = make_pairs(9, seed=4)
    queries, passages = [p["query"] for p in pairs], [p["passage"] for p in pairs]
    cache = GradCache(encoder, chunk_size=3, tau=TAU, mask_false_negatives=False, query_max_length=64, passage_max_length=64)
    torch.manual_seed(11)
    encoder.model.zero_grad()
    embedded = {}
    for role, texts in (("query", queries), ("passage", passages)):
        parts = [(chunk.rows, encoder.embed(chunk.features)) for chunk in length_sorted_chunks(encoder, texts, role, 64, 3)]
        embedded[role] = torch.cat([e for _, e in parts])[torch.argsort(torch.cat([r for r, _ in parts]))]
    targets = torch.arange(len(queries))
    F.cross_entropy(embedded["query"] @ embedded["passage"].T / TAU, targets).backward()
    expected = {n: p.grad.clone() for n, p in encoder.model.named_parameters() if p.grad is not None}
    # When GradCache runs from the same seed
    torch.manual_seed(11)
    encoder.model.zero_grad()
    cache.step(queries, passages)
    # Then the gradients match the keep-every-graph run, and the RNG continues from the first pass
    for name, param in encoder.model.named_parameters():
        if param.grad is not None:
            torch.testing.assert_close(param.grad, expected[name], rtol=0, atol=1e-5, msg=name)


def test_gradient_checkpointing_and_bf16_autocast(tiny_encoder, make_pairs):
    # Given a batch and its plain-batch gradients
    pairs = make_pairs(6, seed=5)
    queries, passages = [p["query"] for p in pairs], [p["passage"] for p in pairs]
    encoder = tiny_encoder()
    _, expected = plain_batch_gradients(encoder, queries, passages, symmetric=False)
    # When the model recomputes activations in backward (gradient checkpointing)
    encoder.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    _, grads = gradcache_gradients(encoder, queries, passages, symmetric=False, chunk_size=4)
    # Then the gradients are unchanged
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected[name], rtol=0, atol=1e-5, msg=name)
    # and under bf16 autocast they stay close (bf16 keeps ~3 significant digits)
    encoder.model.zero_grad()
    cache = GradCache(encoder, chunk_size=4, tau=TAU, mask_false_negatives=False, query_max_length=64, passage_max_length=64,
                      autocast=lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    cache.step(queries, passages)
    weight = "encoder.layer.0.attention.self.query.weight"
    bf16_grad = dict(encoder.model.named_parameters())[weight].grad
    assert torch.nn.functional.cosine_similarity(bf16_grad.flatten(), expected[weight].flatten(), dim=0) > 0.95
