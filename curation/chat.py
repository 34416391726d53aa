"""Chat data: normalising instruction / conversation / preference records and rendering them with a
Jinja chat template, marking the characters that belong to the assistant.

Three record shapes are accepted (the shapes TRL's SFT and DPO trainers read):

* ``{"prompt": str, "response": str}`` (optionally ``"system": str``): one user turn, one reply;
* ``{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}`` (OpenAI style);
* ``{"prompt": str, "chosen": str, "rejected": str}``: a preference pair for reward models and DPO.

Rendering uses a Jinja template in a *sandboxed* environment (``ImmutableSandboxedEnvironment``, as
HF transformers renders chat templates), so a template in a spec or a tokenizer file can read the
messages but never call into Python. The template comes from the spec, else from the tokenizer's own
``chat_template`` (``tokenizer_config.json`` or ``chat_template.jinja`` beside ``tokenizer.json``,
HF's layout), else :data:`DEFAULT_CHAT_TEMPLATE`, which uses the shard contract's special tokens.

Which characters are the assistant's: every assistant message's content is wrapped in two
private-use sentinel characters before rendering; after rendering the sentinels are located and
removed, and their positions become ``[start, end)`` character spans. This works for any template
that emits ``message.content`` as given (HF's ``{% generation %}`` tag solves the same problem by
asking template authors to mark the span; the sentinel needs no cooperation). When the template
closes an assistant turn with the end-of-turn marker (``<|end|>`` by default) right after the
content, the marker joins the span: the model must learn to end its turn.

The ``format_chat`` row op applies this to a curate run's rows, so the quality, toxicity, PII and
dedup ops that read ``text`` then apply to chat data too.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field, model_validator

from curation.operator import TEXT, Decision, OpConfig, RowOp, register_op, set_column

ROLES = ("system", "user", "assistant")
END_OF_TURN = "<|end|>"

# The default template: every turn is ``<|role|>\n`` + content + ``<|end|>\n``; a generation prompt
# opens an assistant turn. Same layout as ChatML (``<|im_start|>role\n … <|im_end|>\n``) with the
# shard contract's special tokens, so each role marker and turn end is one token.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

# Unicode private-use code points (never produced by tokenizers' normalisers, rare in real text;
# a message that contains one is rejected rather than mis-marked).
_OPEN, _CLOSE = "\U000F0001", "\U000F0002"

ASSISTANT_SPANS = "chat.assistant_spans"
MESSAGES = "chat.messages"
SPAN_TYPE = pa.list_(pa.list_(pa.int64(), 2))


class ChatError(ValueError):
    """A record that is not a usable conversation; the message is the rejection detail."""


# --------------------------------------------------------------------------------------------------
# normalising records


def normalize_messages(value: Any) -> list[dict[str, str]]:
    """Check an OpenAI-style message list and return it as plain ``{role, content}`` dicts."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ChatError(f"messages is not JSON: {exc}") from None
    if not isinstance(value, list) or not value:
        raise ChatError("messages must be a non-empty list of {role, content}")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise ChatError(f"messages[{i}] is not an object")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ChatError(f"messages[{i}].role is {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise ChatError(f"messages[{i}].content is not a string")
        out.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" and m["content"].strip() for m in out):
        raise ChatError("no assistant message with content: nothing to learn from")
    return out


def prompt_messages(prompt: Any, system: Any = None) -> list[dict[str, str]]:
    """The turns before a response: an optional system message and the user prompt (a string, or a
    message list for multi-turn prompts)."""
    if isinstance(prompt, list):
        turns = [{"role": m.get("role"), "content": m.get("content")} for m in prompt if isinstance(m, dict)]
        if len(turns) != len(prompt) or any(t["role"] not in ROLES or not isinstance(t["content"], str) for t in turns):
            raise ChatError("prompt is a list but not of {role, content} messages")
    elif isinstance(prompt, str) and prompt.strip():
        turns = [{"role": "user", "content": prompt}]
    else:
        raise ChatError("prompt is missing or empty")
    if system is not None:
        if not isinstance(system, str):
            raise ChatError("system is not a string")
        turns = [{"role": "system", "content": system}] + turns
    return turns


def conversation_of(record: dict[str, Any]) -> list[dict[str, str]]:
    """An SFT record (``messages`` or ``prompt``/``response``) as a message list."""
    if "messages" in record:
        return normalize_messages(record["messages"])
    if "prompt" in record and "response" in record:
        response = record["response"]
        if not isinstance(response, str) or not response.strip():
            raise ChatError("response is missing or empty")
        return normalize_messages(prompt_messages(record["prompt"], record.get("system"))
                                  + [{"role": "assistant", "content": response}])
    raise ChatError("expected {prompt, response} or {messages: [...]}; got keys " + ", ".join(sorted(record)))


def preference_of(record: dict[str, Any]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """A preference record as (chosen conversation, rejected conversation), sharing the prompt."""
    missing = [k for k in ("prompt", "chosen", "rejected") if k not in record]
    if missing:
        raise ChatError("a preference record needs prompt, chosen and rejected; missing " + ", ".join(missing))
    turns = prompt_messages(record["prompt"], record.get("system"))
    pair = []
    for key in ("chosen", "rejected"):
        value = record[key]
        if not isinstance(value, str) or not value.strip():
            raise ChatError(f"{key} is missing or empty")
        pair.append(normalize_messages(turns + [{"role": "assistant", "content": value}]))
    if record["chosen"] == record["rejected"]:
        raise ChatError("chosen and rejected are identical")
    return pair[0], pair[1]


# --------------------------------------------------------------------------------------------------
# rendering


@lru_cache(maxsize=16)
def compile_template(source: str):
    """A template compiled in Jinja's immutable sandbox (HF transformers' settings: trim_blocks,
    lstrip_blocks). A template that tries to reach Python internals fails with SecurityError."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)

    def raise_exception(message: str) -> None:  # HF templates call this to reject bad input
        raise ChatError(f"chat template: {message}")

    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)


def render(messages: list[dict[str, str]], template: str = DEFAULT_CHAT_TEMPLATE,
           end_of_turn: str | None = END_OF_TURN, add_generation_prompt: bool = False,
           special_tokens: dict[str, str] | None = None) -> tuple[str, list[tuple[int, int]]]:
    """Render a conversation; return the text and the ``[start, end)`` character spans of the
    assistant's content (plus a directly following ``end_of_turn`` marker)."""
    marked = []
    for m in messages:
        if _OPEN in m["content"] or _CLOSE in m["content"]:
            raise ChatError("a message contains a private-use sentinel character (U+F0001/U+F0002)")
        if m["role"] == "assistant":
            m = {**m, "content": _OPEN + m["content"] + _CLOSE}
        marked.append(m)
    tokens = {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|pad|>", **(special_tokens or {})}
    try:
        raw = compile_template(template).render(messages=marked, add_generation_prompt=add_generation_prompt, **tokens)
    except ChatError:
        raise
    except Exception as exc:  # jinja2 errors, SecurityError: the template is at fault
        raise ChatError(f"chat template failed: {type(exc).__name__}: {exc}") from None
    text_parts: list[str] = []
    spans: list[tuple[int, int]] = []
    length = 0
    start = None
    i = 0
    while i < len(raw):
        j = min((k for k in (raw.find(_OPEN, i), raw.find(_CLOSE, i)) if k >= 0), default=-1)
        if j < 0:
            text_parts.append(raw[i:])
            length += len(raw) - i
            break
        text_parts.append(raw[i:j])
        length += j - i
        if raw[j] == _OPEN:
            if start is not None:
                raise ChatError("chat template nests assistant contents")
            start = length
        else:
            if start is None:
                raise ChatError("chat template emits an assistant content twice or out of order")
            end = length
            if end_of_turn and raw.startswith(end_of_turn, j + 1):
                end += len(end_of_turn)
            spans.append((start, end))
            start = None
        i = j + 1
    expected = sum(m["role"] == "assistant" for m in messages)
    if start is not None or len(spans) != expected:
        raise ChatError(f"chat template emitted {len(spans)} of {expected} assistant contents; it must "
                        "print every message's content unchanged")
    return "".join(text_parts), spans


def template_from_tokenizer(tokenizer_json: str | os.PathLike) -> str | None:
    """The chat template that ships with a tokenizer, HF layout: ``chat_template.jinja`` or the
    ``chat_template`` key of ``tokenizer_config.json`` beside ``tokenizer.json``."""
    folder = Path(tokenizer_json).parent
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    config = folder / "tokenizer_config.json"
    if config.is_file():
        try:
            value = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        except (json.JSONDecodeError, AttributeError):
            return None
        if isinstance(value, str):
            return value
        if isinstance(value, list):  # HF allows named templates; "default" is the one used
            named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
            return named.get("default")
    return None


def choose_template(inline: str | None, file: str | None, tokenizer_json: str | None) -> tuple[str, str]:
    """(template, where it came from): the spec's, else the tokenizer's, else the default."""
    if inline:
        return inline, "spec"
    if file:
        return Path(file).read_text(encoding="utf-8"), file
    if tokenizer_json:
        found = template_from_tokenizer(tokenizer_json)
        if found:
            return found, f"tokenizer ({Path(tokenizer_json).parent})"
    return DEFAULT_CHAT_TEMPLATE, "default"


# --------------------------------------------------------------------------------------------------
# the row op


class FormatChatConfig(OpConfig):
    template: str | None = Field(None, description="Jinja chat template (rendered sandboxed); default: the "
                                 "tokenizer's chat_template, else the built-in <|role|> … <|end|> template")
    template_file: str | None = Field(None, description="a file holding the Jinja chat template")
    tokenizer: str | None = Field(None, description="tokenizer.json whose folder may hold a chat_template "
                                  "(tokenizer_config.json or chat_template.jinja)")
    messages_column: str = Field("messages", description="column of JSON message lists (keep_fields JSON-encodes them)")
    prompt_column: str = Field("text", description="column of prompts when there is no messages column "
                               "(a jsonl input with text_field: prompt puts them in `text`)")
    response_column: str = Field("response", description="column of responses paired with prompt_column")
    system_column: str | None = Field(None, description="optional column of system prompts")
    end_of_turn: str | None = Field(END_OF_TURN, description="marker that closes a turn; counted as the "
                                    "assistant's when it directly follows the assistant's content")

    path_fields: ClassVar[tuple[str, ...]] = ("template_file", "tokenizer")

    @model_validator(mode="after")
    def _one_template(self):
        if self.template and self.template_file:
            raise ValueError("give template or template_file, not both")
        return self


@register_op
class FormatChat(RowOp):
    """Render conversations with a chat template into `text`; mark the assistant's character spans."""

    name = "format_chat"
    memory = ("per conversation: its messages and the rendered text (a few times the conversation); the Jinja "
              "template once per worker; not measured")
    Config = FormatChatConfig
    defaults_from = "sandboxed Jinja as HF transformers' apply_chat_template; ChatML-style default template"

    def setup(self) -> None:
        cfg: FormatChatConfig = self.config  # type: ignore[assignment]
        self.template, _ = choose_template(cfg.template, cfg.template_file, cfg.tokenizer)
        compile_template(self.template)

    def process(self, batch: pa.Table) -> Decision:
        if not hasattr(self, "template"):
            self.setup()
        cfg: FormatChatConfig = self.config  # type: ignore[assignment]
        names = set(batch.column_names)
        n = batch.num_rows
        # A row lacking what a conversation needs is rejected with the reason (not an op failure): a
        # curate run over mixed rows keeps the good ones and shows the others in rejected/.
        if cfg.messages_column in names:
            records = [{"messages": m} for m in batch.column(cfg.messages_column).to_pylist()]
        else:
            def column(name: str | None) -> list:
                return batch.column(name).to_pylist() if name in names else [None] * n

            prompts, responses, systems = column(cfg.prompt_column), column(cfg.response_column), column(cfg.system_column)
            has = {"prompt": cfg.prompt_column in names, "response": cfg.response_column in names}
            records = [{k: v for k, v in (("prompt", p), ("response", r), ("system", s))
                        if has.get(k) or v is not None} for p, r, s in zip(prompts, responses, systems)]
        texts, spans, messages, keep, reasons, details = [], [], [], [], [], []
        for record in records:
            try:
                conversation = conversation_of(record)
                text, assistant = render(conversation, self.template, cfg.end_of_turn)
            except ChatError as exc:
                texts.append(None)
                spans.append(None)
                messages.append(None)
                keep.append(False)
                reasons.append("bad_chat")
                details.append(str(exc))
                continue
            texts.append(text)
            spans.append([list(s) for s in assistant])
            messages.append(json.dumps(conversation, ensure_ascii=False))
            keep.append(True)
            reasons.append(None)
            details.append(None)
        # A rejected row keeps its original text, so the rejected/ folder shows what was wrong.
        original = batch.column(TEXT).to_pylist() if TEXT in names else [None] * n
        texts = [t if t is not None else o for t, o in zip(texts, original)]
        table = set_column(batch, TEXT, pa.array(texts, pa.string()))
        table = set_column(table, ASSISTANT_SPANS, pa.array(spans, SPAN_TYPE))
        table = set_column(table, MESSAGES, pa.array(messages, pa.string()))
        return Decision(table, keep=pa.array(keep, pa.bool_()), reason=pa.array(reasons, pa.string()),
                        detail=pa.array(details, pa.string()))
