"""Tokenizer training, round trips, packing invariants and the train / val split (no Ray needed)."""

from __future__ import annotations

import json
import random
import unicodedata

import numpy as np
import pyarrow as pa
import pytest

from curation.tokenize.encode import DocumentEncoder, encode_texts, shuffle_keys
from curation.tokenize.order import BIN_SHIFT, plan_groups, profile_files, read_group_texts
from curation.tokenize.pack import DocumentPacker, pack_documents
from curation.tokenize.shards import KEY_SPACE, key_ranges, rows_per_shard
from curation.tokenize.split import val_mask
from curation.tokenize.train import (SPECIAL_TOKENS, TokenizerTrainConfig, choose_sample, for_documents,
                                     load_tokenizer, special_token_ids, tokenizer_bytes, train_bpe)
from pipelines.errors import SpecError
from pipelines.specs import validate_spec
from pipelines.yaml_source import load_yaml
from tests.conftest import DATA

EOS = 1


def shipped_texts() -> list[str]:
    files = sorted((DATA / "text" / "moby-dick").glob("chapter_*.txt"))[:40]
    return [p.read_text(encoding="utf-8") for p in files]


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe(iter(shipped_texts()[:20]), TokenizerTrainConfig(vocab_size=600, min_frequency=2))


def random_unicode(rng: random.Random, n: int) -> str:
    """Code points from every plane that matters: ASCII and controls (NUL included), Latin with
    combining marks, CJK, emoji (with ZWJ and variation selectors), private use, astral planes."""
    pools = [(0, 0x7F), (0x80, 0x24F), (0x300, 0x36F), (0x4E00, 0x9FFF), (0x1F300, 0x1FAFF), (0xE000, 0xF8FF),
             (0x10000, 0x10FFFF)]
    out = []
    for _ in range(n):
        lo, hi = rng.choice(pools)
        cp = rng.randint(lo, hi)
        if 0xD800 <= cp <= 0xDFFF:  # surrogates are not text
            cp = 0xFFFD
        out.append(chr(cp))
    return "".join(out) + "\u200d\ufe0f\x00"


def test_special_tokens_have_fixed_ids(tokenizer):
    assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert special_token_ids(tokenizer) == {"bos_id": 0, "eos_id": 1, "pad_id": 2}
    assert tokenizer.get_vocab_size() == 600


def test_round_trip_on_shipped_text(tokenizer):
    tok = for_documents(tokenizer)
    texts = shipped_texts()[20:]  # chapters the tokenizer was not trained on
    texts += [(DATA / "text" / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:50_000]]
    flat, lengths = encode_texts(tok, texts)
    assert flat.dtype == np.int32 and int(lengths.sum()) == flat.shape[0]
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    for text, a, b in zip(texts, bounds[:-1], bounds[1:]):
        assert tok.decode(flat[a:b].tolist(), skip_special_tokens=False) == text
    # the learned merges compress English: far fewer tokens than bytes
    assert flat.shape[0] < 0.5 * sum(len(t.encode()) for t in texts)


def test_byte_fallback_round_trip_on_any_unicode(tokenizer):
    tok = for_documents(tokenizer)
    rng = random.Random(7)
    texts = [random_unicode(rng, rng.randint(0, 300)) for _ in range(200)]
    texts += ["", "\x00", "e\u0301\u0302", unicodedata.normalize("NFD", "Ångström café"), "👩‍👩‍👧‍👦🏳️‍🌈",
              "日本語のテキスト、中文文本，한국어", "\r\n\t \u00a0\u2028", "\U0010FFFF\U000E0001"]
    for text, enc in zip(texts, tok.encode_batch_fast(texts, add_special_tokens=False)):
        assert tok.decode(enc.ids, skip_special_tokens=False) == text


def test_special_token_text_in_documents_stays_text(tokenizer):
    tok = for_documents(tokenizer)
    text = "before <|eos|> and <|user|> after <|bos|>"
    ids = tok.encode(text).ids
    assert not set(ids) & set(range(len(SPECIAL_TOKENS)))
    assert tok.decode(ids, skip_special_tokens=False) == text
    # the saved file does not carry the flag: a chat template still gets real special tokens
    fresh = load_tokenizer(tokenizer_bytes(tokenizer))
    assert fresh.encode("<|user|>").ids == [3]


