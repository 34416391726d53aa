"""One decoder-only transformer, GPT-2 or Llama blocks, from a config dataclass.

Pure PyTorch (no Ray, no Lightning) so training, generation, export and evaluation all share it.

Where the architecture comes from:

* ``arch="gpt2"``: Radford et al. 2019 ("Language Models are Unsupervised Multitask Learners"):
  pre-LayerNorm blocks, learned absolute positions, GELU MLP of width 4·d, a final LayerNorm, output
  projection tied to the token embedding. GELU is the tanh approximation that the released GPT-2
  weights were trained with (HF ``activation_function="gelu_new"``), so an exported model matches
  ``GPT2LMHeadModel`` exactly.
* ``arch="llama"``: Touvron et al. 2023 (Llama 1/2): RMSNorm (Zhang & Sennrich 2019), rotary position
  embeddings (Su et al. 2021), SwiGLU MLP (Shazeer 2020) of width ≈ 8/3·d, no biases, untied output,
  grouped-query attention (Ainslie et al. 2023) when ``n_kv_head < n_head``. RoPE uses the
  "rotate_half" layout (first half of each head's channels paired with the second half), which is the
  layout of HF ``LlamaForCausalLM``, so exported q/k weights need no permutation.

Attention is :func:`torch.nn.functional.scaled_dot_product_attention`: the ``is_causal`` fast path
(flash / memory-efficient kernels on GPU) when no mask is needed, an explicit boolean mask when packed
documents must not see each other (``segment_ids``) or when decoding against a KV cache.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

Arch = Literal["gpt2", "llama"]
ARCHES: tuple[str, ...] = ("gpt2", "llama")


def swiglu_hidden_dim(d_model: int) -> int:
    """SwiGLU width for a given model width, as in Meta's Llama reference code.

    ``hidden = int(2 * 4d / 3)`` keeps the parameter count of a 4·d GELU MLP with three matrices
    instead of two (Shazeer 2020, sec. 2); Llama rounds it up to a multiple of 256. For small models
    (d < 512) that rounding would inflate the MLP a lot, so they round to a multiple of 32 instead.
    """
    hidden = int(2 * 4 * d_model / 3)
    multiple_of = 256 if d_model >= 512 else 32
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


@dataclass
class ModelConfig:
    """Hyperparameters of :class:`Transformer`.

    Fields left ``None`` take the architecture's default in ``__post_init__`` (so after construction
    every field holds a concrete value and ``to_dict`` round-trips exactly):

    * ``n_kv_head``: ``n_head`` (plain multi-head attention). Only ``llama`` may set fewer
      (grouped-query attention); GPT-2 has no such variant.
    * ``d_ff``: ``4 * d_model`` for gpt2 (GPT-2 paper), :func:`swiglu_hidden_dim` for llama.
    * ``tie_embeddings``: True for gpt2 (GPT-2 ties input and output embeddings), False for llama.
    * ``bias``: True for gpt2 (linear and LayerNorm biases), False for llama.
    * ``norm_eps``: 1e-5 for both (GPT-2's LayerNorm epsilon; Llama 2's RMSNorm epsilon).
    * ``rope_theta``: 10000 (RoPE paper and Llama 1/2); unused by gpt2.
    """

    arch: str = "llama"
    vocab_size: int = 8192
    max_seq_len: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int | None = None
    d_model: int = 128
    d_ff: int | None = None
    tie_embeddings: bool | None = None
    dropout: float = 0.0
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    bias: bool | None = None
    init_std: float = 0.02  # GPT-2 / nanoGPT / torchtitan: N(0, 0.02) for weights and embeddings

    def __post_init__(self) -> None:
        if self.arch not in ARCHES:
            raise ValueError(f"model.arch must be one of {ARCHES}, got {self.arch!r}")
        for name in ("vocab_size", "max_seq_len", "n_layer", "n_head", "d_model"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"model.{name} must be a positive integer, got {value!r}")
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model if self.arch == "gpt2" else swiglu_hidden_dim(self.d_model)
        if self.tie_embeddings is None:
            self.tie_embeddings = self.arch == "gpt2"
        if self.bias is None:
            self.bias = self.arch == "gpt2"
        if self.d_model % self.n_head:
            raise ValueError(
                f"model.d_model ({self.d_model}) must be divisible by model.n_head ({self.n_head})"
            )
        if self.n_kv_head <= 0 or self.n_head % self.n_kv_head:
            raise ValueError(
                f"model.n_head ({self.n_head}) must be a multiple of model.n_kv_head ({self.n_kv_head})"
            )
        if self.arch == "gpt2" and self.n_kv_head != self.n_head:
            raise ValueError("grouped-query attention (n_kv_head < n_head) needs arch: llama")
        if self.arch == "llama" and self.head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head dimension, got {self.head_dim}")
        if self.d_ff <= 0:
            raise ValueError(f"model.d_ff must be positive, got {self.d_ff}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")

    # -- derived sizes -------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def kv_dim(self) -> int:
        return self.n_kv_head * self.head_dim

    # -- presets and (de)serialisation -----------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "ModelConfig":
        """A named configuration with optional field overrides (e.g. ``vocab_size`` from the tokenizer).

        Presets:

        * ``tiny``: llama blocks, 4 layers, d=128, 4 heads, seq 256, vocab 8192 (2.9M parameters);
          trains in minutes on a laptop CPU. ``arch="gpt2"`` works as an override too.
        * ``gpt2-124m``: GPT-2 small exactly (12 layers, d=768, 12 heads, 1024 positions, vocab 50257,
          tied): 124,439,808 parameters, the HF ``gpt2`` checkpoint's count.
        * ``llama-350m``: the "350M" Llama of GaLore (Zhao et al. 2024) / ReLoRA: 24 layers, d=1024,
          16 heads, SwiGLU width 2736, vocab 32000, untied: 367,969,280 parameters.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
        fields = {**PRESETS[name], **overrides}
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config fields: {unknown}")
        return cls(**data)

    # -- parameter and FLOP counts ---------------------------------------------------------------
    def num_params(self, non_embedding: bool = False) -> int:
        """Number of trainable parameters, computed from the config (a tied matrix counts once).

        ``non_embedding=True`` leaves out the token embedding, GPT-2's position embedding and an
        untied output projection, as in Kaplan et al. 2020's ``N``.
        """
        d, ff, v = self.d_model, self.d_ff, self.vocab_size
        q_out = self.n_head * self.head_dim
        qkv_out = q_out + 2 * self.kv_dim
        b = 1 if self.bias else 0
        if self.arch == "gpt2":
            norm = 2 * d if self.bias else d  # LayerNorm weight (+ bias)
            mlp = d * ff + ff * b + ff * d + d * b
        else:
            norm = d  # RMSNorm weight only
            mlp = 3 * d * ff + (2 * ff + d) * b
        attn = d * qkv_out + qkv_out * b + q_out * d + d * b
        per_layer = 2 * norm + attn + mlp
        body = self.n_layer * per_layer + norm  # + final norm
        if non_embedding:
            return body
        embeddings = v * d
        if self.arch == "gpt2":
            embeddings += self.max_seq_len * d
        if not self.tie_embeddings:
            embeddings += v * d
        return body + embeddings

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward), as in PaLM's appendix B / nanoGPT's MFU.

        ``6 * N + 12 * L * H * Q * T``: 6 FLOPs per parameter that takes part in a matmul (the
        non-embedding weights plus the output projection; an embedding lookup is not a matmul), and
        the attention score/value matmuls over ``T = seq_len`` positions (counted without the causal
        halving, as PaLM does).
        """
        t = self.max_seq_len if seq_len is None else seq_len
        matmul_params = self.num_params(non_embedding=True) + self.vocab_size * self.d_model
        return 6.0 * matmul_params + 12.0 * self.n_layer * self.n_head * self.head_dim * t


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        arch="llama", vocab_size=8192, max_seq_len=256, n_layer=4, n_head=4, d_model=128
    ),
    "gpt2-124m": dict(
        arch="gpt2", vocab_size=50257, max_seq_len=1024, n_layer=12, n_head=12, d_model=768,
        tie_embeddings=True, bias=True,
    ),
    "llama-350m": dict(
        arch="llama", vocab_size=32000, max_seq_len=2048, n_layer=24, n_head=16, d_model=1024,
        d_ff=2736, tie_embeddings=False, bias=False,
    ),
}


# ----------------------------------------------------------------------------------------------
# KV cache
# ----------------------------------------------------------------------------------------------


class KVCache:
    """Preallocated keys/values for every layer, plus the segment id of every cached position.

    Keys are stored after RoPE and with ``n_kv_head`` heads (grouped-query attention saves cache
    memory by that factor). ``segment_ids`` lets a batch of left-padded prompts decode together:
    padding is segment 0, the prompt and its continuation segment 1, and attention never crosses
    segments, so a padded row sees exactly what it would see alone.
    """

    def __init__(
        self,
        config: ModelConfig,
        batch_size: int,
        max_len: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        max_len = config.max_seq_len if max_len is None else max_len
        if max_len <= 0:
            raise ValueError(f"KV cache length must be positive, got {max_len}")
        shape = (batch_size, config.n_kv_head, max_len, config.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.segment_ids = torch.zeros(batch_size, max_len, device=device, dtype=torch.long)
        self.has_segments = False  # until a forward passes segment_ids: plain causal attention
        self.batch_size = batch_size
        self.max_len = max_len

    def reorder(self, index: torch.Tensor) -> None:
        """Keep only the rows in ``index`` (e.g. to drop finished sequences from a batch)."""
        self.keys = [k.index_select(0, index) for k in self.keys]
        self.values = [v.index_select(0, index) for v in self.values]
        self.segment_ids = self.segment_ids.index_select(0, index)
        self.batch_size = int(index.numel())


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """RMSNorm (Zhang & Sennrich 2019) computed in fp32 and cast back, as Llama and HF do."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


