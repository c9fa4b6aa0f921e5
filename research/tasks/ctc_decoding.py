"""CTC decoding and error rates, on the host: greedy and prefix beam search; edit distances for CER and WER.

Greedy decoding takes each frame's most likely symbol, collapses repeats and drops blanks
("aa-ab-" -> "aab"). Prefix beam search (Hannun et al. 2014, arXiv:1408.2873) keeps the
``beam_width`` most probable label prefixes, each with the probability of its alignments
ending in a blank and in its last symbol, so that "a-a" (two a's) and "aa" (one) stay apart;
symbols less likely than ``prune`` (a log probability) at a frame are not tried there.
Error rates are summed edits over summed reference lengths across a whole split.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

NEG_INF = -np.inf


def collapse(path: Sequence[int], blank: int) -> list[int]:
    """Merge runs of one symbol, then drop blanks: the labelling a CTC alignment stands for."""
    out, previous = [], None
    for symbol in path:
        if symbol != previous and symbol != blank:
            out.append(int(symbol))
        previous = symbol
    return out


def greedy(log_probs: np.ndarray, length: int, blank: int) -> list[int]:
    """The collapsed best path of a (T, V) array's first ``length`` frames."""
    return collapse(np.argmax(log_probs[:length], -1).tolist(), blank)


def _add(grown: dict, prefix: tuple[int, ...], which: int, value: float) -> None:
    """Add probability ``exp(value)`` to ``prefix``'s alignments ending in a blank (0) or its symbol (1)."""
    entry = grown.setdefault(prefix, [NEG_INF, NEG_INF])
    entry[which] = np.logaddexp(entry[which], value)


def beam_search(log_probs: np.ndarray, length: int, blank: int, beam_width: int, prune: float) -> list[int]:
    """The most probable labelling found by prefix beam search over the first ``length`` frames."""
    # prefix -> log probabilities of its alignments so far that end in a blank, in its last symbol
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, NEG_INF)}
    for frame in log_probs[:length]:
        tried = np.flatnonzero(frame >= prune)
        if not len(tried):
            tried = np.argsort(frame)[-1:]
        grown: dict[tuple[int, ...], list[float]] = {}
        add = functools.partial(_add, grown)
        for prefix, (p_blank, p_symbol) in beams.items():
            total = np.logaddexp(p_blank, p_symbol)
            for symbol in tried.tolist():
                p = float(frame[symbol])
                if symbol == blank:
                    add(prefix, 0, total + p)
                elif prefix and prefix[-1] == symbol:
                    add(prefix + (symbol,), 1, p_blank + p)  # a blank between: the symbol again
                    add(prefix, 1, p_symbol + p)  # the same run goes on
                else:
                    add(prefix + (symbol,), 1, total + p)
        ranked = sorted(grown.items(), key=lambda kv: -np.logaddexp(*kv[1]))[:beam_width]
        beams = {prefix: (b, s) for prefix, (b, s) in ranked}
    return list(max(beams.items(), key=lambda kv: np.logaddexp(*kv[1]))[0])


def edit_distance(reference: Sequence, hypothesis: Sequence) -> int:
    """Levenshtein distance: the fewest substitutions, insertions and deletions from one to the other."""
    previous = list(range(len(hypothesis) + 1))
    for i, r in enumerate(reference, 1):
        current = [i]
        for j, h in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1]


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """``cer`` (character edits / reference characters) and ``wer`` (word edits / reference words),
    each summed over all utterances before dividing."""
    char_edits = sum(edit_distance(r, h) for r, h in zip(references, hypotheses, strict=True))
    word_edits = sum(edit_distance(r.split(), h.split()) for r, h in zip(references, hypotheses, strict=True))
    chars = sum(len(r) for r in references)
    words = sum(len(r.split()) for r in references)
    return {"cer": char_edits / max(chars, 1), "wer": word_edits / max(words, 1)}
