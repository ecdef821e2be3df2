"""The narrow model interface every variant implements (fake-quantized, bitsandbytes, later GGUF).

Two requests, after lm-evaluation-harness's split into log-likelihood and generate-until:
``token_scores`` (one forward pass per sequence, enough for every score-based membership attack) and
``greedy`` (batched greedy continuation, what VerbMem and KnowMem need). Probes never touch a model in
any other way, so a new backend only has to implement these two methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np


@dataclass(frozen=True)
class TokenScores:
    """Per-token statistics of one sequence from a single forward pass.

    Position t covers token t+1 of the sequence (the first token has no context and no score).
    ``mu`` and ``sigma`` are the mean and standard deviation of log p(v | x_<t) under the model's own
    next-token distribution, which is what Min-K%++ (Zhang et al., ICLR 2025) normalises with.
    """

    logprobs: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray


class LanguageModel(Protocol):
    name: str

    def token_scores(self, sequences: Sequence[Sequence[int]]) -> list[TokenScores]:
        """Score each token sequence (ids already include any BOS the tokenizer adds)."""

    def greedy(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: Sequence[int],
        stop_strings: Sequence[str] = (),
    ) -> list[list[int]]:
        """Greedy continuation of each prompt: at most ``max_new_tokens[i]`` new ids, stopping at EOS
        or once a stop string appears (the stop string itself may be part of the returned ids)."""
