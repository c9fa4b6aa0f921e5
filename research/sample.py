"""Sample text from a trained language model: ``python -m research.sample run=<run dir>
prompt="ROMEO:" max_new_tokens=500 [temperature=0.8] [top_k=200] [seed=0] [checkpoint=best|latest|<step>]``.

The run is rebuilt from its saved config (as ``research.evaluate`` does), the checkpoint's
parameters are restored, the tokenizer is rebuilt from the data's ``info``, and the prompt
followed by ``max_new_tokens`` sampled characters is printed. temperature=0 is greedy.
A translation run (``task=translation``) prints its beam-search translation of the prompt instead;
a character outside its vocabulary is one line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from research import console
from research.errors import ConfigError

USAGE = (
    'usage: python -m research.sample run=<run dir> prompt="ROMEO:" max_new_tokens=500 '
    "[temperature=0.8] [top_k=200] [seed=0] [checkpoint=best]"
)
DEFAULTS = {
    "prompt": "\n",
    "max_new_tokens": "500",
    "temperature": "0.8",
    "top_k": "200",
    "seed": "0",
    "checkpoint": "best",
}


def parse(argv: list[str]) -> dict[str, Any]:
    """The sampling options from key=value args, typed; one ConfigError line for a bad one."""
    options, _ = console.key_values(argv, DEFAULTS, (), USAGE, overrides=False)
    try:
        typed = {
            "max_new_tokens": int(options["max_new_tokens"]),
            "temperature": float(options["temperature"]),
            "top_k": int(options["top_k"]),
            "seed": int(options["seed"]),
        }
    except ValueError as e:
        raise ConfigError(f"{e}: max_new_tokens, top_k and seed are integers, temperature a number") from None
    if typed["max_new_tokens"] < 1 or typed["temperature"] < 0 or typed["top_k"] < 0:
        raise ConfigError("max_new_tokens must be >= 1, temperature and top_k >= 0")
    return {**options, **typed, "run": Path(options["run"]).expanduser()}


def sample(options: dict[str, Any]) -> str:
    """The prompt and its continuation, as text."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from research.data.text import from_info
    from research.engine.api import LanguageModel, Translator
    from research.experiment import open_saved
    from research.models.sampling import generate

    opened = open_saved(
        options["run"], checkpoint=options["checkpoint"], replica=0
    )  # several seeds: the first
    task, state = opened.built.task, opened.state
    if isinstance(task, Translator):  # an encoder-decoder (research/tasks/translation.py)
        return task.translate_texts(state, [options["prompt"]])[0]
    if not isinstance(task, LanguageModel):
        raise ConfigError(
            f"run={options['run']} trained task={opened.cfg.task._target_}, not a language model"
        )
    tokenizer = from_info(opened.built.dataset.info)
    prompt_ids = tokenizer.encode(options["prompt"])
    if not len(prompt_ids):
        raise ConfigError('prompt= is empty: give at least one character (prompt="ROMEO:")')
    model = nnx.merge(task.eval_graphdef, state["params"], state["model_state"])
    ids = generate(model, jnp.asarray(prompt_ids)[None], options["max_new_tokens"], options["temperature"],
                   options["top_k"], jax.random.PRNGKey(options["seed"]))  # fmt: skip
    return options["prompt"] + tokenizer.decode(jax.device_get(ids)[0, len(prompt_ids) :])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    with console.report_errors():
        text = sample(parse(argv))
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