def test_document_encoder_equals_literal_encoding(tokenizer):
    """The fast path (plain tokenizer for texts without "<|") gives exactly the literal tokenizer's ids."""
    rng = random.Random(11)
    texts = shipped_texts()[20:30] + [random_unicode(rng, rng.randint(0, 200)) for _ in range(50)]
    texts += ["before <|eos|> and <|user|> after", "a <| b |> c", "<|end|>", "", "x<|pad|>"]
    rng.shuffle(texts)
    encoder = DocumentEncoder(tokenizer_bytes(tokenizer))
    for batch in (texts, [t for t in texts if "<|" not in t], [t for t in texts if "<|" in t]):
        got = encoder.encode(pa.array(batch))
        want = encode_texts(for_documents(load_tokenizer(tokenizer_bytes(tokenizer))), batch)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    assert encoder.markers == ["<|"]


def test_saved_tokenizer_loads_in_transformers(tokenizer, tmp_path):
    transformers = pytest.importorskip("transformers")
    path = tmp_path / "tokenizer.json"
    path.write_bytes(tokenizer_bytes(tokenizer))
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token="<|eos|>", bos_token="<|bos|>",
                                              pad_token="<|pad|>")
    text = "Call me Ishmael. Some years ago — never mind how long precisely 🐋"
    assert hf.encode(text, add_special_tokens=False) == tokenizer.encode(text).ids
    assert hf.decode(hf.encode(text, add_special_tokens=False)) == text
    assert (hf.eos_token_id, hf.bos_token_id, hf.pad_token_id) == (1, 0, 2)


def test_a_tokenizer_without_the_special_tokens_is_refused(tmp_path):
    from tokenizers import Tokenizer, models

    plain = Tokenizer(models.BPE())
    with pytest.raises(ValueError, match="lacks special token"):
        load_tokenizer(plain.to_str().encode())


def test_training_is_deterministic():
    texts = shipped_texts()[:6]
    cfg = TokenizerTrainConfig(vocab_size=400)
    assert tokenizer_bytes(train_bpe(iter(texts), cfg)) == tokenizer_bytes(train_bpe(iter(texts), cfg))


def test_training_does_not_depend_on_text_order():
    """The sample reaches the trainer in Ray's completion order; the tokenizer must not care."""
    texts = [p for t in shipped_texts()[:6] for p in t.split("\n\n") if p.strip()]
    shuffled = texts[:]
    random.Random(3).shuffle(shuffled)
    cfg = TokenizerTrainConfig(vocab_size=400)
    assert tokenizer_bytes(train_bpe(iter(texts), cfg)) == tokenizer_bytes(
        train_bpe(iter([shuffled[:7], shuffled[7:]]), cfg))


def test_choose_sample_depends_on_hashes_not_order():
    rng = np.random.default_rng(0)
    n = 50
    cands = pa.table({"hash": rng.integers(0, 2**63, n).astype(np.uint64), "doc_id": np.arange(n, dtype=np.int64),
                      "chars": rng.integers(1, 100, n).astype(np.int64)})
    by_hash = cands.sort_by("hash")
    shuffled = cands.take(pa.array(rng.permutation(n)))
    ids, cut, kept = choose_sample(shuffled, sample_docs=10, sample_chars=10**9)
    assert ids.to_pylist() == by_hash.column("doc_id").to_pylist()[:10] and cut == -1
    assert choose_sample(cands, 10, 10**9)[0].to_pylist() == ids.to_pylist()
    # the character cap: whole documents in hash order, the one crossing the cap cut to fit
    chars = by_hash.column("chars").to_pylist()
    cap = sum(chars[:4]) + chars[4] // 2 + 1
    ids, cut, kept = choose_sample(shuffled, sample_docs=10**6, sample_chars=cap)
    assert ids.to_pylist() == by_hash.column("doc_id").to_pylist()[:5]
    assert cut == ids.to_pylist()[-1] and kept == cap - sum(chars[:4]) and 0 < kept < chars[4]
    exact = sum(chars[:3])  # a cap that ends exactly on a document: nothing is cut
    assert choose_sample(shuffled, 10**6, exact)[1:] == (-1, 0) and len(choose_sample(shuffled, 10**6, exact)[0]) == 3


