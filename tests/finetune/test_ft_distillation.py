"""KL(teacher || student) + alpha * InfoNCE against a naive float64 implementation with explicit loops."""

from __future__ import annotations

import math

import pytest
import torch

from e5kit.training.losses.distillation import distillation_loss


def naive_loss(queries, passages, group, offset, teacher, has_teacher, alpha, tau, teacher_t, ignore):
    """Loops over queries and columns; float64 throughout; scores are cosine / tau."""
    total = 0.0
    for i in range(queries.shape[0]):
        target = (offset + i) * group
        logits = [float(queries[i] @ passages[j] / (queries[i].norm() * passages[j].norm())) / tau for j in range(passages.shape[0])]
        kept = [logits[j] for j in range(len(logits)) if ignore is None or not ignore[i][j]]
        info_nce = -logits[target] + math.log(sum(math.exp(x) for x in kept))
        if teacher is None or not has_teacher[i]:
            total += info_nce
            continue
        student = [logits[target + k] for k in range(group)]
        teacher_row = [float(teacher[i][k]) / teacher_t for k in range(group)]
        student_norm = math.log(sum(math.exp(x) for x in student))
        teacher_norm = math.log(sum(math.exp(x) for x in teacher_row))
        kl = sum(math.exp(t - teacher_norm) * ((t - teacher_norm) - (s - student_norm)) for t, s in zip(teacher_row, student))
        total += kl + alpha * info_nce
    return total / queries.shape[0]


def random_case(seed, local=4, world=3, group=4, dim=8):
    generator = torch.Generator().manual_seed(seed)
    queries = torch.nn.functional.normalize(torch.randn(local, dim, generator=generator, dtype=torch.float64), dim=-1)
    passages = torch.nn.functional.normalize(torch.randn(local * world * group, dim, generator=generator, dtype=torch.float64), dim=-1)
    teacher = torch.randn(local, group, generator=generator, dtype=torch.float64) * 3
    return queries, passages, teacher


@pytest.mark.parametrize(
    "has_teacher, use_ignore, offset",
    [([True] * 4, False, 0), ([True, False, True, False], True, 4), ([False] * 4, False, 8), (None, True, 0)],
)
def test_loss_and_gradients_match_naive_loops(has_teacher, use_ignore, offset):
    # Given queries of one process (rank offset/4 of 3), global passages in groups of 4 and teacher scores
    queries, passages, teacher = random_case(seed=offset + len(str(has_teacher)))
    group, alpha, tau, teacher_t = 4, 0.2, 0.05, 2.0
    ignore = None
    if use_ignore:
        ignore = torch.zeros(4, passages.shape[0], dtype=torch.bool)
        ignore[0, 5] = ignore[2, 1] = ignore[3, 30] = True  # never a target column
    flags = torch.tensor(has_teacher) if has_teacher is not None else None
    teacher_arg = teacher if has_teacher is not None else None
    # When the vectorised loss and the naive loops are computed
    queries.requires_grad_()
    loss = distillation_loss(
        queries, passages, group_size=group, offset=offset, teacher_scores=teacher_arg, has_teacher=flags,
        alpha=alpha, tau=tau, teacher_temperature=teacher_t, ignore=ignore,
    )
    loss.backward()
    expected = naive_loss(queries.detach(), passages, group, offset, teacher_arg, has_teacher, alpha, tau, teacher_t, ignore)
    # Then the values agree to float64 precision, and so does the gradient (finite differences of the naive loss)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(expected, rel=1e-10, abs=1e-10)
    step = 1e-6
    for row, col in [(0, 0), (1, 3), (3, 7)]:
        shifted = queries.detach().clone()
        shifted[row, col] += step
        up = naive_loss(shifted, passages, group, offset, teacher_arg, has_teacher, alpha, tau, teacher_t, ignore)
        shifted[row, col] -= 2 * step
        down = naive_loss(shifted, passages, group, offset, teacher_arg, has_teacher, alpha, tau, teacher_t, ignore)
        assert queries.grad[row, col].item() == pytest.approx((up - down) / (2 * step), rel=1e-4, abs=1e-6)


def test_teacher_agreeing_with_student_leaves_only_alpha_infonce():
    # Given teacher scores equal to the student's own group logits (same temperature)
    queries, passages, _ = random_case(seed=7, world=1)
    tau = 0.1
    logits = (queries @ passages.T / tau).reshape(4, 4, 4)[torch.arange(4), torch.arange(4)]  # (b, g) own groups
    # When the loss is computed with and without teacher scores
    distilled = distillation_loss(queries, passages, group_size=4, teacher_scores=logits, tau=tau, teacher_temperature=1.0, alpha=0.2)
    plain = distillation_loss(queries, passages, group_size=4, tau=tau)
    # Then KL is zero and the loss is alpha times InfoNCE
    assert distilled.item() == pytest.approx(0.2 * plain.item(), rel=1e-9)
