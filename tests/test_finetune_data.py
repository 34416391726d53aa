"""Chat data: record shapes, sandboxed templates, assistant spans → token masks, packing, and the
`format_chat` op on a curate batch."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from curation.chat import (ASSISTANT_SPANS, DEFAULT_CHAT_TEMPLATE, ChatError, FormatChat, FormatChatConfig,
                           choose_template, conversation_of, preference_of, render)
from curation.operator import registered_ops
from tests.finetune_support import SFT_TRAIN, records, sft_rows
from tests.tiny_lm import train_tokenizer
from training.finetune.data import pack_rows, preference_rows, tokenize_with_mask

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer()


def test_record_shapes_normalise_to_the_same_conversation():
    a = conversation_of({"prompt": "Why is the sky blue?", "response": "Rayleigh scattering."})
    b = conversation_of({"messages": [{"role": "user", "content": "Why is the sky blue?"},
                                      {"role": "assistant", "content": "Rayleigh scattering."}]})
    c = conversation_of({"messages": json.dumps(b)})  # keep_fields JSON-encodes lists
    assert a == b == c
    chosen, rejected = preference_of({"prompt": "2+2?", "chosen": "4", "rejected": "5", "system": "Be exact."})
    assert chosen[:2] == rejected[:2] and chosen[0] == {"role": "system", "content": "Be exact."}
    assert (chosen[-1]["content"], rejected[-1]["content"]) == ("4", "5")


@pytest.mark.parametrize("record, message", [
    ({"prompt": "hi"}, "expected {prompt, response}"),
    ({"prompt": "", "response": "x"}, "prompt is missing"),
    ({"messages": [{"role": "user", "content": "only a question"}]}, "no assistant message"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "role is 'wizard'"),
    ({"messages": "[not json"}, "not JSON"),
])
def test_bad_records_say_why(record, message):
    with pytest.raises(ChatError, match=message.replace("{", "\\{").replace("}", "\\}").replace("[", "\\[")):
        conversation_of(record)
    with pytest.raises(ChatError, match="identical"):
        preference_of({"prompt": "p", "chosen": "same", "rejected": "same"})


def test_render_marks_exactly_the_assistant_contents_and_their_turn_ends():
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello there"}, {"role": "user", "content": "Bye"},
                    {"role": "assistant", "content": "Farewell"}]
    text, spans = render(conversation)
    assert text == ("<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello there<|end|>\n"
                    "<|user|>\nBye<|end|>\n<|assistant|>\nFarewell<|end|>\n")
    assert [text[a:b] for a, b in spans] == ["Hello there<|end|>", "Farewell<|end|>"]
    prompt_text, none = render(conversation[:2], add_generation_prompt=True)
    assert prompt_text.endswith("<|assistant|>\n") and none == []


def test_any_template_that_prints_contents_works_and_the_sandbox_blocks_code(tmp_path):
    chatml = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}")
    text, spans = render([{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A!"}], chatml,
                         end_of_turn="<|im_end|>")
    assert [text[a:b] for a, b in spans] == ["A!<|im_end|>"]
    with pytest.raises(ChatError, match="SecurityError"):
        render([{"role": "assistant", "content": "x"}],
               "{{ ''.__class__.__mro__[1].__subclasses__() }}{% for m in messages %}{{ m.content }}{% endfor %}")
    with pytest.raises(ChatError, match="emitted 0 of 1"):
        render([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "nothing")
    # Template choice: the spec's, else the tokenizer's (HF layout), else the default.
    (tmp_path / "tokenizer.json").write_text("{}")
    assert choose_template(None, None, str(tmp_path / "tokenizer.json")) == (DEFAULT_CHAT_TEMPLATE, "default")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": chatml}))
    assert choose_template(None, None, str(tmp_path / "tokenizer.json"))[0] == chatml
    assert choose_template("{{ x }}", None, str(tmp_path / "tokenizer.json")) == ("{{ x }}", "spec")


def test_masked_tokens_are_exactly_the_assistant_tokens(tok):
    recs = records(SFT_TRAIN, 40)
    rendered = [render(conversation_of(r)) for r in recs]
    tokenized = tokenize_with_mask(tok, [t for t, _ in rendered], [s for _, s in rendered])
    for i, (rec, (text, spans)) in enumerate(zip(recs, rendered)):
        ids, mask = tokenized.row(i)
        assert tok.decode(ids.tolist(), skip_special_tokens=False) == text
        # The masked tokens decode to the assistant's content and its turn end, nothing else.
        masked = tok.decode(ids[mask == 1].tolist(), skip_special_tokens=False)
        assert masked == rec["response"] + "<|end|>"
        assert tok.decode(ids[mask == 0].tolist(), skip_special_tokens=False) == text[:spans[0][0]] + text[spans[0][1]:]


def test_packing_keeps_every_token_marks_each_conversation_and_counts_truncation(tok):
    recs = records(SFT_TRAIN, 60)
    rendered = [render(conversation_of(r)) for r in recs]
    eos = tok.token_to_id("<|eos|>")
    tokenized = tokenize_with_mask(tok, [t for t, _ in rendered], [s for _, s in rendered], append_id=eos)
    width = int(tokenized.lengths.max()) + 1
    table, truncated = pack_rows(tokenized, width, tok.token_to_id("<|pad|>"), packing=True)
    assert truncated == 0 and table.num_rows < len(recs)  # several conversations per row
    ids = np.stack(table.column("input_ids").to_numpy(zero_copy_only=False))
    mask = np.stack(table.column("loss_mask").to_numpy(zero_copy_only=False))
    assert int(mask.sum()) == int(tokenized.mask.sum())
    assert int((ids == eos).sum()) == len(recs)
    starts = table.column("doc_starts").to_pylist()
    conversations = sum(len([p for p in s if p < width and ids[r, p] != tok.token_to_id("<|pad|>")])
                        for r, s in enumerate(starts))
    assert conversations == len(recs)
    unpacked, _ = pack_rows(tokenized, width, tok.token_to_id("<|pad|>"), packing=False)
    assert unpacked.num_rows == len(recs)
    _, cut = pack_rows(tokenized, 48, tok.token_to_id("<|pad|>"), packing=True)
    assert cut == int((tokenized.lengths > 48).sum()) > 0


def test_preference_rows_leave_room_for_a_full_forward_and_drop_pairs_cut_away(tok):
    pairs = [preference_of({"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven."}),
             preference_of({"prompt": "word " * 80, "chosen": "yes", "rejected": "no"})]
    chosen = [render(p[0]) for p in pairs]
    rejected = [render(p[1]) for p in pairs]
    c = tokenize_with_mask(tok, [t for t, _ in chosen], [s for _, s in chosen])
    r = tokenize_with_mask(tok, [t for t, _ in rejected], [s for _, s in rejected])
    table, ok = preference_rows(c, r, 65, tok.token_to_id("<|pad|>"))
    assert ok.tolist() == [True, False] and table.num_rows == 1
    ids = np.asarray(table.column("input_ids")[0].as_py())
    mask = np.asarray(table.column("loss_mask")[0].as_py())
    assert ids[-1] == tok.token_to_id("<|pad|>")  # the last position is never a real token
    assert tok.decode(ids[mask == 1].tolist(), skip_special_tokens=False) == "Blue.<|end|>"


def test_format_chat_op_renders_a_curate_batch_and_rejects_bad_rows_with_a_reason():
    assert "format_chat" in registered_ops()
    batch = pa.table({
        "doc_id": pa.array([1, 2, 3], pa.int64()),
        "text": ["What is 2+2?", "Name a planet.", "No answer here."],
        "response": ["4", "Mars", None],
    })
    op = FormatChat(FormatChatConfig())
    decision = op.process(batch)
    assert decision.keep.to_pylist() == [True, True, False]
    assert decision.reason.to_pylist() == [None, None, "bad_chat"]
    assert "response is missing" in decision.detail.to_pylist()[2]
    text = decision.table.column("text").to_pylist()
    spans = decision.table.column(ASSISTANT_SPANS).to_pylist()
    assert text[0] == "<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n4<|end|>\n"
    assert text[1][spans[1][0][0]:spans[1][0][1]] == "Mars<|end|>"
    assert text[2] == "No answer here."  # a rejected row keeps its original text


def test_sft_rows_tensor_shapes(tok):
    rows = sft_rows(tok, records(SFT_TRAIN, 20), width=129)
    assert set(rows) == {"input_ids", "segment_ids", "loss_mask"}
    assert rows["input_ids"].shape == rows["loss_mask"].shape == rows["segment_ids"].shape


def test_shipped_pairs_are_disjoint_from_the_held_out_eval_items():
    """Decontamination: no question of the train files is among the held-out eval items (the files
    specs/eval-finetune.yaml scores), and the files are what derive.py makes from data/eval."""
    import importlib.util

    from tests.finetune_support import INSTRUCT

    spec = importlib.util.spec_from_file_location("derive", INSTRUCT / "derive.py")
    derive = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(derive)
    train_prompts = {json.loads(line)["prompt"] for line in (INSTRUCT / "sft-arc_easy-piqa.train.jsonl").open()}
    for source in ("arc_easy", "piqa"):
        held = [json.loads(line) for line in (INSTRUCT / f"{source}.heldout-eval.jsonl").open()]
        assert held and not any(derive.in_train_partition(r["query"]) for r in held)
        assert not {derive.question(r["query"]) for r in held} & train_prompts
        full = [json.loads(line) for line in (derive.EVAL / f"{source}.jsonl").open()]
        assert len(held) == sum(not derive.in_train_partition(r["query"]) for r in full)
    pref = [json.loads(line) for line in (INSTRUCT / "pref-arc_easy-piqa.train.jsonl").open()]
    assert {r["prompt"] for r in pref} <= train_prompts and all(r["chosen"] != r["rejected"] for r in pref)
