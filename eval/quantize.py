"""int8 dynamic quantisation of a model's Linear layers, for CPU inference.

``torch.ao.quantization.quantize_dynamic`` (Jacob et al. 2018; PyTorch's "dynamic quantization"
recipe): every ``nn.Linear`` weight is stored as int8 with one fp32 scale per tensor, activations are
quantised on the fly per batch, and the matmul runs in int8 (fbgemm / x86 kernels). Embeddings and
norms stay fp32. A tied output projection becomes an int8 copy of the embedding, so the embedding is
stored twice (once fp32, once int8).

PyTorch marks these APIs deprecated in favour of ``torchao``; they are still the only int8 path that
ships with the pinned torch (torchao is a separate install), so we call them and silence the notice.
"""

from __future__ import annotations

import copy
import io
import warnings

import torch
from torch import nn

from eval.checkpoints import EvalModel


def quantize_int8(model: nn.Module) -> nn.Module:
    """An int8 dynamically quantised copy of ``model`` (the original is left untouched), in eval mode."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, UserWarning, FutureWarning))
        quantized = quantize_dynamic(copy.deepcopy(model).cpu().eval(), {nn.Linear}, dtype=torch.qint8)
    return quantized.eval()


def quantize_eval_model(em: EvalModel) -> EvalModel:
    """The same checkpoint with an int8 model (CPU only: the dynamic int8 kernels are CPU kernels)."""
    if em.device.type != "cpu":
        raise ValueError("int8 dynamic quantisation runs on CPU; load the checkpoint with device='cpu'")
    return EvalModel(quantize_int8(em.model), em.tokenizer, em.config, em.path, em.step)


def serialized_size(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: what the weights take on disk (packed int8
    weights and their scales for a quantised model)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(model.state_dict(), buffer)
    return buffer.tell()
