"""The one text preparation a fastText classifier sees, at training time and at apply time.

A classifier is only as good as the match between what it was trained on and what it is shown.
:func:`prepare_text` is therefore the *only* function that turns a document into classifier input:
:mod:`curation.classifiers.train` writes its training file with it, and the ops in
:mod:`curation.classifiers.apply` call it on every batch. The settings travel with the model
(``text_prep`` in the model folder's ``config.json``), and the ops read them from there, so a model
is always applied with the preparation it was trained with.

Steps, in order (each switch defaults to on; the defaults suit both web text and tweets):

1. ``unescape_html``: ``&amp;`` → ``&``, ``&#8220;`` → ``“``. Tweet dumps (the Davidson data) and
   scraped text often keep entities; on clean text this is a no-op.
2. ``strip_urls``: drop ``http(s)://…`` and ``www.…`` tokens. A URL's characters are noise for both
   quality and toxicity, and t.co links in tweets are random strings.
3. ``strip_mentions``: drop ``@handle`` tokens (not e-mail addresses). Handles are tweet-specific; a
   model that learns them would transfer badly to web pages.
4. ``lowercase``.
5. ``split_punctuation``: split words from punctuation runs (``"bitch!!"`` → ``bitch !!``), keeping
   in-word apostrophes (``don't``). fastText splits on whitespace only, so without this ``word``,
   ``word,`` and ``word!`` are three unrelated features (the fastText tutorial does the same).
6. Always: every run of whitespace (newlines, tabs, NUL, Unicode spaces) becomes one space, and the
   result is stripped. fastText reads one example per line, so no newline may survive.
7. Always: the string ``__label__`` is defused (``__label__x`` inside a document would otherwise be
   read as a label when training).

A null document prepares to the empty string.
"""

from __future__ import annotations

import html
import re
from typing import Iterable

from pydantic import BaseModel, ConfigDict, Field

# A URL runs to the next space, less the punctuation that ends a sentence around it ("see x.org/a.").
_URL = re.compile(r"(?:\bhttps?://|\bwww\.)\S+?(?=[.,;:!?)\]}'\"”’…]*(?:\s|$))", re.IGNORECASE)
# A handle not preceded by a word character, so e-mail addresses (me@example.org) survive.
_MENTION = re.compile(r"(?<![\w@])@\w+")
# A word (letters/digits/underscore, with in-word apostrophes) or a run of other non-space characters.
_TOKEN = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]+")
_LABEL_PREFIX = "__label__"


class TextPrep(BaseModel):
    """Switches of :func:`prepare_text`; stored with every trained model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unescape_html: bool = Field(True, description="decode HTML entities (&amp; &#8220;)")
    strip_urls: bool = Field(True, description="drop http(s):// and www. tokens")
    strip_mentions: bool = Field(True, description="drop @handle tokens (not e-mail addresses)")
    lowercase: bool = Field(True, description="lower-case the text")
    split_punctuation: bool = Field(True, description="separate punctuation runs from words")


DEFAULT_PREP = TextPrep()


def prepare_text(text: str | None, prep: TextPrep = DEFAULT_PREP) -> str:
    """One document as one line of classifier input (see the module docstring for the steps)."""
    if not text:
        return ""
    if prep.unescape_html and "&" in text:
        text = html.unescape(text)
    if prep.strip_urls:
        text = _URL.sub(" ", text)
    if prep.strip_mentions and "@" in text:
        text = _MENTION.sub(" ", text)
    if prep.lowercase:
        text = text.lower()
    text = text.replace("\x00", " ")
    if prep.split_punctuation:
        words = _TOKEN.findall(text)
    else:
        words = text.split()  # str.split() splits on every Unicode whitespace, \n \r \x0b \x0c \x85 included
    out = " ".join(words)
    if _LABEL_PREFIX in out:
        out = out.replace(_LABEL_PREFIX, "__ label __")
    return out


def prepare_texts(texts: Iterable[str | None], prep: TextPrep = DEFAULT_PREP) -> list[str]:
    return [prepare_text(t, prep) for t in texts]
