"""Greedy decoding that makes fewer model calls and returns the same tokens.

An audit decodes the same prompts under many variants of one model (fp32, int8, int4, the original's
twins), and for most tokens those variants agree. Two ideas cut the work without changing any output:

- **Draft and verify.** An earlier variant's greedy continuation of a prompt is the draft. One
  teacher-forced forward pass over prompt + draft gives this variant's own argmax at every draft
  position; the longest prefix on which it agrees with the draft is accepted, and the argmax at the first
  disagreement is this variant's next token for free. Decoding goes on from there, one token per step,
  on the KV cache of that pass: the rejected draft positions stay in the cache but are masked out, and
  each new token gets the position it would have without them. A variant that agrees everywhere costs
  one forward pass instead of a prefill plus one step per token. This is speculative decoding (Leviathan
  et al., ICML 2023; Chen et al., 2023) with an earlier variant as the draft model and greedy acceptance,
  which keeps exactly the target's greedy output.
- **A shared prefix.** KnowMem's prompts all start with the same few-shot examples. Their KV cache is
  computed once per call (one variant, one split) and copied into each batch, instead of re-encoding
  the examples for every question. The shared part is the longest common prefix of the token ids, so
  positions and context are those of the full prompt.

Stopping is decided as ``generate`` decides it (transformers' own ``StopStringCriteria`` on prompt +
tokens so far, EOS, the row's budget), and the result is what ``HFModel``'s plain path returns, up to the
float tolerance batched decoding already has (padding changes matmul shapes, hence last bits; a test
compares the two token for token).
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import DynamicCache

MIN_SHARED = 16  # a common prefix shorter than this is not worth its own forward pass
FIRST_WINDOW = 8  # draft tokens verified in the first round; each next round verifies twice as many
HEAD_ROWS = 64  # draft positions whose logits are computed together (64 × a 128k vocabulary is 32 MB)


@dataclass
class Decoded:
    """One call's continuations (with any EOS), and per row how many draft tokens were offered and accepted."""

    ids: list[list[int]]
    drafted: list[int]
    accepted: list[int]


