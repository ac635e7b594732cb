"""Contrastive pre-training: config, InfoNCE loss, GradCache, cross-process negatives, checkpoints."""