def make_norm(config: ModelConfig) -> nn.Module:
    if config.arch == "gpt2":
        return nn.LayerNorm(config.d_model, eps=config.norm_eps, bias=bool(config.bias))
    return RMSNorm(config.d_model, eps=config.norm_eps)


def rope_tables(config: ModelConfig, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [max_seq_len, head_dim] in HF's rotate_half layout (frequencies repeated twice).

    ``inv_freq[i] = theta^(-2i/head_dim)`` (Su et al. 2021, eq. 15).
    """
    hd = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float32, device=device) / hd))
    positions = torch.arange(config.max_seq_len, dtype=torch.float32, device=device)
    freqs = torch.outer(positions, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, H, T, hd]; cos/sin: [B, 1, T, hd]."""
    return (x * cos + rotate_half(x) * sin).to(x.dtype)


class Attention(nn.Module):
    """Multi-head (or grouped-query) self-attention through ``scaled_dot_product_attention``.

    One fused ``qkv`` projection: its output rows are all query heads, then the key heads, then the
    value heads (GPT-2's ``c_attn`` order, so export only transposes it).
    """

    def __init__(self, config: ModelConfig, layer_index: int) -> None:
        super().__init__()
        self.config = config
        self.layer_index = layer_index
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        q_out = config.n_head * config.head_dim
        self.qkv = nn.Linear(config.d_model, q_out + 2 * config.kv_dim, bias=bool(config.bias))
        self.proj = nn.Linear(q_out, config.d_model, bias=bool(config.bias))
        self.proj.is_residual_projection = True  # scaled init, see Transformer._init_weights
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor | None,
        kv_cache: KVCache | None,
        start_pos: int,
    ) -> torch.Tensor:
        b, t, _ = x.shape
        q_out = self.n_head * self.head_dim
        kv_dim = self.n_kv_head * self.head_dim
        q, k, v = self.qkv(x).split((q_out, kv_dim, kv_dim), dim=-1)
        q = q.view(b, t, self.n_head, self.head_dim).transpose(1, 2)
        k = k.view(b, t, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = v.view(b, t, self.n_kv_head, self.head_dim).transpose(1, 2)
        if rope is not None:
            cos, sin = rope
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

        is_causal = mask is None and kv_cache is None and t > 1
        if kv_cache is not None:
            end = start_pos + t
            kv_cache.keys[self.layer_index][:, :, start_pos:end] = k
            kv_cache.values[self.layer_index][:, :, start_pos:end] = v
            k = kv_cache.keys[self.layer_index][:, :, :end]
            v = kv_cache.values[self.layer_index][:, :, :end]
        if self.n_kv_head != self.n_head:
            # Each group of n_head / n_kv_head query heads shares one key/value head.
            repeat = self.n_head // self.n_kv_head
            k = k.repeat_interleave(repeat, dim=1)
            v = v.repeat_interleave(repeat, dim=1)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.config.dropout if self.training else 0.0,
            is_causal=is_causal,
        )
        y = y.transpose(1, 2).contiguous().view(b, t, q_out)
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    """GPT-2: ``fc -> GELU(tanh) -> proj``. Llama: ``down(silu(gate(x)) * up(x))`` (SwiGLU)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.arch = config.arch
        bias = bool(config.bias)
        if config.arch == "gpt2":
            self.fc = nn.Linear(config.d_model, config.d_ff, bias=bias)
        else:
            self.gate = nn.Linear(config.d_model, config.d_ff, bias=bias)
            self.up = nn.Linear(config.d_model, config.d_ff, bias=bias)
        self.proj = nn.Linear(config.d_ff, config.d_model, bias=bias)
        self.proj.is_residual_projection = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.arch == "gpt2":
            h = F.gelu(self.fc(x), approximate="tanh")
        else:
            h = F.silu(self.gate(x)) * self.up(x)
        return self.dropout(self.proj(h))


class Block(nn.Module):
    """Pre-norm residual block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, config: ModelConfig, layer_index: int) -> None:
        super().__init__()
        self.attn_norm = make_norm(config)
        self.attn = Attention(config, layer_index)
        self.mlp_norm = make_norm(config)
        self.mlp = MLP(config)

    def forward(self, x, rope, mask, kv_cache, start_pos):
        x = x + self.attn(self.attn_norm(x), rope, mask, kv_cache, start_pos)
        return x + self.mlp(self.mlp_norm(x))


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------


