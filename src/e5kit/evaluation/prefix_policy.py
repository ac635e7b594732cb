"""E5's prefix policy: which role (and so which prefix) each side of each task is embedded with.

E5 embeds retrieval queries as "query: ..." and documents as "passage: ...", and every text of a
symmetric task (STS, classification, clustering, pair classification, reranking) as "query: ...".
Roles go through the model's own prompts, so a model without prompts (all-MiniLM) gets no prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Task families and their E5 roles: (role of queries / first texts, role of documents / second texts).
E5_ROLES: dict[str, tuple[str, str]] = {
    "retrieval": ("query", "passage"),
    "reranking": ("query", "query"),
    "sts": ("query", "query"),
    "classification": ("query", "query"),
    "clustering": ("query", "query"),
    "pair_classification": ("query", "query"),
}


@dataclass(frozen=True)
class PrefixPolicy:
    """The roles a task embeds its two sides with.

    Attributes:
        query_role: Role of queries (retrieval, reranking) or of every text of a one-sided task, and
            of the first text of a pair.
        passage_role: Role of documents (retrieval), candidates (reranking) or the second text of a pair.
    """

    query_role: str
    passage_role: str

    def describe(self, encoder) -> dict[str, str]:
        """The roles and the literal prefixes ``encoder`` adds for them (for result files)."""
        if encoder is None:
            return {"query_role": self.query_role, "passage_role": self.passage_role}
        return {
            "query_role": self.query_role,
            "passage_role": self.passage_role,
            "query_prefix": encoder.prompt_for(self.query_role),
            "passage_prefix": encoder.prompt_for(self.passage_role),
        }


def policy_for(task: str, query_role: str | None = None, passage_role: str | None = None) -> PrefixPolicy:
    """E5's policy for ``task``, with either side overridable (e.g. "none" for raw text).

    Raises:
        ValueError: for an unknown task family.
    """
    if task not in E5_ROLES:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(E5_ROLES)}")
    default_query, default_passage = E5_ROLES[task]
    return PrefixPolicy(query_role or default_query, passage_role or default_passage)
