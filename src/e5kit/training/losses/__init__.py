"""Contrastive losses, one per module."""

from e5kit.training.losses.infonce import info_nce_loss

__all__ = ["info_nce_loss"]