def shared_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the prefix every prompt shares, leaving at least one token of each prompt to run with
    its own tail; 0 when that is shorter than MIN_SHARED."""
    if len(prompts) < 2:
        return 0
    first, n = prompts[0], min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        k = 0
        while k < n and p[k] == first[k]:
            k += 1
        n = k
    return n if n >= MIN_SHARED else 0


class Decoder:
    """Greedy decoding of one model, with optional drafts and a shared prefix."""

    def __init__(self, model, eos: int | None, pad: int, stop=None, split: tuple | None = None) -> None:
        """``split``: the model's ``(head, base)`` where its logits are just the head on the base's last
        hidden state (``hf.split_head``), so only the positions read need the head; None runs the model."""
        self.model, self.eos, self.pad, self.stop = model, eos, pad, stop
        self.device = next(model.parameters()).device
        self.split_head = split is not None
        self.head, self.base = split if split is not None else (None, None)
        # transformers 5.x renamed ``past_key_values`` to ``cache`` (the old name warns until 5.40)
        net = self.base if self.split_head else model
        self.cache_kw = "cache" if "cache" in inspect.signature(net.forward).parameters else "past_key_values"

    def _forward(self, ids, mask, pos, cache):
        """Hidden states (or logits) at every input position; ``cache`` grows by them in place."""
        net = self.base if self.split_head else self.model
        out = net(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **{self.cache_kw: cache})
        return out.last_hidden_state if self.split_head else out.logits

    def new_cache(self):
        return DynamicCache(config=self.model.config)

    def _argmax(self, states: torch.Tensor) -> torch.Tensor:
        """The greedy token of each row of ``states`` (hidden states or logits), in chunks of HEAD_ROWS,
        compared in float32 as ``generate`` compares them."""
        parts = []
        for a in range(0, states.shape[0], HEAD_ROWS):
            chunk = states[a : a + HEAD_ROWS]
            logits = self.head(chunk) if self.split_head else chunk
            parts.append(logits.float().argmax(-1))
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long, device=self.device)

    def prefix_cache(self, ids: Sequence[int]):
        """The KV cache of ``ids`` for one row, to be copied into every batch that shares it."""
        t, cache = torch.tensor([list(ids)], device=self.device), self.new_cache()
        self._forward(t, torch.ones_like(t), torch.arange(len(ids), device=self.device)[None], cache)
        return cache

    @torch.inference_mode()
    def run(self, prompts: Sequence[Sequence[int]], budgets: Sequence[int], drafts: Sequence[Sequence[int] | None],
            shared: int = 0, prefix=None) -> Decoded:
        """Continue each prompt greedily for at most ``budgets[i]`` tokens, verifying ``drafts[i]`` where
        given. ``prefix`` is the cache of the first ``shared`` tokens, which every prompt starts with.

        Each round feeds every unfinished row its pending token (the first round: its prompt) and, while
        drafting, the next window of its draft, and reads this variant's argmax after each of them. A
        batch decodes for as many steps as its slowest row needs, so the draft only saves steps while
        every row still agrees with its own: the first window is FIRST_WINDOW tokens, each next one is
        twice as long, and once any unfinished row disagrees the batch decodes one token per round."""
        n = len(prompts)
        rest = [list(d or ())[:b] for d, b in zip(drafts, budgets)]
        offered = [len(d) for d in rest]
        out: list[list[int]] = [[] for _ in range(n)]
        accepted, done = [0] * n, [False] * n
        cache = self.new_cache()
        if shared:
            cache = copy.deepcopy(prefix)
            cache.batch_repeat_interleave(n)
        mask = torch.ones((n, shared), dtype=torch.long)
        feed = [list(p[shared:]) for p in prompts]  # per row: tokens that go in this round, before the window
        active, cached, window = list(range(n)), list(range(n)), FIRST_WINDOW if any(rest) else 0
        while active:
            if active != cached:  # finished rows leave the batch: later rounds cost what the rest need
                keep = torch.tensor([cached.index(r) for r in active])
                cache.batch_select_indices(keep.to(self.device))
                mask, cached = mask[keep], list(active)
            wins = [rest[r][:window] for r in active]
            rows = [feed[r] + w for r, w in zip(active, wins)]
            width = max(len(x) for x in rows)
            ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
            new = torch.zeros((len(rows), width), dtype=torch.long)
            pos = torch.zeros((len(rows), width), dtype=torch.long)
            for a, (r, x) in enumerate(zip(active, rows)):
                start = len(prompts[r]) + len(out[r]) - len(feed[r])  # the position of the row's first fed token
                ids[a, : len(x)], new[a, : len(x)] = torch.tensor(x), 1
                # padding (masked) repeats the first position: past the row's own tokens a position could
                # pass the context, which learned position tables (GPT-2) cannot index
                pos[a] = start
                pos[a, : len(x)] += torch.arange(len(x))
            mask = torch.cat([mask, new], 1)
            states = self._forward(ids.to(self.device), mask.to(self.device), pos.to(self.device), cache)
            # this variant's next token after the fed tokens, and after each window token
            at = torch.cat([torch.arange(len(feed[r]) - 1, len(x)) for r, x in zip(active, rows)])
            which = torch.cat([torch.full((len(w) + 1,), a) for a, w in enumerate(wins)])
            guesses = self._argmax(states[which.to(self.device), at.to(self.device)]).tolist()
            del states
            agree, g0 = True, 0
            for a, (r, w) in enumerate(zip(active, wins)):
                g, g0 = guesses[g0 : g0 + len(w) + 1], g0 + len(w) + 1
                k = 0
                while k < len(w) and g[k] == w[k]:
                    k += 1
                # the token after an accepted window is this variant's own guess: the draft continues past
                # it only if it predicted that token too; a disagreement ends the row's draft
                follows = k == len(w) and rest[r][k : k + 1] == [g[k]]
                accepted[r] += k + follows
                rest[r] = rest[r][k + 1 :] if follows else []
                for tok in w[:k] + [g[k]]:
                    if self._take(prompts[r], out[r], tok, budgets[r]):
                        done[r] = True
                        break
                # never attended again: rejected window tokens, and padding
                mask[a, mask.shape[1] - width + len(feed[r]) + k :] = 0
                feed[r] = out[r][-1:]
                agree &= done[r] or bool(rest[r])
            active = [r for r in active if not done[r]]
            window = window * 2 if agree and window else 0
        return Decoded(out, offered, accepted)

    def _take(self, prompt: Sequence[int], row: list[int], tok: int, budget: int) -> bool:
        """Append ``tok`` to ``row``; True when ``generate`` would stop the row here: EOS (appended, and
        stripped later as the plain path strips it), a stop string at the end of prompt + row, or the
        budget reached."""
        row.append(tok)
        if tok == self.eos or len(row) >= budget:
            return True
        if self.stop is not None:
            seq = torch.tensor([list(prompt) + row])
            return bool(self.stop(seq, None)[0])
        return False


class DraftBook:
    """The latest greedy output for each request (prompt, budget, stop strings), per model role. A
    variant of the audited model drafts from the audited model's previous variant, the original's from
    the original's; either falls back to the other model's output for the same request."""

    def __init__(self) -> None:
        self._by_role: dict[str, dict[tuple, list[int]]] = {}

    def get(self, role: str, request: tuple) -> list[int] | None:
        own = self._by_role.get(role, {}).get(request)
        if own is not None:
            return own
        return next((book[request] for book in self._by_role.values() if request in book), None)

    def put(self, role: str, request: tuple, ids: list[int]) -> None:
        self._by_role.setdefault(role, {})[request] = list(ids)
