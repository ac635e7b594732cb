"""Pair filters, one per module: per-pair ones (clean, length, language, perplexity, decontaminate) run in
the shard workers; the dedup ones (exact_dedup, near_dedup) run in the global pass over all shards."""
