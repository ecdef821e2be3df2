"""A Hugging Face causal LM behind the narrow interface, batched on CPU or GPU."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Sequence

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase
from transformers.generation.stopping_criteria import StopStringCriteria

from .base import TokenScores
from .batch import pad_batch
from .decode import Decoder, DraftBook, shared_prefix

# Model types whose logits are exactly the output head applied to the decoder's last hidden state (no
# soft-capping or scaling after the head). For these, scoring runs the head one row at a time.
POSITIONS = 64  # positions scored together: 64 × 49,152 float32 logits is 12.6 MB per temporary
PLAIN_HEAD = frozenset({"llama", "mistral", "qwen2", "qwen3", "gpt2", "gpt_neox", "phi3", "olmo", "olmo2", "opt"})


# What a failed allocation says where it is not torch.OutOfMemoryError (or Python's MemoryError). cuBLAS
# allocates its handle and workspace outside torch's caching allocator, so a GPU that torch has filled
# fails there as a CUDA error: "CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate(handle)", and often
# as CUBLAS_STATUS_NOT_INITIALIZED, which cublasCreate also returns when it cannot allocate. torch's CPU
# allocator raises a plain RuntimeError.
OOM_MESSAGES = {
    "GPU": ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUBLAS_STATUS_NOT_INITIALIZED"),
    "CPU": ("DefaultCPUAllocator: can't allocate memory",),
}


def out_of_memory(exc: BaseException) -> str | None:
    """``"GPU"`` or ``"CPU"`` when ``exc`` is a failed allocation there, else None. A smaller batch may
    fit where this one did not; any other error is a bug or bad input, and retrying would hide it."""
    if isinstance(exc, torch.OutOfMemoryError):
        return "GPU"
    if isinstance(exc, MemoryError):
        return "CPU"
    if isinstance(exc, RuntimeError):
        text = str(exc)
        for where in ("CPU", "GPU"):
            if any(m in text for m in OOM_MESSAGES[where]):
                return where
    return None


def free_device_memory() -> None:
    """Collect what the failed work left and give the GPU's cached blocks back to the driver: torch would
    reuse them itself, but cuBLAS allocates outside its cache and cannot. A no-op on the GPU where CUDA
    was never initialised. Call it once the failed work's tensors are unreferenced, outside the
    ``except`` block, whose exception's traceback keeps them alive."""
    gc.collect()
    torch.cuda.empty_cache()


class BatchSize:
    """The batch size every model of one audit starts from. Out of memory halves it (``_each_batch``),
    and the smaller size stays for the rest of the audit: the reference and every variant fill the same
    resident model and run the same workload, so a later one would only fail the same batch again."""

    def __init__(self, value: int) -> None:
        self.value = value


