"""E5's fine-tuning loss (section 3): KL(teacher || student) over each query's group + alpha * InfoNCE.

Every query comes with a group of ``g = 1 + hard negatives`` passages, its positive first. The
passages of the whole (global) batch are laid out group after group, so query i's positive is
column ``i * g``:

- InfoNCE: query i against every passage of the batch (its positive, its own hard negatives and
  every other query's positive and hard negatives), scores cosine / tau.
- KL: over query i's own group only, between the teacher's distribution softmax(teacher / T_t) and
  the student's softmax(cosine / tau).

Per query the loss is ``KL + alpha * InfoNCE`` when it has teacher scores and ``InfoNCE`` alone when it
has none (e.g. NLI, which has no re-ranker scores); the result is the mean over local queries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from e5kit.training.losses.similarity import scoring_embeddings


def distillation_loss(
    queries: torch.Tensor,
    all_passages: torch.Tensor,
    *,
    group_size: int,
    offset: int = 0,
    teacher_scores: torch.Tensor | None = None,
    has_teacher: torch.Tensor | None = None,
    alpha: float = 0.2,
    tau: float = 0.01,
    similarity_fn_name: str = "cosine",
    teacher_temperature: float = 1.0,
    ignore: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over local queries of KL(teacher || student) + alpha * InfoNCE (InfoNCE alone without teacher).

    Args:
        queries: (b, dim) local query embeddings (normalised here for cosine).
        all_passages: (B * g, dim) passages of the global batch, group after group; row ``j * g`` is
            the positive of global query j, the next ``g - 1`` rows its hard negatives.
        group_size: g, passages per query.
        offset: Global index of local query 0 (rank * b under DDP).
        teacher_scores: (b, g) teacher scores of each local query's group (positive first); rows
            without scores may hold anything.
        has_teacher: (b,) bool, True where ``teacher_scores`` holds real scores; None means all rows
            have them when ``teacher_scores`` is given, none otherwise.
        alpha: Weight of InfoNCE next to the KL term.
        tau: Student temperature.
        similarity_fn_name: "cosine" (E5) or "dot"; the student's score in both terms.
        teacher_temperature: Teacher temperature T_t.
        ignore: (b, B * g) bool, True for columns to leave out of query i's InfoNCE (false negatives:
            copies of its positives); never set on the target column.

    Returns:
        Scalar loss (float32, or float64 for float64 inputs).
    """
    queries, all_passages = scoring_embeddings(queries, similarity_fn_name), scoring_embeddings(all_passages, similarity_fn_name)
    local = queries.shape[0]
    dtype = torch.promote_types(queries.dtype, torch.float32)  # half-precision embeddings: score in fp32
    scores = queries.to(dtype) @ all_passages.to(dtype).T / tau  # (b, B * g)
    targets = (offset + torch.arange(local, device=queries.device)) * group_size  # (b,) positive columns
    contrastive_scores = scores if ignore is None else scores.masked_fill(ignore, torch.finfo(dtype).min)
    info_nce = F.cross_entropy(contrastive_scores, targets, reduction="none")  # (b,)
    if teacher_scores is None:
        return info_nce.mean()
    if has_teacher is None:
        has_teacher = torch.ones(local, dtype=torch.bool, device=queries.device)
    columns = targets[:, None] + torch.arange(group_size, device=queries.device)[None, :]  # (b, g)
    student_log_probs = F.log_softmax(scores.gather(1, columns), dim=-1)  # (b, g)
    teacher_log_probs = F.log_softmax(teacher_scores.to(dtype) / teacher_temperature, dim=-1)  # (b, g)
    kl = (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(dim=-1)  # (b,)
    per_query = torch.where(has_teacher, kl + alpha * info_nce, info_nce)  # (b,)
    return per_query.mean()
