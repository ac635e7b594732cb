"""The fine-tuning stage on the pre-training engine: config, sampler, GradCache with groups, a short run and its resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from e5kit.config import ConfigError, load_config
from e5kit.data.finetune_formats import FinetuneExample
from e5kit.training.finetune import FinetuneConfig, FinetuneSampler, false_negative_mask, finetune
from e5kit.training.gradcache import GradCache
from e5kit.training.losses.distillation import distillation_loss


def test_defaults_are_the_papers_and_bad_fields_are_named(tmp_path):
    config = FinetuneConfig(init_model="m", output_dir=tmp_path, data={"datasets": [{"name": "a", "format": "flag", "path": "a.jsonl"}]})
    assert (config.alpha, config.hard_negatives, config.batch_size, config.lr, config.warmup_steps) == (0.2, 7, 256, 2e-5, 400)
    assert (config.query_max_length, config.passage_max_length, config.epochs, config.tau) == (192, 192, 3.0, 0.01)
    base = ["init_model=m", f"output_dir={tmp_path}"]
    with pytest.raises(ConfigError, match=r"invalid finetune config: data.datasets.0.format"):
        load_config(FinetuneConfig, None, base + ["data.datasets=[{name: a, format: csv, path: x}]"])
    with pytest.raises(ConfigError, match="repeated: a"):
        load_config(FinetuneConfig, None, base + ["data.datasets=[{name: a, format: nli, path: x}, {name: a, format: nli, path: y}]"])
    with pytest.raises(ConfigError, match="symmetric"):
        load_config(FinetuneConfig, None, base + ["data.datasets=[{name: a, format: nli, path: x}]", "symmetric=true"])


def scored_example(index: int, negatives: int) -> FinetuneExample:
    """Teacher score of a text = its number, so the alignment of scores and passages can be checked."""
    positives = [f"pos {index} {k}" for k in range(2)]
    negative_texts = [f"neg {index} {k}" for k in range(negatives)]
    return FinetuneExample(
        query=f"query {index}",
        positives=positives,
        negatives=negative_texts,
        positive_scores=[float(1000 * index + k) for k in range(2)],
        negative_scores=[float(1000 * index + 100 + k) for k in range(negatives)],
    )


def score_of(text: str) -> float:
    kind, index, k = text.split()
    return float(1000 * int(index) + (100 if kind == "neg" else 0) + int(k))


def make_sampler(seed: int = 0) -> FinetuneSampler:
    datasets = {
        "scored": [scored_example(i, negatives=5) for i in range(7)],
        "short": [scored_example(i, negatives=1) for i in range(10, 15)],
        "unused": [scored_example(i, negatives=5) for i in range(20, 23)],
    }
    return FinetuneSampler(datasets, {"scored": 2.0, "short": 1.0, "unused": 0.0}, batch_size=6, hard_negatives=3, seed=seed)


def test_sampler_groups_keep_teacher_scores_aligned_and_never_use_a_positive_as_negative():
    sampler = make_sampler()
    for _ in range(10):
        for group in sampler.next_batch():
            # Then the positive comes first, negatives are never one of the query's positives
            assert group.passages[0] in group.positives and len(group.passages) == 4
            assert not set(group.passages[1:]) & set(group.positives)
            assert group.source in {"scored", "short"}
            if group.source == "scored":
                assert group.teacher_scores == [score_of(text) for text in group.passages]
            else:  # one hard negative only: two random passages of the dataset fill up, no teacher scores
                assert group.teacher_scores is None
    assert sampler.counts["groups trained on InfoNCE alone"] > 0


def test_sampler_state_resumes_the_exact_batch_sequence():
    sampler = make_sampler(seed=3)
    for _ in range(4):
        sampler.next_batch()
    state = json.loads(json.dumps(sampler.state_dict()))
    expected = [sampler.next_batch() for _ in range(3)]
    resumed = make_sampler(seed=3)
    resumed.load_state_dict(state)
    assert [resumed.next_batch() for _ in range(3)] == expected


def test_false_negative_mask_hides_copies_of_a_rows_positives_but_not_its_target():
    sampler = make_sampler()
    batch = sampler.next_batch()
    batch[1].passages[2] = batch[0].positives[1]  # query 1's negative is a copy of query 0's other positive
    batch[2].passages[0] = batch[0].positives[0]
    mask = false_negative_mask(batch, range(0, 3), torch.device("cpu"))
    assert mask[0, 4 + 2] and not mask[0, 0]
    assert mask[0].sum() >= 1 and not mask[1, 4]
    expected_row0 = [text in batch[0].positives for example in batch for text in example.passages]
    expected_row0[0] = False
    assert mask[0].tolist() == expected_row0


def test_copies_of_a_positive_differing_only_in_case_width_or_spacing_are_copies_in_fine_tuning():
    # Given a dataset whose pool holds a copy of q0's positive written in upper case with extra spaces,
    # and an example with too few hard negatives (random fill runs)
    positive = "pos 0 0 mitosis divides a cell"
    copy = "  POS 0 0   MITOSIS divides a\u00a0cell\u200b "
    examples = [FinetuneExample(query="q0", positives=[positive], negatives=[])]
    examples += [FinetuneExample(query=f"q{i}", positives=[copy if i == 1 else f"pos {i} 0 text"], negatives=[]) for i in range(1, 6)]
    sampler = FinetuneSampler({"d": examples}, {"d": 1.0}, batch_size=6, hard_negatives=4, seed=0)
    # When groups are drawn many times
    for seed in range(30):
        group = sampler.group(examples[0], "d", np.random.default_rng(seed))
        # Then the copy is never a random negative of q0
        assert copy not in group.passages[1:] and len(group.passages) == 5
    # And in the loss mask, the copy in another row is hidden from q0 as a false negative
    batch = [sampler.group(example, "d", np.random.default_rng(0)) for example in examples[:2]]
    mask = false_negative_mask(batch, range(0, 1), torch.device("cpu"))
    assert mask[0, 5] and not mask[0, 0]


def test_gradcache_with_groups_gives_the_plain_batch_gradient(tiny_bert_dir):
    # Given a tiny encoder without dropout, 5 queries with groups of 3 passages and partial teacher scores
    from e5kit.encoder import Encoder

    encoder = Encoder.load(tiny_bert_dir, device="cpu")
    encoder.model.train()
    for module in encoder.model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    queries = [f"cell gene {'protein ' * i}" for i in range(5)]
    passages = [f"{word} data {'the ' * (i + k)}" for i in range(5) for k, word in enumerate(["cancer", "cat", "sky"])]
    teacher = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    has_teacher = torch.tensor([True, False, True, True, False])

    def loss(q, p, *texts):
        return distillation_loss(q, p, group_size=3, teacher_scores=teacher, has_teacher=has_teacher, alpha=0.2, tau=0.05)

    # When the gradient is computed in one plain pass and with GradCache in chunks of 2
    encoder.model.zero_grad()
    plain = loss(encoder.embed(encoder.tokenize(queries, "query")), encoder.embed(encoder.tokenize(passages, "passage")))
    plain.backward()
    expected = {name: p.grad.clone() for name, p in encoder.model.named_parameters() if p.grad is not None}
    encoder.model.zero_grad()
    cached = GradCache(encoder, chunk_size=2, query_max_length=64, passage_max_length=64).step(queries, passages, loss=loss)
    # Then loss and gradients agree
    assert cached == pytest.approx(plain.item(), rel=1e-5)
    for name, parameter in encoder.model.named_parameters():
        if name in expected:
            assert torch.allclose(parameter.grad, expected[name], atol=1e-5), name


def write_data(tmp_path, write_jsonl):
    flag = write_jsonl(tmp_path / "scored.jsonl", [scored_example(i, negatives=3).to_json() for i in range(12)])
    nli = tmp_path / "nli.tsv"
    rows = ["premise\thypothesis\tlabel"] + [f"cat {i} sat\tdog {i} sat\tentailment\ncat {i} sat\tsun {i}\tcontradiction" for i in range(8)]
    nli.write_text("\n".join(rows) + "\n")
    return [{"name": "msmarco", "format": "flag", "path": str(flag)}, {"name": "nli", "format": "nli", "path": str(nli), "weight": 0.5}]


def run_config(tmp_path, tiny_bert_dir, datasets, name, **overrides):
    return {
        "init_model": str(tiny_bert_dir),
        "output_dir": str(tmp_path / name),
        "data": {"datasets": datasets},
        "batch_size": 4,
        "chunk_size": 3,
        "hard_negatives": 2,
        "lr": 1e-3,
        "warmup_steps": 1,
        "query_max_length": 32,
        "passage_max_length": 32,
        **overrides,
    }


def losses(run):
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_short_run_and_its_resume_match_an_uninterrupted_run(tmp_path, tiny_bert_dir, write_jsonl):
    # Given a mixture of a teacher-scored FlagEmbedding file and an NLI file
    datasets = write_data(tmp_path, write_jsonl)
    # When one run goes 4 steps straight, and another loses everything after its step-2 checkpoint and resumes
    import shutil

    final = finetune(run_config(tmp_path, tiny_bert_dir, datasets, "straight", max_steps=4, checkpoint_every=0), show_progress=False)
    interrupted = run_config(tmp_path, tiny_bert_dir, datasets, "resumed", max_steps=4, checkpoint_every=2)
    finetune(interrupted, show_progress=False)
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "step-00000004")
    finetune(interrupted, resume=True, show_progress=False)
    # Then the loss sequences are equal, and the final model loads with its card describing the mixture
    assert losses(tmp_path / "resumed") == pytest.approx(losses(tmp_path / "straight"), rel=1e-5)
    from e5kit.encoder import Encoder

    encoder = Encoder.load(final)
    assert encoder.normalize and encoder.prompts == {"query": "query: ", "passage": "passage: "}
    card = (final / "README.md").read_text()
    assert "| msmarco | 12 |" in card and "| nli | 8 |" in card and "0.2 x InfoNCE" in card


def test_epochs_set_the_number_of_steps(tmp_path, tiny_bert_dir, write_jsonl):
    datasets = write_data(tmp_path, write_jsonl)
    finetune(run_config(tmp_path, tiny_bert_dir, datasets, "epochs", epochs=0.5, checkpoint_every=0), show_progress=False)
    assert len(losses(tmp_path / "epochs")) == 3  # ceil(0.5 * 20 examples / 4)