# ------------------------------------------------------------------------------------------ packing


def expected_stream(docs: list[list[int]]) -> list[int]:
    return [t for d in docs for t in list(d) + [EOS]]


def expected_starts(docs: list[list[int]]) -> list[int]:
    starts, pos = [], 0
    for d in docs:
        starts.append(pos)
        pos += len(d) + 1
    return starts


def check_packing(docs: list[list[int]], rows, dropped_tokens: int, dropped_docs: int, seq_len: int) -> None:
    width = seq_len + 1
    stream = expected_stream(docs)
    assert rows.tokens.shape == (len(stream) // width, width)
    # no token lost or duplicated: rows + dropped tail == the EOS-separated stream, in order
    assert rows.tokens.reshape(-1).tolist() == stream[: rows.num_rows * width]
    assert dropped_tokens == len(stream) - rows.num_rows * width
    # doc_starts are exactly the document starts that fall in the rows; the rest begin in the tail
    starts = expected_starts(docs)
    in_rows = [s for s in starts if s < rows.num_rows * width]
    assert rows.doc_starts() == [[s % width for s in in_rows if s // width == r] for r in range(rows.num_rows)]
    assert dropped_docs == len(starts) - len(in_rows)
    for r, positions in enumerate(rows.doc_starts()):
        assert positions == sorted(positions) and all(0 <= p <= seq_len for p in positions)
        for p in positions:  # every document but the first in a row follows an EOS
            if p > 0:
                assert rows.tokens[r, p - 1] == EOS


def test_pack_hand_made_case():
    rows, dropped, dropped_docs = pack_documents([[5, 6, 7], [8, 9], [10, 11, 12, 13, 14, 15, 16]], seq_len=3, eos_id=EOS)
    assert rows.tokens.tolist() == [[5, 6, 7, 1], [8, 9, 1, 10], [11, 12, 13, 14]]
    assert rows.doc_starts() == [[0], [0, 3], []]  # row 2 starts inside a document: no 0
    assert (dropped, dropped_docs) == (3, 0)  # 15 16 EOS


def test_pack_exact_fit_and_empty_documents():
    rows, dropped, dropped_docs = pack_documents([[5], [], [6, 7]], seq_len=5, eos_id=EOS)
    assert rows.tokens.tolist() == [[5, 1, 1, 6, 7, 1]]
    assert rows.doc_starts() == [[0, 2, 3]]
    assert (dropped, dropped_docs) == (0, 0)
    rows, dropped, dropped_docs = pack_documents([[5, 6], [7]], seq_len=7, eos_id=EOS)
    assert rows.num_rows == 0 and (dropped, dropped_docs) == (5, 2)
    rows, dropped, dropped_docs = pack_documents([], seq_len=4, eos_id=EOS)
    assert rows.num_rows == 0 and (dropped, dropped_docs) == (0, 0)


def test_pack_long_document_spans_rows():
    doc = list(range(10, 40))
    rows, dropped, _ = pack_documents([doc], seq_len=7, eos_id=EOS)
    assert rows.doc_starts() == [[0], [], []]  # 30 tokens + EOS: three rows of 8, 7 left over
    assert dropped == 31 - 3 * 8
    check_packing([doc], rows, dropped, 0, 7)


@pytest.mark.parametrize("seq_len", [1, 4, 16, 63])
def test_pack_random_documents_invariants(seq_len):
    rng = np.random.default_rng(seq_len)
    docs = [rng.integers(7, 500, size=rng.integers(0, 90)).tolist() for _ in range(120)]
    rows, dropped, dropped_docs = pack_documents(docs, seq_len, EOS)
    check_packing(docs, rows, dropped, dropped_docs, seq_len)
    # carrying across batches gives exactly the rows of one big batch
    packer = DocumentPacker(seq_len, EOS)
    tokens, starts = [], []
    for lo in range(0, len(docs), 17):
        part = docs[lo: lo + 17]
        flat = np.array([t for d in part for t in d], dtype=np.int32)
        got = packer.add(flat, np.array([len(d) for d in part]))
        tokens += got.tokens.tolist()
        starts += got.doc_starts()
    assert tokens == rows.tokens.tolist() and starts == rows.doc_starts()
    assert packer.finish() == (dropped, dropped_docs)
    assert packer.tokens_in == len(expected_stream(docs)) and packer.documents_in == len(docs)


def test_packed_rows_to_arrow_matches_contract():
    rows, _, _ = pack_documents([[5, 6, 7], [8, 9]], seq_len=2, eos_id=EOS)
    table = rows.to_arrow()
    assert table.schema == pa.schema([("input_ids", pa.list_(pa.int32())), ("doc_starts", pa.list_(pa.int32()))])
    assert table.to_pydict() == {"input_ids": [[5, 6, 7], [1, 8, 9]], "doc_starts": [[0], [1]]}


# ---------------------------------------------------------------------------------- split, shuffle


def test_split_is_deterministic_and_batch_independent():
    texts = [f"document {i} " + "word " * (i % 13) for i in range(5000)]
    whole = val_mask(pa.array(texts), 0.1)
    assert np.array_equal(whole, val_mask(pa.array(texts), 0.1))
    # sliced, chunked and large_string arrays hash the same bytes
    pieces = np.concatenate([val_mask(pa.array(texts).slice(lo, 700), 0.1) for lo in range(0, 5000, 700)])
    assert np.array_equal(whole, pieces)
    assert np.array_equal(whole, val_mask(pa.chunked_array([texts[:123], texts[123:]]), 0.1))
    assert np.array_equal(whole, val_mask(pa.array(texts, pa.large_string()), 0.1))
    assert 0.08 < whole.mean() < 0.12
    # a larger fraction only adds documents to val (a threshold on one hash)
    assert not (whole & ~val_mask(pa.array(texts), 0.2)).any()
    assert not val_mask(pa.array(texts), 0.0).any()
    # duplicates land in the same split
    assert val_mask(pa.array(["same text", "same text"]), 0.5).tolist() in ([True, True], [False, False])
    with pytest.raises(ValueError, match="null text"):
        val_mask(pa.array(["a", None]), 0.1)


def test_shuffle_keys_and_key_ranges():
    a = shuffle_keys(0, "train", 3, 0, 1000)
    assert np.array_equal(a, shuffle_keys(0, "train", 3, 0, 1000))
    assert np.array_equal(a[500:], shuffle_keys(0, "train", 3, 500, 500))  # per row, not per call
    assert len(set(a.tolist()) | set(shuffle_keys(0, "val", 3, 0, 1000).tolist())
               | set(shuffle_keys(1, "train", 3, 0, 1000).tolist())) == 3000
    assert (a >= 0).all() and not np.array_equal(np.sort(a), a)
    ranges = key_ranges(total_rows=1000, rows_per_file=300)
    assert len(ranges) == 4 and ranges[0][0] == 0 and ranges[-1][1] is None
    assert all(hi == nxt for (_, hi), (nxt, _) in zip(ranges, ranges[1:]))
    counts = [int(((a >= lo) & (a < (hi if hi is not None else KEY_SPACE))).sum()) for lo, hi in ranges]
    assert sum(counts) == 1000 and min(counts) > 180  # uniform keys: near-equal shards
    assert key_ranges(5, 300) == [(0, None)]
    assert rows_per_shard(1, 255) == 1024


def _profile(bins: dict[int, tuple[int, int]], location: str = "f", lo=None, hi=None) -> dict:
    keys = sorted(bins)
    return {"location": location, "min_id": (keys[0] << BIN_SHIFT) if lo is None else lo,
            "max_id": ((keys[-1] + 1) << BIN_SHIFT) - 1 if hi is None else hi,
            "bins": keys, "bin_docs": [bins[k][0] for k in keys], "bin_bytes": [bins[k][1] for k in keys]}


def test_plan_groups_contiguous_balanced_and_layout_free():
    histogram = {b: (100, 1000) for b in range(10)}
    groups = plan_groups([_profile(histogram)], workers=3, group_bytes=10**9)
    assert len(groups) == 3 and [g.unit for g in groups] == [0, 1, 2]
    assert groups[0].lo == 0 and groups[-1].hi == 10 << BIN_SHIFT
    assert all(a.hi == b.lo for a, b in zip(groups, groups[1:])), "contiguous ranges"
    assert sum(g.documents for g in groups) == 1000 and max(g.text_bytes for g in groups) <= 4000
    assert len(plan_groups([_profile(histogram)], workers=1, group_bytes=2500)) == 4  # bytes set the floor
    assert len(plan_groups([_profile({5: (3, 30)})], workers=8, group_bytes=10)) == 1  # never more than bins
    # the same documents in two other files (one holding odd bins, one even): the same ranges
    odd = _profile({b: v for b, v in histogram.items() if b % 2}, "odd")
    even = _profile({b: v for b, v in histogram.items() if not b % 2}, "even")
    other = plan_groups([odd, even], workers=3, group_bytes=10**9)
    assert [(g.lo, g.hi, g.documents) for g in other] == [(g.lo, g.hi, g.documents) for g in groups]
    assert all(g.locations == ["even", "odd"] for g in other)
    assert plan_groups([], workers=2, group_bytes=10) == []


def test_group_texts_come_in_doc_id_order_whatever_the_file_layout(tmp_path):
    """What a resumed global stage does to data/: the same rows, other files, other order."""
    import pyarrow.parquet as pq

    ids = [(f << 32) | r for f in range(3) for r in range(700)]
    texts = {i: f"document {i} " + "x" * (i % 13) for i in ids}
    outcomes = []
    for layout, files in (("a", 2), ("b", 5)):
        order = np.random.default_rng(len(layout) + files).permutation(ids).tolist()
        chunks = np.array_split(np.array(order, dtype=np.int64), files)
        locations = []
        for k, chunk in enumerate(chunks):
            location = str(tmp_path / f"{layout}-{k}.parquet")
            pq.write_table(pa.table({"doc_id": chunk, "text": [texts[int(i)] for i in chunk]}), location,
                           row_group_size=128)
            locations.append(location)
        profiles = profile_files(pa.table({"location": locations})).to_pylist()
        groups = plan_groups(profiles, workers=2, group_bytes=1 << 30)
        outcomes.append([(g.lo, g.hi, read_group_texts(g.locations, g.lo, g.hi).to_pylist()) for g in groups])
    assert [(lo, hi) for lo, hi, _ in outcomes[0]] == [(lo, hi) for lo, hi, _ in outcomes[1]]
    assert outcomes[0] == outcomes[1]
    assert [t for _, _, group in outcomes[0] for t in group] == [texts[i] for i in sorted(ids)]


# ------------------------------------------------------------------------------------------- specs


def spec_with(steps: str):
    text = f"kind: curate\nname: t\ninput:\n  - format: text\n    paths: [x.txt]\nsteps:\n{steps}"
    data, source = load_yaml(text, "t.yaml", {})
    return validate_spec(data, source)


def test_spec_tokenize_fields_and_sink_position():
    loaded = spec_with("  - normalize: {}\n  - tokenize: {tokenizer: {train: {vocab_size: 4096}}, seq_len: 128}\n")
    cfg = loaded.steps[-1].config
    assert cfg.tokenizer.train.vocab_size == 4096 and cfg.seq_len == 128
    assert spec_with("  - tokenize: {tokenizer: tok/tokenizer.json}\n").steps[0].config.tokenizer.endswith(
        "tok/tokenizer.json")
    with pytest.raises(SpecError) as err:
        spec_with("  - tokenize: {}\n  - normalize: {}\n")
    assert "t.yaml:8" in str(err.value) and "must close `steps`" in str(err.value)
    with pytest.raises(SpecError, match="vocab_size"):
        spec_with("  - tokenize: {tokenizer: {train: {vocab_size: 10}}}\n")
    with pytest.raises(SpecError, match="unknown key 'train.vocab' \\(allowed: vocab_size"):
        spec_with("  - tokenize: {tokenizer: {train: {vocab: 4096}}}\n")
    with pytest.raises(SpecError, match="or a path to a tokenizer.json"):
        spec_with("  - tokenize: {tokenizer: 7}\n")
    with pytest.raises(SpecError, match="val_fraction"):
        spec_with("  - tokenize: {val_fraction: 1.5}\n")
    assert json.dumps(loaded.resolved())  # the resolved spec (spec.yaml) is plain data
