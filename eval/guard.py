"""Output guard for ``gristmill generate --guard``: a generation is blocked when the toxicity
classifier scores it above a threshold or when it contains a blocklisted word or phrase; a blocked
generation is replaced by :data:`REFUSAL` and the reason is reported.

Blocklist entries are matched as the ``toxicity`` op matches the LDNOOBW lists
(:func:`curation.classifiers.apply.wordlist_tokens`: NFKC, lower-case, on word tokens), so ``ass``
does not block ``class`` and ``bad  word`` blocks ``Bad, word``. The blocklist is checked first (a
listed word is a decision the user made), then the classifier.

The guard scores the generated text only, not the prompt: a user's prompt is theirs, the guard is
about what the model adds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from curation.classifiers.apply import wordlist_tokens
from eval.safety import ToxicityScorer

REFUSAL = "[blocked by output guard]"
DEFAULT_THRESHOLD = 0.5  # the toxicity op's default max_score


@dataclass(frozen=True)
class Verdict:
    blocked: bool
    reason: str | None  # "blocklist: 'word'" or "toxicity 0.93 > 0.5"
    score: float | None  # the classifier's score (None without a classifier or when the blocklist decided)


class Blocklist:
    """Words and phrases, each a sequence of word tokens."""

    def __init__(self, entries: list[str]):
        self.entries: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        for entry in entries:
            tokens = tuple(wordlist_tokens(entry))
            if tokens:
                self.entries.setdefault(tokens[0], []).append((tokens, entry.strip()))

    @staticmethod
    def read_file(path: str | Path) -> list[str]:
        """Entries of a blocklist file: one a line; blank lines and lines starting with ``#`` skipped."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"blocklist file {path} not found")
        lines = path.read_text(encoding="utf-8").splitlines()
        return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]

    def __len__(self) -> int:
        return sum(len(v) for v in self.entries.values())

    def find(self, text: str) -> str | None:
        tokens = wordlist_tokens(text)
        for i, token in enumerate(tokens):
            for entry, listed in self.entries.get(token, ()):
                if tuple(tokens[i:i + len(entry)]) == entry:
                    return listed
        return None


class OutputGuard:
    def __init__(self, scorer: ToxicityScorer | None = None, threshold: float = DEFAULT_THRESHOLD,
                 blocklist: Blocklist | None = None):
        if scorer is None and not blocklist:
            raise ValueError("the output guard needs a classifier or a non-empty blocklist")
        if not 0 <= threshold <= 1:
            raise ValueError(f"guard threshold must be in [0, 1], got {threshold}")
        self.scorer, self.threshold, self.blocklist = scorer, threshold, blocklist

    def check(self, texts: list[str]) -> list[Verdict]:
        listed = [self.blocklist.find(t) if self.blocklist else None for t in texts]
        scores = self.scorer.score(texts) if self.scorer is not None else [None] * len(texts)
        out = []
        for text, hit, score in zip(texts, listed, scores):
            if hit is not None:
                out.append(Verdict(True, f"blocklist: {hit!r}", None if score is None else float(score)))
            elif score is not None and score > self.threshold:
                entry = self.scorer.first_listed(text) if self.scorer is not None else None
                detail = f" (listed: {entry!r})" if entry else ""
                out.append(Verdict(True, f"toxicity {score:.3f} > {self.threshold}{detail}", float(score)))
            else:
                out.append(Verdict(False, None, None if score is None else float(score)))
        return out

    def filter(self, texts: list[str]) -> list[tuple[str, Verdict]]:
        """Each text, or :data:`REFUSAL` in place of a blocked one, with its verdict."""
        return [(REFUSAL if v.blocked else t, v) for t, v in zip(texts, self.check(texts))]


def build_guard(model: str | None = None, threshold: float = DEFAULT_THRESHOLD, blocklist_file: str | None = None,
                block: list[str] | None = None, method: str = "fasttext", classifier: bool = True) -> OutputGuard:
    """The guard the CLI builds: the classifier (``model`` or the default model, or the word lists
    with ``method='wordlist'``) unless ``classifier`` is False, plus the blocklist file and words."""
    entries = list(block or []) + (Blocklist.read_file(blocklist_file) if blocklist_file else [])
    scorer = ToxicityScorer(method=method, model=model) if classifier else None
    return OutputGuard(scorer, threshold, Blocklist(entries) if entries else None)
