"""Vision Transformer (Dosovitskiy et al. 2021): images as sequences of patches.

A strided convolution (kernel = stride = patch size) embeds each non-overlapping patch;
a class token (``pool: cls``) or the mean over patches (``pool: mean``) summarises the
image after pre-norm Transformer blocks with learned position embeddings, and a linear
head classifies it. The blocks are ``research.models.transformer``'s, so the same
partition rules split their heads and MLPs over the ``tensor`` axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import nnx

from research.errors import ConfigError
from research.models.layers import check_rate, choice, image_shape
from research.models.transformer import POOLS, ClassToken, LearnedPositions, Stack, pool_sequence


class ViT(nnx.Module):
    """``model(images (B, H, W, C)) -> (B, num_outputs)``."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        patch_size: int,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_dim: int,
        pool: str,
        dropout: float,
        scan_layers: bool = False,
        remat: str = "none",
        *,
        rngs: nnx.Rngs,
    ):
        height, width, channels = image_shape("ViT", input_shape)
        if patch_size < 1 or height % patch_size or width % patch_size:
            raise ConfigError(
                f"model.patch_size={patch_size} does not divide the {height}x{width} images: "
                "pick a divisor of both sides"
            )
        self.pool = choice("pool", pool, POOLS)
        self.dim = dim
        patch = (patch_size, patch_size)
        self.patches = nnx.Conv(channels, dim, patch, strides=patch, padding="VALID", rngs=rngs)
        self.cls = ClassToken(dim) if pool == "cls" else None
        num_patches = (height // patch_size) * (width // patch_size)
        self.positions = LearnedPositions(num_patches + (self.cls is not None), dim, rngs=rngs)
        self.dropout = nnx.Dropout(check_rate("dropout", dropout), rngs=rngs)
        self.transformer = Stack(
            dim,
            depth,
            num_heads,
            mlp_dim,
            dropout,
            False,
            False,
            scan_layers=scan_layers,
            remat=remat,
            rngs=rngs,
        )
        self.head = nnx.Linear(dim, num_outputs, rngs=rngs)

    def __call__(self, images: jax.Array) -> jax.Array:
        x = self.patches(images)  # (B, H / p, W / p, dim)
        x = x.reshape(x.shape[0], -1, self.dim)
        if self.cls is not None:
            x = self.cls(x)
        x = self.transformer(self.dropout(self.positions(x)))
        return self.head(pool_sequence(x, None, self.pool))
