"""Autoregressive decoding for :class:`training.model.Transformer`.

* KV cache: one preallocated key/value tensor per layer (:class:`training.model.KVCache`); the prompt
  is run once ("prefill"), then each step feeds one token per row.
* Batched prompts of different lengths are left-padded. Padding gets segment id 0 and the real tokens
  segment 1, so the model's segment mask keeps every row from attending to padding, and per-row
  position ids start each prompt at position 0: a row decodes exactly as it would alone.
* Sampling: temperature (0 = greedy), top-k (Fan et al. 2018), top-p / nucleus (Holtzman et al. 2019),
  applied in that order as in HF ``transformers``' logits warpers; a seeded ``torch.Generator`` makes
  sampling reproducible.
* Stops: an end-of-sequence token id, stop strings (checked on the decoded continuation; the returned
  text ends before the stop string, as OpenAI-style APIs do), or ``max_new_tokens``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from training.model import Transformer


@dataclass
class SamplingParams:
    """Decoding settings. ``temperature=0`` is greedy decoding (top-k / top-p are then irrelevant)."""

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k <= 0:
            raise ValueError(f"top_k must be a positive integer, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def sample_next_token(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Pick one token per row from ``logits [B, V]``: greedy at temperature 0, else sampled."""
    if params.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / params.temperature
    if params.top_k is not None and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p is not None and params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p; the best one always stays.
        mass_before = probs.cumsum(dim=-1) - probs
        drop_sorted = mass_before >= params.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


@dataclass
class GeneratedRow:
    """One row's continuation: ``tokens`` (new tokens only) and why it ended."""

    tokens: list[int] = field(default_factory=list)
    finish_reason: str = "length"  # "length" | "eos" | "stop"


def _left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device):
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    width = int(lengths.max())
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.as_tensor(list(prompt), dtype=torch.long, device=device)
    is_real = torch.arange(width, device=device).unsqueeze(0) >= (width - lengths).unsqueeze(1)
    segments = is_real.long()
    positions = (segments.cumsum(dim=1) - 1).clamp(min=0)
    return ids, segments, positions


@torch.inference_mode()
def generate_tokens(
    model: Transformer,
    prompts: Sequence[Sequence[int]],
    params: SamplingParams,
    *,
    eos_id: int | None = None,
    pad_id: int = 0,
    use_kv_cache: bool = True,
    should_stop: Callable[[int, list[int]], bool] | None = None,
) -> list[GeneratedRow]:
    """Continue every prompt (lists of token ids); returns the new tokens per row.

    ``should_stop(row, new_tokens)`` is asked after every step for rows still running (stop strings
    use it). Generation ends early for a row at ``eos_id`` (included in its tokens) and for the whole
    batch when every row has ended. Positions never exceed the model's ``max_seq_len``: a row stops
    with ``finish_reason="length"`` when the longest prompt plus its continuation fills the context.
    ``use_kv_cache=False`` recomputes the whole sequence every step (the reference the cache is
    tested and benchmarked against).
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    config = model.config
    device = model.tok_emb.weight.device
    ids, segments, positions = _left_pad(prompts, pad_id, device)
    batch, prompt_width = ids.shape
    longest = max(len(p) for p in prompts)
    if longest >= config.max_seq_len:
        raise ValueError(
            f"a prompt of {longest} tokens leaves no room to generate: model.max_seq_len={config.max_seq_len}"
        )
    steps = min(params.max_new_tokens, config.max_seq_len - longest)
    padded = bool((segments == 0).any())
    generator = None
    if params.seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(params.seed)

    rows = [GeneratedRow() for _ in prompts]
    running = torch.ones(batch, dtype=torch.bool, device=device)
    if steps == 0:
        return rows

    was_training = model.training
    model.eval()
    try:
        cache = model.new_kv_cache(batch, prompt_width + steps) if use_kv_cache else None
        seg_arg = segments if padded else None
        logits = model(ids, segment_ids=seg_arg, kv_cache=cache, start_pos=0, position_ids=positions,
                       logits_to_keep=1)
        last_pos = positions[:, -1:]
        for step in range(steps):
            next_token = sample_next_token(logits[:, -1, :], params, generator)
            chosen = next_token.tolist()
            for row in running.nonzero().flatten().tolist():
                token = chosen[row]
                rows[row].tokens.append(token)
                if eos_id is not None and token == eos_id:
                    rows[row].finish_reason = "eos"
                    running[row] = False
                elif should_stop is not None and should_stop(row, rows[row].tokens):
                    rows[row].finish_reason = "stop"
                    running[row] = False
            if step == steps - 1 or not bool(running.any()):
                break
            # Finished rows keep decoding (their output is ignored) so the batch stays rectangular.
            new_ids = next_token.unsqueeze(1)
            last_pos = last_pos + 1
            if cache is not None:
                seg_step = torch.ones_like(new_ids) if padded else None
                logits = model(
                    new_ids, segment_ids=seg_step, kv_cache=cache,
                    start_pos=prompt_width + step, position_ids=last_pos, logits_to_keep=1,
                )
            else:
                ids = torch.cat([ids, new_ids], dim=1)
                segments = torch.cat([segments, torch.ones_like(new_ids)], dim=1)
                positions = torch.cat([positions, last_pos], dim=1)
                logits = model(ids, segment_ids=segments if padded else None, position_ids=positions,
                               logits_to_keep=1)
    finally:
        model.train(was_training)
    return rows


@dataclass
class Completion:
    prompt: str
    text: str
    tokens: list[int]
    finish_reason: str


def generate_text(
    model: Transformer,
    tokenizer,
    prompts: Sequence[str],
    params: SamplingParams,
    *,
    stop: Sequence[str] = (),
    eos_token: str = "<|eos|>",
    pad_token: str = "<|pad|>",
    use_kv_cache: bool = True,
) -> list[Completion]:
    """Encode ``prompts`` with an HF ``tokenizers.Tokenizer``, generate, decode.

    The EOS and pad ids come from the tokenizer's special tokens (``<|eos|>`` / ``<|pad|>`` in the
    shards contract); a tokenizer without them generates to ``max_new_tokens`` and pads with id 0
    (padding is masked out, so its id does not matter).
    """
    stop = [s for s in stop if s]
    eos_id = tokenizer.token_to_id(eos_token)
    pad_id = tokenizer.token_to_id(pad_token)
    encoded = [tokenizer.encode(p).ids for p in prompts]

    def hits_stop(row: int, tokens: list[int]) -> bool:
        return bool(stop) and any(s in tokenizer.decode(tokens) for s in stop)

    rows = generate_tokens(
        model, encoded, params, eos_id=eos_id, pad_id=0 if pad_id is None else pad_id,
        use_kv_cache=use_kv_cache, should_stop=hits_stop if stop else None,
    )
    completions = []
    for prompt, row in zip(prompts, rows):
        tokens = row.tokens[:-1] if row.finish_reason == "eos" else row.tokens
        text = tokenizer.decode(tokens)
        if row.finish_reason == "stop":
            cut = min(text.find(s) for s in stop if s in text)
            text = text[:cut]
        completions.append(Completion(prompt=prompt, text=text, tokens=row.tokens, finish_reason=row.finish_reason))
    return completions
