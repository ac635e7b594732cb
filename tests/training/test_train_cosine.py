"""Cosine / tau everywhere E5 scores, whatever the start model ships (issue 12, item 1).

The regression: a start model without a Normalize module (paraphrase-MiniLM-L3-v2, the init_model of
configs/pretrain.yaml) was trained on raw dot products / tau, giving first losses of 15.8-24 instead of
about 0.9. Each test pits our loss against a naive cosine computation or against sentence-transformers'
own loss on the same embeddings or weights.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from e5kit.encoder import Encoder
from e5kit.training.gradcache import GradCache
from e5kit.training.losses.distillation import distillation_loss
from e5kit.training.losses.infonce import info_nce_loss

QUERIES = ["what about cell protein", "python file read", "cat sat on the mat", "sun and moon in the sky", "cancer study patients", "search index vector"]
PASSAGES = [
    "the cell protein gene is a study of cells",
    "read a python file and parse the data",
    "the cat sat on a mat with a dog",
    "the sun moon and blue sky",
    "patients with cancer disease in a treatment study",
    "embed text in a vector search index",
]


class _Given(torch.nn.Module):
    """A stand-in sentence-transformers model: returns the embeddings its features carry."""

    def forward(self, features):
        return {"sentence_embedding": features["embedding"]}


def _unnormalised(count, dim=8, seed=0, scale=7.0):
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(count, dim, generator=generator, dtype=torch.float64)


def _naive_cosine_info_nce(queries, passages, tau):
    total = 0.0
    for i in range(len(queries)):
        logits = [F.cosine_similarity(queries[i], passages[j], dim=0).item() / tau for j in range(len(passages))]
        top = max(logits)
        total += -(logits[i] - top - math.log(sum(math.exp(value - top) for value in logits)))
    return total / len(queries)


def test_info_nce_scores_cosine_over_tau_on_unnormalised_embeddings():
    # Given embeddings with norms around 20, as a model without a Normalize module gives
    queries, passages = _unnormalised(6), _unnormalised(6, seed=1)
    # When InfoNCE is computed at E5's tau
    loss = info_nce_loss(queries, passages, queries, passages, tau=0.01)
    # Then it equals the naive cosine / tau cross-entropy, not the raw dot product's
    assert float(loss) == pytest.approx(_naive_cosine_info_nce(queries, passages, 0.01), rel=1e-9)
    raw = F.cross_entropy(queries @ passages.T / 0.01, torch.arange(6))
    assert abs(float(raw) - float(loss)) > 1.0


def test_dot_similarity_is_the_raw_dot_product_when_asked_for():
    queries, passages = _unnormalised(5), _unnormalised(5, seed=1)
    loss = info_nce_loss(queries, passages, queries, passages, tau=0.5, similarity_fn_name="dot")
    assert float(loss) == pytest.approx(float(F.cross_entropy(queries @ passages.T / 0.5, torch.arange(5))), rel=1e-9)
    with pytest.raises(ValueError, match="similarity_fn_name"):
        info_nce_loss(queries, passages, queries, passages, similarity_fn_name="euclidean")


@pytest.mark.parametrize("tau", [0.01, 0.05])
def test_info_nce_equals_sentence_transformers_mnrl(tau):
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    # Given unnormalised embeddings of 6 pairs
    queries, passages = _unnormalised(6, seed=2).float(), _unnormalised(6, seed=3).float()
    # When sentence-transformers' MultipleNegativesRankingLoss (cos_sim, scale = 1 / tau) scores them
    reference = MultipleNegativesRankingLoss(_Given(), scale=1 / tau)
    expected = reference([{"embedding": queries}, {"embedding": passages}], labels=None)
    # Then our InfoNCE gives the same loss
    ours = info_nce_loss(queries, passages, queries, passages, tau=tau)
    assert float(ours) == pytest.approx(float(expected), rel=1e-5)


def test_distillation_infonce_and_kl_score_cosine_over_tau():
    # Given 3 queries, groups of 2 passages, unnormalised, and teacher scores
    queries, passages = _unnormalised(3, seed=4), _unnormalised(6, seed=5)
    teacher = torch.tensor([[2.0, 0.5], [1.0, 1.5], [0.0, -1.0]], dtype=torch.float64)
    # When the distillation loss is computed on them and on their unit vectors
    raw = distillation_loss(queries, passages, group_size=2, teacher_scores=teacher, tau=0.02)
    unit = distillation_loss(F.normalize(queries, dim=-1), F.normalize(passages, dim=-1), group_size=2, teacher_scores=teacher, tau=0.02)
    # Then both are the same: the KL term and InfoNCE both score cosine / tau
    assert float(raw) == pytest.approx(float(unit), rel=1e-9)


def _dropout_off(model):
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def _gradients(model):
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("chunk_size", [2, 6])
def test_gradcache_equals_sentence_transformers_cached_mnrl_without_normalize(tiny_unnormalized_dir, single_torch_thread, chunk_size):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.losses import CachedMultipleNegativesRankingLoss

    tau = 0.05
    # Given the same weights without a Normalize module, as an e5kit Encoder and a SentenceTransformer
    encoder = Encoder.load(tiny_unnormalized_dir, device="cpu")
    assert encoder.prompts == {} and encoder.similarity_fn_name == "cosine"
    _dropout_off(encoder.model.train())
    reference = SentenceTransformer(str(tiny_unnormalized_dir), device="cpu")
    _dropout_off(reference.train())
    # When e5kit's GradCache step and sentence-transformers' CachedMultipleNegativesRankingLoss run one batch
    cache = GradCache(encoder, chunk_size=chunk_size, tau=tau, mask_false_negatives=False)
    ours = cache.step(QUERIES, PASSAGES)
    loss_fn = CachedMultipleNegativesRankingLoss(reference, scale=1 / tau, mini_batch_size=chunk_size)
    expected = loss_fn([reference.tokenize(QUERIES), reference.tokenize(PASSAGES)], labels=None)
    expected.backward()
    # Then the losses and every parameter's gradient agree
    assert ours == pytest.approx(float(expected.detach()), rel=1e-5)
    ours_grads = {name: grad for name, grad in _gradients(encoder.model).items()}
    # The Transformer module holds the Hugging Face model as "auto_model" (sentence-transformers < 6) or "model".
    reference_grads = {name.split(".", 2)[2]: grad for name, grad in _gradients(reference).items()}
    assert ours_grads.keys() == reference_grads.keys()
    for name, grad in ours_grads.items():
        torch.testing.assert_close(grad, reference_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_gradcache_loss_on_a_model_without_normalize_is_the_naive_cosine_over_tau(tiny_unnormalized_dir, single_torch_thread):
    # Given a tiny model without a Normalize module (dropout off, so training and inference embed alike)
    encoder = Encoder.load(tiny_unnormalized_dir, device="cpu")
    _dropout_off(encoder.model.train())
    # When one GradCache step runs at tau 0.01 (chunks of 4 texts)
    loss = GradCache(encoder, chunk_size=4, tau=0.01, mask_false_negatives=False).step(QUERIES, PASSAGES)
    # Then its loss is the naive cosine / tau InfoNCE of the model's raw (unnormalised) embeddings
    raw_queries = torch.from_numpy(encoder.encode(QUERIES, normalize=False)).double()
    raw_passages = torch.from_numpy(encoder.encode(PASSAGES, normalize=False)).double()
    assert loss == pytest.approx(_naive_cosine_info_nce(raw_queries, raw_passages, 0.01), rel=1e-4)


def test_encoder_embeds_unit_vectors_for_a_model_without_normalize(tiny_unnormalized_dir):
    from sentence_transformers import SentenceTransformer

    # Given a sentence-transformers folder without a Normalize module (sentence-transformers scores it by cosine)
    encoder = Encoder.load(tiny_unnormalized_dir, device="cpu")
    reference = SentenceTransformer(str(tiny_unnormalized_dir), device="cpu")
    assert reference.similarity_fn_name == "cosine"
    # When both embed the same texts
    ours = encoder.encode(PASSAGES)
    raw = reference.encode(PASSAGES, convert_to_tensor=True)
    # Then e5kit's vectors are its vectors L2-normalised, so e5kit's dot products are its cosines
    torch.testing.assert_close(torch.from_numpy(ours), F.normalize(raw, dim=-1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.from_numpy(ours @ ours.T), reference.similarity(raw, raw), rtol=1e-4, atol=1e-5)
    # And raw features stay available for E5's classification protocol
    torch.testing.assert_close(torch.from_numpy(encoder.encode(PASSAGES, normalize=False)), raw, rtol=1e-4, atol=1e-4)


def test_a_model_that_declares_dot_is_scored_by_dot(tmp_path, tiny_unnormalized_dir):
    import shutil

    # Given a folder without Normalize that declares similarity_fn_name "dot"
    folder = shutil.copytree(tiny_unnormalized_dir, tmp_path / "dot-model")
    (folder / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {}, "similarity_fn_name": "dot"}))
    # When it is loaded, Then its embeddings stay raw; saving keeps the declaration and adds no Normalize module
    encoder = Encoder.load(folder, device="cpu")
    assert encoder.similarity_fn_name == "dot" and not encoder.normalize
    assert abs(float((encoder.encode(PASSAGES[:1]) ** 2).sum()) - 1.0) > 1e-3
    saved = encoder.save(tmp_path / "saved")
    assert "Normalize" not in (saved / "modules.json").read_text()
    assert json.loads((saved / "config_sentence_transformers.json").read_text())["similarity_fn_name"] == "dot"
    # And an unsupported declaration is refused by name
    (folder / "config_sentence_transformers.json").write_text(json.dumps({"similarity_fn_name": "manhattan"}))
    with pytest.raises(ValueError, match="similarity_fn_name 'manhattan' is not supported"):
        Encoder.load(folder, device="cpu")


@pytest.mark.shared
def test_pretraining_paraphrase_minilm_on_stack_exchange_starts_near_one_and_saves_cosine(shared_dir, tmp_path, write_jsonl):
    """The reported case: paraphrase-MiniLM-L3-v2 (no Normalize module), 16 real Stack Exchange pairs, tau 0.01."""
    import gzip

    from sentence_transformers import SentenceTransformer

    from e5kit.training.metrics import read_metrics
    from e5kit.training.trainer import pretrain

    records = []
    with gzip.open(shared_dir / "data" / "raw" / "stackexchange" / "question_answer_pairs.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            records.append({"query": record["title"], "passage": record["answer_body"]})
            if len(records) == 16:
                break
    pairs = write_jsonl(tmp_path / "pairs" / "se.jsonl", records)
    # When it is pre-trained for 2 steps of batch 16 at E5's tau
    final = pretrain(
        {
            "init_model": str(shared_dir / "models" / "paraphrase-MiniLM-L3-v2"),
            "data": {"paths": [str(pairs)]},
            "output_dir": str(tmp_path / "run"),
            "max_steps": 2,
            "batch_size": 16,
            "chunk_size": 8,
            "warmup_steps": 0,
            "lr": 1e-5,
            "tau": 0.01,
            "passage_max_length": 64,
            "checkpoint_every": 0,
        },
        show_progress=False,
    )
    # Then the first loss is a cosine / tau loss (about 0.9; raw dot products gave 15.8-24)
    losses = [record["loss"] for record in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in record]
    assert 0.0 < losses[0] < 3.0, losses
    # And the saved model declares cosine twice, so sentence-transformers scores it the same way
    assert "sentence_transformers.models.Normalize" in (final / "modules.json").read_text()
    assert json.loads((final / "config_sentence_transformers.json").read_text())["similarity_fn_name"] == "cosine"
    reloaded = SentenceTransformer(str(final), device="cpu")
    assert reloaded.similarity_fn_name == "cosine"
    norms = torch.linalg.norm(reloaded.encode(["passage: a beer question"], convert_to_tensor=True), dim=-1)
    torch.testing.assert_close(norms, torch.ones(1), rtol=1e-5, atol=1e-5)