class HFModel:
    """Wraps a loaded transformers model. Sequences are sorted by length so batches pad little."""

    def __init__(
        self, name: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int | BatchSize = 8,
        drafts: DraftBook | None = None, role: str = "audited", share_prefix: bool = False,
    ) -> None:
        """``batch_size``: a number, or the audit's shared ``BatchSize``, which this model halves on
        out-of-memory for every model after it; ``drafts``: earlier variants' outputs to verify instead of
        decoding token by token; ``share_prefix``: encode the prompts' common prefix once per call
        (models/decode.py). With neither, greedy decoding is transformers' ``generate``, the plain path."""
        self.name = name
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch = batch_size if isinstance(batch_size, BatchSize) else BatchSize(batch_size)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.device = next(model.parameters()).device
        self.drafts, self.role, self.share_prefix = drafts, role, share_prefix
        #: Greedy tokens generated, draft tokens offered, and draft tokens accepted, over every call.
        self.decoding = {"generated": 0, "drafted": 0, "accepted": 0}

    @property
    def batch_size(self) -> int:
        return self.batch.value

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self.batch.value = value

    def _each_batch(self, order: list[int], work) -> None:
        """Run ``work(batch)`` over ``order`` in batches; on out-of-memory, halve the batch size for the
        rest of the audit and go on from the failed batch, every later batch at the smaller size too.
        Results do not depend on the batch size (tests check it)."""
        done = 0
        while done < len(order):
            batch = order[done : done + self.batch_size]
            try:
                work(batch)
                done += len(batch)
                continue
            except Exception as exc:
                if out_of_memory(exc) is None or len(batch) == 1:
                    raise
            free_device_memory()
            self.batch_size = max(1, len(batch) // 2)

    @torch.inference_mode()
    def token_scores(self, sequences: Sequence[Sequence[int]]) -> list[TokenScores]:
        out: list[TokenScores | None] = [None] * len(sequences)
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        self._each_batch(order, lambda batch: self._score_batch(sequences, batch, out))
        return out  # type: ignore[return-value]

    def _score_batch(self, sequences, batch: list[int], out: list) -> None:
        tokens, mask = pad_batch([sequences[i] for i in batch], self.pad_id)
        logits = self._logit_rows(tokens.to(self.device), mask.to(self.device))
        for row, i in enumerate(batch):
            # One row, and within it POSITIONS positions, at a time: the vocabulary-sized temporaries of
            # the moments below would otherwise be several copies of the batch's logits (gigabytes).
            n, parts = len(sequences[i]) - 1, []
            for a in range(0, n, POSITIONS):
                b = min(n, a + POSITIONS)
                logp = torch.log_softmax(logits(row, a, b).float(), dim=-1)
                target = tokens[row, a + 1 : b + 1].to(self.device).unsqueeze(-1)
                probs = logp.exp()
                mu = (probs * logp).sum(-1)
                sigma = ((probs * logp.square()).sum(-1) - mu.square()).clamp_min(0).sqrt()
                parts.append(torch.stack([logp.gather(-1, target).squeeze(-1), mu, sigma]))  # on the device: one copy per row
                del logp, probs
            lp, mu, sigma = (torch.cat(parts, dim=1).cpu() if parts else torch.zeros(3, 0)).double().numpy()
            out[i] = TokenScores(logprobs=lp, mu=mu, sigma=sigma)

    def _logit_rows(self, ids: torch.Tensor, mask: torch.Tensor):
        """``(row, a, b) -> that row's logits at positions a..b-1``. Where the logits are just the output
        head on the last hidden state (PLAIN_HEAD), the batch keeps only its hidden states and the head
        runs per row, so a batch's full logits (16 × 300 positions × SmolLM2's 49,152-token vocabulary is
        0.94 GB in float32) are never resident at once; other models get one ordinary forward.
        ``use_cache=False``: with a config's ``use_cache: true`` (most checkpoints) the forward would also
        build a KV cache that nothing reads, every layer's keys and values held until it returns (0.5 MB
        per token on Llama-2-7B in bfloat16)."""
        split = split_head(self.model)
        if split is not None:
            head, base = split
            hidden = base(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            return lambda row, a, b: head(hidden[row, a:b])
        logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        return lambda row, a, b: logits[row, a:b]

    def context_length(self) -> int | None:
        return context_length(self.model.config)

    @torch.inference_mode()
    def greedy(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: Sequence[int],
        stop_strings: Sequence[str] = (),
    ) -> list[list[int]]:
        # Prompt and continuation must fit the context together: a model with learned absolute positions
        # (GPT-2's n_positions) indexes past its position table otherwise. Each row gets at most what is
        # left after its prompt, none when the prompt alone fills it; the probe scores what was generated.
        context = self.context_length()
        budgets = [min(m, max(0, context - len(p))) if context else m for p, m in zip(prompts, max_new_tokens)]
        out: list[list[int]] = [[] for _ in prompts]
        order = sorted((i for i in range(len(prompts)) if budgets[i] > 0), key=lambda i: (budgets[i], len(prompts[i])))
        if order and (self.drafts is not None or self.share_prefix) and fast_decoding(self.model):
            self._decode(prompts, budgets, tuple(stop_strings), order, out)
        else:
            self._each_batch(order, lambda batch: self._greedy_batch(prompts, budgets, stop_strings, batch, out))
        self.decoding["generated"] += sum(len(o) for o in out)
        return out

    def _decode(self, prompts, budgets, stops: tuple[str, ...], order: list[int], out: list) -> None:
        """Greedy decoding by draft and verify, on a shared prefix (models/decode.py); the result is the
        plain path's."""
        stop = StopStringCriteria(self.tokenizer, list(stops)) if stops else None
        decoder = Decoder(self.model, self.tokenizer.eos_token_id, self.pad_id, stop, split_head(self.model))
        shared = shared_prefix([prompts[i] for i in order]) if self.share_prefix else 0
        prefix = decoder.prefix_cache(prompts[order[0]][:shared]) if shared else None
        request = lambda i: (tuple(prompts[i]), budgets[i], stops)  # noqa: E731

        def work(batch: list[int]) -> None:
            drafts = [self.drafts.get(self.role, request(i)) if self.drafts is not None else None for i in batch]
            got = decoder.run([prompts[i] for i in batch], [budgets[i] for i in batch], drafts, shared, prefix)
            for row, i in enumerate(batch):
                out[i] = strip_after_eos(got.ids[row], self.tokenizer.eos_token_id, self.pad_id)
                if self.drafts is not None:
                    self.drafts.put(self.role, request(i), out[i])
            self.decoding["drafted"] += sum(got.drafted)
            self.decoding["accepted"] += sum(got.accepted)

        self._each_batch(order, work)

    def _greedy_batch(self, prompts, max_new_tokens, stop_strings, batch: list[int], out: list) -> None:
        # Left padding: every prompt ends where generation starts.
        width = max(len(prompts[i]) for i in batch)
        budget = max(max_new_tokens[i] for i in batch)
        context = self.context_length()
        if context and width + budget > context and len(batch) > 1:
            # Padded to the longest prompt and run for the longest budget, the batch would pass the context
            # although each row fits on its own: those rows are generated one at a time.
            for i in batch:
                self._greedy_batch(prompts, max_new_tokens, stop_strings, [i], out)
            return
        input_ids, mask = pad_batch([prompts[i] for i in batch], self.pad_id, left=True)
        config = GenerationConfig(
            do_sample=False,
            max_new_tokens=budget,
            pad_token_id=self.pad_id,
            eos_token_id=self.tokenizer.eos_token_id,
            stop_strings=list(stop_strings) or None,
        )
        extra = {"tokenizer": self.tokenizer} if stop_strings else {}
        with _own_generation_config(self.model):
            generated = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=mask.to(self.device),
                generation_config=config,
                **extra,
            )
        for row, i in enumerate(batch):
            new = generated[row, width:].tolist()[: max_new_tokens[i]]
            out[i] = strip_after_eos(new, self.tokenizer.eos_token_id, self.pad_id)


def split_head(model) -> tuple | None:
    """``(head, base)`` where the logits are just the output head on the base model's last hidden state
    (PLAIN_HEAD), so a caller can run the head on the rows it needs only; None otherwise."""
    head, base = model.get_output_embeddings(), model.base_model
    if model.config.model_type in PLAIN_HEAD and head is not None and base is not model:
        return head, base
    return None


def fast_decoding(model) -> bool:
    """Whether ``models/decode.py`` may decode this model: a plain decoder with full attention in every
    layer (masked cache columns and explicit positions mean what they say there; a sliding window counts
    cache columns, not positions), whose numbers for one token do not depend on the other tokens of the
    forward pass. bitsandbytes' LLM.int8() does not qualify: its mixed-precision decomposition (Dettmers
    et al., 2022) keeps in fp16 every feature column where any token of the pass exceeds the outlier
    threshold, so verifying a draft's tokens would change the numbers of the prompt's."""
    config = model.config
    layers = getattr(config, "layer_types", None) or ["full_attention"]
    sliding = config.model_type == "mistral" and getattr(config, "sliding_window", None)
    int8 = getattr(model, "is_loaded_in_8bit", False)
    return config.model_type in PLAIN_HEAD and all(t == "full_attention" for t in layers) and not sliding and not int8


def context_length(config) -> int | None:
    """The positions a model can attend over (``max_position_embeddings``, GPT-2's ``n_positions``)."""
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


@contextmanager
def _own_generation_config(model: PreTrainedModel):
    """Decode with the tool's GenerationConfig alone. ``generate`` fills every setting left unset (None) in
    the config it is given from ``model.generation_config`` (transformers 5.x
    ``GenerationMixin._prepare_generation_config``: ``update(**self.generation_config.to_dict(),
    defaults_only=True, allow_custom_entries=True)``), and that object is read from the audited checkpoint's
    generation_config.json (or config.json). Its ``suppress_tokens``, ``repetition_penalty``,
    ``no_repeat_ngram_size``, ``bad_words_ids``, ``min_new_tokens``, ``forced_bos_token_id``... would steer the
    "greedy" probes and let a model that recites its forget set look unlearned. A blank GenerationConfig
    stands in while generating, so only transformers' global defaults fill the gaps; the loaded one is put
    back afterwards (the report lists what it asked for)."""
    loaded = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = loaded


def strip_after_eos(ids: list[int], eos: int | None, pad: int) -> list[int]:
    """Drop the EOS and whatever generate padded after a finished row."""
    for j, tok in enumerate(ids):
        if tok == eos:
            ids = ids[:j]
            break
    while ids and ids[-1] == pad:  # rows that met a stop string are padded to the batch's length
        ids = ids[:-1]
    return ids
