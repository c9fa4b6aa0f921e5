"""An encoder-decoder Transformer (Vaswani et al. 2017, pre-norm) for sequence-to-sequence tasks.

The encoder is ``transformer.Stack`` without a causal mask, reading the source with its
padding masked out. Each decoder block is the pre-norm block of ``transformer.py`` with a
cross-attention between its self-attention and its MLP: ``x + self(LN(x))`` (causal),
``x + cross(LN(x), memory)`` (keys and values from the encoder's output, padded source
positions masked), ``x + mlp(LN(x))``. Source and target share one vocabulary and one
embedding, which the output projection reuses (tied, as in the paper).

Training reads the whole target at once (teacher forcing); decoding
(``research/models/seq2seq_decode.py``) calls ``decode`` on the tokens written so far.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from research.models.layers import check_rate, choice
from research.models.stacking import apply_blocks, check_remat, make_blocks
from research.models.transformer import (
    EMBED_INIT,
    POSITIONS,
    Attention,
    FeedForward,
    LearnedPositions,
    Stack,
    attention_core,
    check_heads,
)


def key_mask(source_mask: jax.Array) -> jax.Array:
    """(B, S) real-source flags -> the (B, 1, 1, S) mask every query and head shares."""
    return source_mask[:, None, None, :].astype(bool)


class CrossAttention(nnx.Module):
    """Queries from the decoder, keys and values from the encoder's output (``memory``)."""

    def __init__(self, dim: int, num_heads: int, *, rngs: nnx.Rngs):
        head_dim = check_heads(dim, num_heads, False)
        self.query = nnx.LinearGeneral(dim, (num_heads, head_dim), rngs=rngs)
        self.kv = nnx.LinearGeneral(dim, (2, num_heads, head_dim), rngs=rngs)
        self.out = nnx.LinearGeneral((num_heads, head_dim), dim, axis=(-2, -1), rngs=rngs)

    def keys_values(self, memory: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(keys, values), each (B, S, heads, head_dim): computed once per source when decoding."""
        kv = self.kv(memory)  # (B, S, 2, N, H)
        return kv[:, :, 0], kv[:, :, 1]

    def __call__(
        self, x: jax.Array, memory: jax.Array | None, source_mask: jax.Array, kv: tuple | None = None
    ) -> jax.Array:
        k, v = self.keys_values(memory) if kv is None else kv
        return self.out(attention_core(self.query(x), k, v, key_mask(source_mask), False))

    def weights(self, x: jax.Array, memory: jax.Array, source_mask: jax.Array) -> jax.Array:
        """(B, heads, T, S) attention probabilities, spelt out (the fused core does not return them)."""
        q, k = self.query(x), self.keys_values(memory)[0]
        scores = jnp.einsum("btnh,bsnh->bnts", q, k).astype(jnp.float32) / jnp.sqrt(q.shape[-1])
        return jax.nn.softmax(jnp.where(key_mask(source_mask), scores, -jnp.inf), axis=-1)


class DecoderBlock(nnx.Module):
    """Causal self-attention, cross-attention to the source, MLP; each pre-norm and residual."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        dropout: float,
        rotary_positions: bool,
        *,
        rngs: nnx.Rngs,
    ):
        self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
        self.attention = Attention(dim, num_heads, True, rotary_positions, rngs=rngs)
        self.norm_cross = nnx.LayerNorm(dim, rngs=rngs)
        self.cross = CrossAttention(dim, num_heads, rngs=rngs)
        self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
        self.mlp = FeedForward(dim, mlp_dim, rngs=rngs)
        self.dropout = nnx.Dropout(check_rate("dropout", dropout), rngs=rngs)

    def __call__(
        self, x: jax.Array, memory: jax.Array | None, source_mask: jax.Array, kv: tuple | None = None
    ) -> jax.Array:
        """``kv``: the cross-attention's keys and values of ``memory``, computed beforehand."""
        x = x + self.dropout(self.attention(self.norm1(x)))
        x = x + self.dropout(self.cross(self.norm_cross(x), memory, source_mask, kv))
        return x + self.dropout(self.mlp(self.norm2(x)))


