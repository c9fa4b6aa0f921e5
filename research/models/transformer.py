"""Transformers: one pre-norm block shared by a text encoder, a causal language model and the ViT.

A block is ``x + attention(LN(x))`` then ``x + mlp(LN(x))`` (GPT-2, ViT); the stack ends
with a LayerNorm. The attention core is ``jax.nn.dot_product_attention`` on (B, T, heads,
head_dim) tensors: a GPU gets the fused cuDNN kernel in 16-bit precision, everything else
XLA's, from the same code. Positions are learned embeddings or rotary (RoFormer), applied
to queries and keys so that attention scores depend on relative offsets only.

Parameter paths are named for the partition rules of ``conf/mesh/tensor_parallel.yaml``:
``attention/qkv/kernel`` (dim, 3, heads, head_dim) and ``attention/out/kernel`` (heads,
head_dim, dim) split the heads over ``tensor``; ``mlp/up`` is column- and ``mlp/down``
row-parallel (Megatron), so a block needs one all-reduce per half.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from research.errors import ConfigError
from research.models.layers import check_rate, choice, masked_mean
from research.models.stacking import apply_blocks, check_remat, make_blocks

POSITIONS = ("learned", "rotary")
POOLS = ("cls", "mean")
EMBED_INIT = nnx.initializers.normal(0.02)  # GPT-2's and ViT's embedding initialisation
ROPE_BASE = 10_000.0  # RoFormer's wavelength base for rotary positions
FUSED_DTYPES = (jnp.bfloat16, jnp.float16)  # what cuDNN's fused attention accepts


def rotary(x: jax.Array, positions: jax.Array) -> jax.Array:
    """Rotate feature pairs of ``x`` (B, T, N, H) by angles proportional to ``positions`` (T,).

    Rotating both queries and keys makes q_i . k_j a function of i - j alone.
    """
    half = x.shape[-1] // 2
    freqs = ROPE_BASE ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = positions.astype(jnp.float32)[:, None] * freqs
    sin, cos = jnp.sin(angles)[:, None, :], jnp.cos(angles)[:, None, :]  # (T, 1, half): over heads
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1).astype(x.dtype)


def attention_core(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, causal: bool
) -> jax.Array:
    """``jax.nn.dot_product_attention`` on (B, T, N, H): cuDNN's fused flash attention on a GPU with
    16-bit inputs (``precision=bfloat16``), XLA's where cuDNN is absent or refuses the shapes."""
    if jax.default_backend() == "gpu" and q.dtype in FUSED_DTYPES:
        try:
            return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal, implementation="cudnn")
        except (ValueError, NotImplementedError, RuntimeError):  # raised while tracing: fall back
            pass
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal, implementation="xla")


def check_heads(dim: int, num_heads: int, rotary_positions: bool) -> int:
    """The head dimension; heads must split ``dim`` evenly (and into pairs, for rotary)."""
    if num_heads < 1 or dim % num_heads:
        raise ConfigError(f"model.num_heads={num_heads} must divide model.dim={dim}")
    head_dim = dim // num_heads
    if rotary_positions and head_dim % 2:
        raise ConfigError(
            f"model.positions=rotary needs an even head size; model.dim / num_heads = {head_dim}"
        )
    return head_dim


class Attention(nnx.Module):
    """Multi-head self-attention: one fused q/k/v projection, the attention core, an output projection."""

    def __init__(self, dim: int, num_heads: int, causal: bool, rotary_positions: bool, *, rngs: nnx.Rngs):
        head_dim = check_heads(dim, num_heads, rotary_positions)
        self.qkv = nnx.LinearGeneral(dim, (3, num_heads, head_dim), rngs=rngs)
        self.out = nnx.LinearGeneral((num_heads, head_dim), dim, axis=(-2, -1), rngs=rngs)
        self.causal, self.rotary = causal, rotary_positions

    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        qkv = self.qkv(x)  # (B, T, 3, N, H)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if self.rotary:
            positions = jnp.arange(x.shape[1])
            q, k = rotary(q, positions), rotary(k, positions)
        keys = None if mask is None else mask[:, None, None, :].astype(bool)  # (B, 1, 1, S): real keys
        return self.out(attention_core(q, k, v, keys, self.causal))


