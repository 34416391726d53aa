"""The checks a distillation spec needs before anything trains: teacher and student (or the token
shards) must share a tokenizer and a vocabulary, since distillation compares logits id by id.

Kept apart from :mod:`training.finetune.distill` (the LightningModule) so that validating or
rerunning a ``method: distill`` spec on the driver does not import Lightning and torchmetrics
(~4 s on a 2-core machine) for two comparisons of files and sizes."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from training.model import ModelConfig


def _sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tokenizer_mismatch(teacher_tokenizer: str | Path, student_tokenizer: str | Path,
                       whose: str = "the student's") -> str | None:
    """None when both tokenizer files map the same strings to the same ids (byte-identical files, or
    the same vocabulary serialised differently); otherwise the reason, for the user."""
    if _sha256(teacher_tokenizer) == _sha256(student_tokenizer):
        return None
    from tokenizers import Tokenizer

    teacher = Tokenizer.from_file(str(teacher_tokenizer)).get_vocab(with_added_tokens=True)
    student = Tokenizer.from_file(str(student_tokenizer)).get_vocab(with_added_tokens=True)
    if teacher == student:
        return None
    differing = sorted(t for t in set(teacher) | set(student) if teacher.get(t) != student.get(t))
    return (f"the teacher's tokenizer ({teacher_tokenizer}: {len(teacher):,} tokens, sha256 "
            f"{_sha256(teacher_tokenizer)[:12]}) is not {whose} ({student_tokenizer}: {len(student):,} tokens, "
            f"sha256 {_sha256(student_tokenizer)[:12]}; {len(differing):,} tokens differ, e.g. {differing[:3]}); "
            "distillation compares logits id by id, so both must use the same tokenizer")


def vocab_mismatch(teacher: ModelConfig, student: ModelConfig) -> str | None:
    if teacher.vocab_size == student.vocab_size:
        return None
    return (f"the teacher's output has {teacher.vocab_size:,} logits per token, the student's "
            f"{student.vocab_size:,}: distillation needs the same vocabulary (and tokenizer)")
