"""lm-evaluation-harness adapter: ``GristmillLM`` is an ``lm_eval.api.model.LM``, so any lm-eval task
(including tasks defined by local YAML files over local JSONL) runs on a Gristmill checkpoint::

    import lm_eval
    from lm_eval.tasks import TaskManager
    from eval.lm_eval_adapter import GristmillLM

    lm = GristmillLM("runs/pretrain-tiny")            # a run directory or a checkpoint directory
    out = lm_eval.simple_evaluate(model=lm, tasks=["my_arc"],
                                  task_manager=TaskManager(include_path="my_tasks/"))

lm-eval is an optional dependency (``pip install gristmill[eval]``); importing this module without
it raises an ImportError that says so.

The three request types go through the same code as our own runner, so a task scored both ways
gets the same numbers (``tests/test_eval_lm_eval.py`` checks it):

* ``loglikelihood`` → :func:`eval.loglikelihood.score_pairs` (boundary tokenisation and batching
  described there);
* ``loglikelihood_rolling`` → :func:`eval.loglikelihood.rolling_windows` with the model's full
  context, which are lm-eval's own windows, summed per document;
* ``generate_until`` → ``training.generate.generate_text`` with a KV cache: ``until`` stop strings,
  ``max_gen_toks`` (default 256, lm-eval's ``HFLM`` default), greedy unless ``do_sample`` /
  ``temperature`` ask otherwise.
"""

from __future__ import annotations

import os
from typing import Any

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("the lm-eval adapter needs lm-evaluation-harness: pip install 'gristmill[eval]'") from exc

from eval.checkpoints import EvalModel, load_eval_model
from eval.loglikelihood import rolling_windows, score_pairs, score_requests
from training.generate import SamplingParams, generate_text

DEFAULT_MAX_GEN_TOKS = 256  # lm_eval.models.huggingface.HFLM's default


@register_model("gristmill")  # model="gristmill", model_args="checkpoint=runs/x" once this module is imported
class GristmillLM(LM):
    def __init__(self, checkpoint: str | os.PathLike | EvalModel, batch_size: int = 16, device: str = "cpu",
                 max_gen_toks: int = DEFAULT_MAX_GEN_TOKS) -> None:
        super().__init__()
        self.em = checkpoint if isinstance(checkpoint, EvalModel) else load_eval_model(checkpoint, device)
        self.batch_size = int(batch_size)
        self.max_gen_toks = int(max_gen_toks)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> "GristmillLM":
        """``--model_args checkpoint=runs/x,batch_size=8`` from lm-eval's command line."""
        args: dict[str, Any] = dict(kv.split("=", 1) for kv in arg_string.split(",") if kv)
        for key, value in (additional_config or {}).items():
            if value is not None and key in ("batch_size", "device"):
                args.setdefault(key, value)
        return cls(**args)

    # -- request types -----------------------------------------------------------------------------
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        scores = score_pairs(self.em, [tuple(r.args[:2]) for r in requests], self.batch_size)
        return [(s.logprob, s.greedy) for s in scores]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        texts = [r.args[0] for r in requests]
        encodings = self.em.tokenizer.encode_batch(texts, add_special_tokens=False)
        windows, owner = [], []
        for i, encoding in enumerate(encodings):
            for window in rolling_windows(encoding.ids, self.em.boundary_id, self.em.config.max_seq_len):
                windows.append(window)
                owner.append(i)
        totals = [0.0] * len(texts)
        for i, score in zip(owner, score_requests(self.em, windows, self.batch_size)):
            totals[i] += score.logprob
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out = []
        for request in requests:  # each request may carry its own stops and settings
            context, kwargs = request.args[0], dict(request.args[1] or {})
            until = kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            temperature = float(kwargs.pop("temperature", 0.0) or 0.0)
            if not kwargs.pop("do_sample", False):
                temperature = 0.0
            params = SamplingParams(max_new_tokens=int(kwargs.pop("max_gen_toks", self.max_gen_toks)),
                                    temperature=temperature, top_k=kwargs.pop("top_k", None),
                                    top_p=kwargs.pop("top_p", None), seed=kwargs.pop("seed", None))
            prompt_ids = self.em.tokenizer.encode(context, add_special_tokens=False).ids
            room = self.em.config.max_seq_len - 1 - params.max_new_tokens
            if len(prompt_ids) > max(room, 1):  # keep the end of a long prompt, as HFLM does
                context = self.em.tokenizer.decode(prompt_ids[-max(room, 1):])
            completion, = generate_text(self.em.model, self.em.tokenizer, [context], params, stop=until)
            out.append(completion.text)
        return out
