"""research: a JAX experiment framework (Hydra configs, Flax NNX models, optax, one compiled loop)."""