class Transformer(nn.Module):
    """Decoder-only language model; ``forward`` returns next-token logits ``[B, T, vocab_size]``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.max_seq_len, config.d_model) if config.arch == "gpt2" else None
        self.emb_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.final_norm = make_norm(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        if config.arch == "llama":
            cos, sin = rope_tables(config)
            # Not persistent: derived from the config, so checkpoints hold only learned weights.
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    # -- initialisation ----------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """GPT-2 initialisation (Radford et al. 2019, sec. 2.3; nanoGPT's ``_init_weights``).

        Weights and embeddings ~ N(0, 0.02), biases 0, norms 1; the two projections that write into the
        residual stream in each block (attention output, MLP output) get std ``0.02 / sqrt(2 * n_layer)``
        so the residual stream's variance does not grow with depth. The Llama papers do not state
        their initialisation; litgpt, OLMo and torchtitan use the same N(0, 0.02) + scaled-residual
        scheme for Llama blocks, and so do we.
        """
        std = self.config.init_std
        residual_std = std / math.sqrt(2 * self.config.n_layer)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                s = residual_std if getattr(module, "is_residual_projection", False) else std
                nn.init.normal_(module.weight, mean=0.0, std=s)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, (nn.LayerNorm, RMSNorm)):
                nn.init.ones_(module.weight)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        if self.config.arch == "llama":
            cos, sin = rope_tables(self.config, device=self.rope_cos.device)
            self.rope_cos.copy_(cos)
            self.rope_sin.copy_(sin)

    # -- counts ------------------------------------------------------------------------------------
    def num_params(self, non_embedding: bool = False) -> int:
        """Counted from the actual parameters (tied weights once); equals ``config.num_params``."""
        total = sum(p.numel() for p in self.parameters())
        if non_embedding:
            total -= self.tok_emb.weight.numel()
            if self.pos_emb is not None:
                total -= self.pos_emb.weight.numel()
            if not self.config.tie_embeddings:
                total -= self.lm_head.weight.numel()
        return total

    def new_kv_cache(
        self, batch_size: int, max_len: int | None = None, dtype: torch.dtype | None = None
    ) -> KVCache:
        """A cache on this model's device and dtype for ``batch_size`` rows of up to ``max_len`` tokens."""
        weight = self.tok_emb.weight
        return KVCache(self.config, batch_size, max_len, device=weight.device, dtype=dtype or weight.dtype)

    # -- forward -----------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        segment_ids: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        start_pos: int = 0,
        position_ids: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> torch.Tensor:
        """Logits for every position (or the last ``logits_to_keep`` positions).

        Args:
            input_ids: ``LongTensor[B, T]``.
            segment_ids: optional ``LongTensor[B, T]``; token i attends to token j only if ``j <= i``
                and both have the same segment id (packed documents do not see each other).
            kv_cache: optional :class:`KVCache`; this call's keys/values are written at
                ``[start_pos, start_pos + T)`` and attention covers every cached position before them.
            start_pos: where this chunk starts in the cache (and its default position).
            position_ids: optional ``LongTensor[B, T]`` positions (default ``start_pos + arange(T)``);
                generation passes per-row positions so a left-padded prompt starts at position 0.
            logits_to_keep: if > 0, only the last this many positions go through the output
                projection (generation needs the last one; HF's argument of the same name).
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, time], got shape {tuple(input_ids.shape)}")
        b, t = input_ids.shape
        end = start_pos + t
        if position_ids is None:
            if end > self.config.max_seq_len:
                raise ValueError(
                    f"sequence of {end} tokens exceeds model.max_seq_len={self.config.max_seq_len}"
                )
            position_ids = torch.arange(start_pos, end, device=input_ids.device).unsqueeze(0).expand(b, t)
        elif position_ids.shape != input_ids.shape:
            raise ValueError("position_ids must have the shape of input_ids")
        if segment_ids is not None and segment_ids.shape != input_ids.shape:
            raise ValueError("segment_ids must have the shape of input_ids")
        if kv_cache is not None and (end > kv_cache.max_len or b != kv_cache.batch_size):
            raise ValueError(
                f"KV cache holds {kv_cache.batch_size} rows x {kv_cache.max_len} positions; "
                f"got {b} rows up to position {end}"
            )

        x = self.tok_emb(input_ids)
        if self.pos_emb is not None:
            x = x + self.pos_emb(position_ids)
        x = self.emb_dropout(x)
        rope = None
        if self.config.arch == "llama":
            rope = (self.rope_cos[position_ids].unsqueeze(1), self.rope_sin[position_ids].unsqueeze(1))
        mask = self._attention_mask(input_ids, segment_ids, kv_cache, start_pos)
        for block in self.blocks:
            x = block(x, rope, mask, kv_cache, start_pos)
        if logits_to_keep > 0:
            x = x[:, -logits_to_keep:]
        return self.lm_head(self.final_norm(x))

    @staticmethod
    def _attention_mask(
        input_ids: torch.Tensor,
        segment_ids: torch.Tensor | None,
        kv_cache: KVCache | None,
        start_pos: int,
    ) -> torch.Tensor | None:
        """Boolean ``[B, 1, T, S]`` mask (True = may attend), or None for SDPA's own causal path.

        Returned as None whenever SDPA can do without one: no segments and no cache (``is_causal``),
        or one decoded token against an unsegmented cache (it may see everything cached).
        """
        b, t = input_ids.shape
        device = input_ids.device
        if kv_cache is None:
            if segment_ids is None:
                return None
            causal = torch.ones(t, t, dtype=torch.bool, device=device).tril()
            same_segment = segment_ids.unsqueeze(2) == segment_ids.unsqueeze(1)
            return (same_segment & causal).unsqueeze(1)

        end = start_pos + t
        if segment_ids is not None:
            kv_cache.segment_ids[:, start_pos:end] = segment_ids
            kv_cache.has_segments = True
        elif kv_cache.has_segments:
            raise ValueError("this KV cache was filled with segment_ids; pass them on every call")
        if t == 1 and not kv_cache.has_segments:
            return None
        query_pos = torch.arange(start_pos, end, device=device).unsqueeze(1)
        key_pos = torch.arange(end, device=device).unsqueeze(0)
        mask = (key_pos <= query_pos).unsqueeze(0)  # [1, T, S]
        if kv_cache.has_segments:
            cached = kv_cache.segment_ids[:, :end]
            mask = mask & (segment_ids.unsqueeze(2) == cached.unsqueeze(1))
        return mask.unsqueeze(1)