class FeedForward(nnx.Module):
    """Linear up to ``mlp_dim`` -> GELU -> Linear back to ``dim``."""

    def __init__(self, dim: int, mlp_dim: int, *, rngs: nnx.Rngs):
        self.up = nnx.Linear(dim, mlp_dim, rngs=rngs)
        self.down = nnx.Linear(mlp_dim, dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down(jax.nn.gelu(self.up(x)))


class Block(nnx.Module):
    """Pre-norm Transformer block; ``causal`` lets each position attend only to itself and earlier ones."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        dropout: float,
        causal: bool,
        rotary_positions: bool,
        *,
        rngs: nnx.Rngs,
    ):
        self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
        self.attention = Attention(dim, num_heads, causal, rotary_positions, rngs=rngs)
        self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
        self.mlp = FeedForward(dim, mlp_dim, rngs=rngs)
        self.dropout = nnx.Dropout(check_rate("dropout", dropout), rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        x = x + self.dropout(self.attention(self.norm1(x), mask))
        return x + self.dropout(self.mlp(self.norm2(x)))


class Stack(nnx.Module):
    """``depth`` blocks, then the final LayerNorm that pre-norm blocks leave to the end.

    ``scan_layers`` stacks the blocks' variables and scans over them; ``remat`` names the
    ``jax.checkpoint_policies`` policy each block is rematerialised under
    (``research/models/stacking.py``).
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_dim: int,
        dropout: float,
        causal: bool,
        rotary_positions: bool,
        *,
        scan_layers: bool = False,
        remat: str = "none",
        rngs: nnx.Rngs,
    ):
        self.scan, self.remat = bool(scan_layers), check_remat(remat)

        def block(rngs: nnx.Rngs) -> Block:
            return Block(dim, num_heads, mlp_dim, dropout, causal, rotary_positions, rngs=rngs)

        self.blocks = make_blocks(block, depth, self.scan, rngs)
        self.norm = nnx.LayerNorm(dim, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        return self.norm(apply_blocks(self.blocks, x, mask, scan=self.scan, remat=self.remat))


class LearnedPositions(nnx.Module):
    """Adds a learned embedding of each position 0..T-1 to ``x`` (B, T, D); T at most ``num_positions``."""

    def __init__(self, num_positions: int, dim: int, *, rngs: nnx.Rngs):
        self.embed = nnx.Embed(num_positions, dim, embedding_init=EMBED_INIT, rngs=rngs)
        self.num_positions = num_positions

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.shape[1] > self.num_positions:
            raise ConfigError(
                f"a sequence of {x.shape[1]} positions exceeds model.max_len ({self.num_positions})"
            )
        return x + self.embed(jnp.arange(x.shape[1]))


class ClassToken(nnx.Module):
    """A learned token prepended to every sequence; its final state summarises the sequence."""

    def __init__(self, dim: int):
        self.token = nnx.Param(jnp.zeros((1, 1, dim), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        token = jnp.broadcast_to(self.token[...].astype(x.dtype), (x.shape[0], 1, x.shape[2]))
        return jnp.concatenate([token, x], axis=1)


def pool_sequence(x: jax.Array, mask: jax.Array | None, pool: str) -> jax.Array:
    """(B, T, D) -> (B, D): the class token's state (at 0), or the mean over real positions."""
    return x[:, 0] if pool == "cls" else masked_mean(x, mask)


class TransformerClassifier(nnx.Module):
    """``model(tokens (B, T) int, mask=None (B, T)) -> (B, num_outputs)``: bidirectional encoder.

    Padded positions (mask 0) are never attended to and are left out of the mean, so
    their tokens do not change the output.
    """

    def __init__(
        self,
        vocab_size: int,
        num_outputs: int,
        max_len: int,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_dim: int,
        dropout: float,
        pool: str,
        positions: str,
        scan_layers: bool = False,
        remat: str = "none",
        *,
        rngs: nnx.Rngs,
    ):
        self.pool = choice("pool", pool, POOLS)
        rotary_positions = choice("positions", positions, POSITIONS) == "rotary"
        self.embed = nnx.Embed(vocab_size, dim, embedding_init=EMBED_INIT, rngs=rngs)
        self.cls = ClassToken(dim) if pool == "cls" else None
        slots = max_len + (self.cls is not None)
        self.positions = None if rotary_positions else LearnedPositions(slots, dim, rngs=rngs)
        self.dropout = nnx.Dropout(check_rate("dropout", dropout), rngs=rngs)
        self.transformer = Stack(
            dim, depth, num_heads, mlp_dim, dropout, False, rotary_positions,
            scan_layers=scan_layers, remat=remat, rngs=rngs,
        )  # fmt: skip
        self.head = nnx.Linear(dim, num_outputs, rngs=rngs)

    def __call__(self, tokens: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        x = self.embed(tokens)
        if self.cls is not None:
            x = self.cls(x)
            if mask is not None:
                mask = jnp.concatenate([jnp.ones_like(mask[:, :1]), mask], axis=1)
        if self.positions is not None:
            x = self.positions(x)
        x = self.transformer(self.dropout(x), mask)
        return self.head(pool_sequence(x, mask, self.pool))


class TransformerLM(nnx.Module):
    """``model(tokens (B, T) int) -> logits (B, T, vocab_size)``: a decoder-only causal LM (GPT-2 layout).

    With ``tie_embeddings`` the output projection is the token embedding's transpose
    (``embed.attend``), as in GPT-2, and there is no separate output kernel.
    """

    def __init__(
        self,
        vocab_size: int,
        max_len: int,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_dim: int,
        dropout: float,
        positions: str,
        tie_embeddings: bool,
        scan_layers: bool = False,
        remat: str = "none",
        *,
        rngs: nnx.Rngs,
    ):
        rotary_positions = choice("positions", positions, POSITIONS) == "rotary"
        self.max_len = max_len
        self.embed = nnx.Embed(vocab_size, dim, embedding_init=EMBED_INIT, rngs=rngs)
        self.positions = None if rotary_positions else LearnedPositions(max_len, dim, rngs=rngs)
        self.dropout = nnx.Dropout(check_rate("dropout", dropout), rngs=rngs)
        self.transformer = Stack(
            dim, depth, num_heads, mlp_dim, dropout, True, rotary_positions,
            scan_layers=scan_layers, remat=remat, rngs=rngs,
        )  # fmt: skip
        self.head = None if tie_embeddings else nnx.Linear(dim, vocab_size, use_bias=False, rngs=rngs)

    def features(self, tokens: jax.Array) -> jax.Array:
        """The final hidden states (B, T, dim), before the output projection."""
        x = self.embed(tokens)
        if self.positions is not None:
            x = self.positions(x)
        elif tokens.shape[1] > self.max_len:
            raise ConfigError(
                f"a sequence of {tokens.shape[1]} positions exceeds model.max_len ({self.max_len})"
            )
        return self.transformer(self.dropout(x))

    def __call__(self, tokens: jax.Array) -> jax.Array:
        h = self.features(tokens)
        return self.embed.attend(h) if self.head is None else self.head(h)