def layers(blocks: nnx.Module, scan: bool) -> list[nnx.Module]:
    """The blocks one by one: the list itself, or each layer of a stacked (scanned) block."""
    if not scan:
        return list(blocks)
    graphdef, state = nnx.split(blocks)
    depth = jax.tree.leaves(state)[0].shape[0]
    return [nnx.merge(graphdef, jax.tree.map(lambda a, i=i: a[i], state)) for i in range(depth)]


class Seq2SeqTransformer(nnx.Module):
    """``model(source (B, S) int, target_in (B, T) int) -> logits (B, T, vocab_size)``.

    ``pad_id`` marks the source's padding: never attended to, so its tokens change nothing.
    """

    def __init__(
        self,
        vocab_size: int,
        max_source_len: int,
        max_target_len: int,
        dim: int,
        encoder_depth: int,
        decoder_depth: int,
        num_heads: int,
        mlp_dim: int,
        dropout: float,
        positions: str,
        pad_id: int = 0,
        scan_layers: bool = False,
        remat: str = "none",
        *,
        rngs: nnx.Rngs,
    ):
        rotary_positions = choice("positions", positions, POSITIONS) == "rotary"
        self.pad_id, self.max_target_len = pad_id, max_target_len
        self.scan, self.remat = bool(scan_layers), check_remat(remat)
        self.embed = nnx.Embed(vocab_size, dim, embedding_init=EMBED_INIT, rngs=rngs)
        learned = not rotary_positions
        self.source_positions = LearnedPositions(max_source_len, dim, rngs=rngs) if learned else None
        self.target_positions = LearnedPositions(max_target_len, dim, rngs=rngs) if learned else None
        self.dropout = nnx.Dropout(check_rate("dropout", dropout), rngs=rngs)
        self.encoder = Stack(
            dim, encoder_depth, num_heads, mlp_dim, dropout, False, rotary_positions,
            scan_layers=scan_layers, remat=remat, rngs=rngs,
        )  # fmt: skip

        def block(rngs: nnx.Rngs) -> DecoderBlock:
            return DecoderBlock(dim, num_heads, mlp_dim, dropout, rotary_positions, rngs=rngs)

        self.blocks = make_blocks(block, decoder_depth, self.scan, rngs)
        self.norm = nnx.LayerNorm(dim, rngs=rngs)

    def _embed(self, tokens: jax.Array, positions: LearnedPositions | None) -> jax.Array:
        x = self.embed(tokens)
        return self.dropout(x if positions is None else positions(x))

    def encode(self, source: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(memory (B, S, dim), source mask (B, S): 1 on real tokens)."""
        mask = (source != self.pad_id).astype(jnp.float32)
        return self.encoder(self._embed(source, self.source_positions), mask), mask

    def decode(self, memory: jax.Array, source_mask: jax.Array, target_in: jax.Array) -> jax.Array:
        """Logits (B, T, vocab) of each next target token, from the tokens so far (<s> first)."""
        x = self._embed(target_in, self.target_positions)
        x = apply_blocks(self.blocks, x, memory, source_mask, scan=self.scan, remat=self.remat)
        return self.embed.attend(self.norm(x))

    def __call__(self, source: jax.Array, target_in: jax.Array) -> jax.Array:
        return self.decode(*self.encode(source), target_in)

    def memory_keys_values(self, memory: jax.Array) -> list[tuple[jax.Array, jax.Array]]:
        """Each decoder block's cross-attention keys and values: what decoding reuses at every step."""
        return [block.cross.keys_values(memory) for block in layers(self.blocks, self.scan)]

    def decode_cached(self, kvs: list[tuple], source_mask: jax.Array, target_in: jax.Array) -> jax.Array:
        """``decode`` with the cross-attention's keys and values of ``memory_keys_values``."""
        x = self._embed(target_in, self.target_positions)
        for block, kv in zip(layers(self.blocks, self.scan), kvs, strict=True):
            x = block(x, None, source_mask, kv)
        return self.embed.attend(self.norm(x))

    def cross_attention(self, source: jax.Array, target_in: jax.Array) -> jax.Array:
        """(B, T, S) cross-attention of the last decoder block, averaged over its heads."""
        memory, mask = self.encode(source)
        x = self._embed(target_in, self.target_positions)
        *before, last = layers(self.blocks, self.scan)
        for block in before:
            x = block(x, memory, mask)
        x = x + last.attention(last.norm1(x))
        return last.cross.weights(last.norm_cross(x), memory, mask).mean(axis=1)
