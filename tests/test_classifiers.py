"""fastText classifiers: the shared text preparation, training + held-out metrics, the ROC-AUC
implementation, the `quality_classifier` and `toxicity` ops, and the default toxicity model."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

import curation.classifiers.apply  # noqa: F401  (registers the ops)
from curation.classifiers import train as train_mod
from curation.classifiers.default_toxicity import default_toxicity_config, train_default_toxicity
from curation.classifiers.text_prep import TextPrep, prepare_text
from curation.classifiers.train import ClassifierTrainConfig, classification_metrics, roc_auc, train_classifier
from curation.operator import get_op

DATA = Path(__file__).resolve().parent.parent / "data"


# ----------------------------------------------------------------------------------------- helpers


def shakespeare_speeches() -> list[str]:
    """Each speech of tinyshakespeare without its speaker line."""
    blocks = (DATA / "text" / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8").split("\n\n")
    return [" ".join(b.splitlines()[1:]) for b in blocks if len(b.splitlines()) > 1]


def sotu_sentences() -> list[str]:
    out = []
    for path in sorted((DATA / "text" / "sotu").glob("*.txt"))[::4]:
        out += [s.strip() for s in re.split(r"(?<=[.!?])\s+", path.read_text(encoding="utf-8")) if len(s.split()) >= 5]
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def davidson_model(tmp_path_factory) -> tuple[Path, dict]:
    """The default toxicity model, trained once for the module (about 1.5 s)."""
    folder = tmp_path_factory.mktemp("toxicity") / "model"
    train_default_toxicity(folder)
    return folder, json.loads((folder / "metrics.json").read_text())


@pytest.fixture(scope="module")
def quality_model(tmp_path_factory) -> tuple[Path, dict, list[str], list[str]]:
    """DCLM-style: Shakespeare speeches (positives, JSONL) against State of the Union sentences
    (negatives, Parquet), 3,000 of each sampled by the trainer. 200 of each, drawn at random, are
    kept out of the files to score with the op."""
    root = tmp_path_factory.mktemp("quality")
    speeches, sentences = shakespeare_speeches(), sotu_sentences()
    random.Random(0).shuffle(speeches)
    random.Random(0).shuffle(sentences)
    write_jsonl(root / "pos.jsonl", [{"body": t} for t in speeches[200:]])
    pq.write_table(pa.table({"text": sentences[200:]}), root / "neg.parquet")
    config = ClassifierTrainConfig(
        positives={"format": "jsonl", "paths": [str(root / "pos.jsonl")], "text_field": "body", "max_examples": 3000},
        negatives={"format": "parquet", "paths": [str(root / "*.parquet")], "max_examples": 3000},
        epoch=10, lr=0.5, dim=16, bucket=50_000)
    metrics = train_classifier(config, str(root / "model"))
    return root / "model", metrics, speeches[:200], sentences[:200]


def run_op(name: str, texts: list[str | None], extra: dict | None = None, **config):
    cls = get_op(name)
    op = cls(cls.Config(**config))
    op.setup()
    columns = {"text": pa.array(texts, pa.string()), **(extra or {})}
    decision = op.process(pa.table(columns))
    assert decision.table.num_rows == len(texts)
    return decision


# -------------------------------------------------------------------------------------- text prep


def test_prepare_text_defaults():
    assert prepare_text("RT @mleew17: Boy &amp; GIRL...\nsee http://t.co/x1 www.a.org/b!!") == "rt : boy & girl ... see !!"
    assert prepare_text("Don't\tstop\r\n\u00a0me\x00now") == "don't stop me now"
    assert prepare_text("mail me@example.org") == "mail me @ example . org"  # e-mail is not a mention
    assert prepare_text("__label__toxic hi") == "__ label __toxic hi"  # never read as a label
    assert prepare_text(None) == "" and prepare_text("  \n ") == ""
    raw = TextPrep(unescape_html=False, strip_urls=False, strip_mentions=False, lowercase=False, split_punctuation=False)
    assert prepare_text("Hi @you &amp;\nhttp://x.y/z!", raw) == "Hi @you &amp; http://x.y/z!"
    with pytest.raises(ValidationError):
        TextPrep(lower=True)


def test_training_and_apply_see_identical_text(tmp_path, monkeypatch):
    """What training writes to fastText's input file and what the op hands to predict() are the same
    strings for the same raw documents, with a non-default preparation read from the model folder."""
    raw = ["Hello @World &amp; http://x.org\n\nNEW line!!", "GOOD Morning,\tfriends", "Bad: terrible,  AWFUL...",
           "ok then &#8220;quoted&#8221;"] * 10 + [f"filler {i} words here" for i in range(20)]
    labels = ["a", "b"] * 30
    write_jsonl(tmp_path / "d.jsonl", [{"text": t, "y": y} for t, y in zip(raw, labels)])
    prep = {"lowercase": False, "strip_mentions": False}
    written: list[str] = []
    real_train = train_mod._train_in_child

    def spy_train(train_file, *args):
        written.extend(Path(train_file).read_text(encoding="utf-8").splitlines())
        return real_train(train_file, *args)

    monkeypatch.setattr(train_mod, "_train_in_child", spy_train)
    config = ClassifierTrainConfig(data={"format": "jsonl", "paths": [str(tmp_path / "d.jsonl")], "label_field": "y"},
                                   held_out_fraction=0.0, text_prep=prep, epoch=1, dim=4, bucket=1000)
    train_classifier(config, str(tmp_path / "m"))
    trained_texts = {line.split(" ", 1)[1] for line in written}
    assert json.loads((tmp_path / "m" / "config.json").read_text())["text_prep"] == TextPrep(**prep).model_dump()

    op = get_op("quality_classifier")(get_op("quality_classifier").Config(model=str(tmp_path / "m"), label="a"))
    op.setup()
    seen: list[str] = []
    real_predict = op.scorer.model.predict
    op.scorer.model.predict = lambda texts, k: (seen.extend(texts), real_predict(texts, k=k))[1]
    op.process(pa.table({"text": raw}))
    assert set(seen) == trained_texts
    assert "Hello @ World & NEW line !!" in trained_texts  # html unescaped, url gone, case and mention kept

    # The op refuses a preparation other than the one the model was trained with.
    cls = get_op("quality_classifier")
    with pytest.raises(ValueError, match="trained with text_prep"):
        cls(cls.Config(model=str(tmp_path / "m"), label="a", text_prep={})).setup()


# ---------------------------------------------------------------------------------------- metrics


def test_roc_auc_by_hand():
    # 4 positive/negative pairs: (0.35>0.1) (0.35<0.4) (0.8>0.1) (0.8>0.4) → 3/4
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    # A tie counts one half: pos {0.5, 0.9} vs neg {0.5, 0.2} → (0.5 + 1 + 1 + 1) / 4
    assert roc_auc(np.array([0.5, 0.5, 0.2, 0.9]), np.array([1, 0, 0, 1])) == 0.875
    assert roc_auc(np.array([0.9, 0.1]), np.array([0, 1])) == 0.0
    assert roc_auc(np.array([0.3, 0.3, 0.3]), np.array([1, 0, 1])) == 0.5
    assert roc_auc(np.array([0.1, 0.2]), np.array([1, 1])) is None
    # Against the pairwise definition on random scores with many ties.
    rng = np.random.default_rng(0)
    scores, y = rng.integers(0, 10, 300) / 10, rng.random(300) < 0.3
    pairs = [(1.0 if p > n else 0.5 if p == n else 0.0) for p in scores[y] for n in scores[~y]]
    assert roc_auc(scores, y) == pytest.approx(np.mean(pairs), abs=1e-12)


def test_classification_metrics_by_hand():
    labels = ["toxic", "clean"]
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
    true = ["toxic", "toxic", "toxic", "clean", "clean"]
    m = classification_metrics(true, probs, labels, "toxic")
    # toxic: predicted rows 0,1,3 → tp 2, fp 1, fn 1
    assert m["per_label"]["toxic"] == {"precision": 0.6667, "recall": 0.6667, "f1": 0.6667, "support": 3}
    assert m["per_label"]["clean"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["accuracy"] == 0.6 and m["macro_f1"] == 0.5833 and m["positive_f1"] == 0.6667
    assert m["roc_auc"] == pytest.approx(5 / 6, abs=1e-4)  # toxic {.9,.8,.3} vs clean {.6,.2}


# --------------------------------------------------------------------------------------- training


def test_default_toxicity_model_on_held_out_davidson(davidson_model):
    folder, metrics = davidson_model
    # Measured on the 10% held-out split (2,518 tweets + 438 Moby-Dick lines): F1(toxic) 0.967,
    # ROC-AUC 0.986, F1(clean) 0.922, accuracy 0.953. On the held-out tweets alone: F1 0.967, ROC-AUC
    # 0.974 (benchmarks/toxicity_vs_profanity_check).
    assert metrics["held_out_examples"] > 2500 and metrics["positive_label"] == "toxic"
    assert metrics["positive_f1"] >= 0.95
    assert metrics["roc_auc"] >= 0.96
    assert metrics["per_label"]["clean"]["f1"] >= 0.88
    labels = json.loads((folder / "labels.json").read_text())
    assert sorted(labels["labels"]) == ["clean", "toxic"] and labels["positive_label"] == "toxic"
    assert (folder / "model.bin").is_file()
    # Idempotent: a complete folder is reused, not retrained.
    stamp = (folder / "model.bin").stat().st_mtime_ns
    train_default_toxicity(folder)
    assert (folder / "model.bin").stat().st_mtime_ns == stamp


def test_training_is_deterministic_and_split_is_by_text(tmp_path):
    config = default_toxicity_config().model_copy(update={"epoch": 2})
    config.data[0].max_examples = 3000
    a, b = train_classifier(config, str(tmp_path / "a")), train_classifier(config, str(tmp_path / "b"))
    for key in ("accuracy", "roc_auc", "train_examples", "held_out_examples", "per_label"):
        assert a[key] == b[key]
    examples = [("x", f"text {i}") for i in range(2000)] + [("y", "same text")] * 50
    train, held = train_mod.split_examples(examples, 0.1, seed=3)
    assert 150 < len(held) < 260
    assert [t for t in train if t[1] == "same text"] in ([], [("y", "same text")] * 50)  # duplicates stay together
    assert train_mod.split_examples(examples, 0.1, seed=3) == (train, held)


def test_dclm_style_positives_negatives_separate(quality_model):
    folder, metrics, speeches, sentences = quality_model
    # Measured: held-out accuracy 0.963, ROC-AUC 0.993; on the 400 unseen texts ROC-AUC 0.996, with
    # 198/200 speeches and 7/200 sentences kept at 0.5.
    assert metrics["positive_label"] == "positive" and metrics["train_examples"] > 5000
    assert metrics["accuracy"] >= 0.94 and metrics["roc_auc"] >= 0.98
    d = run_op("quality_classifier", speeches + sentences, model=str(folder), min_score=0.5)
    scores = d.table.column("quality_classifier.score").to_numpy()
    assert roc_auc(scores, np.r_[np.ones(len(speeches)), np.zeros(len(sentences))]) >= 0.98
    assert d.keep.to_pylist()[:200].count(True) >= 185 and d.keep.to_pylist()[200:].count(True) <= 20


def test_label_map_formats_and_skips(tmp_path):
    rows = [{"t": f"good words number {i}", "c": 2} for i in range(30)] + \
           [{"t": f"bad words number {i}", "c": 1} for i in range(30)] + \
           [{"t": "unmapped", "c": 7}, {"t": "", "c": 1}, {"t": "no label", "c": None}]
    pa_table = pa.Table.from_pylist(rows)
    pq.write_table(pa_table, tmp_path / "d.parquet")
    import pyarrow.csv as pacsv

    pacsv.write_csv(pa_table, tmp_path / "d.csv")
    write_jsonl(tmp_path / "d.jsonl", rows)
    results = []
    for fmt in ("jsonl", "csv", "parquet"):
        config = ClassifierTrainConfig(
            data={"format": fmt, "paths": [str(tmp_path / f"d.{fmt}")], "text_field": "t", "label_field": "c",
                  "label_map": {"1": "bad", "2": "good"}},
            positive_label="bad", epoch=10, dim=8, bucket=1000, held_out_fraction=0.2)
        m = train_classifier(config, str(tmp_path / fmt))
        assert m["skipped"] == {"empty_text": 1, "missing_label": 1, "unmapped_label": {"7": 1}}
        results.append((m["train_examples"], m["held_out_examples"], m["accuracy"]))
    assert results[0] == results[1] == results[2]  # same rows, same split, same model
    assert sorted(json.loads((tmp_path / "csv" / "labels.json").read_text())["labels"]) == ["bad", "good"]


def test_data_list_with_a_fixed_label_text_source(tmp_path):
    """`data` as a list: labelled JSONL plus a plain text file (one text per line) all labelled `b`."""
    write_jsonl(tmp_path / "a.jsonl", [{"text": f"alpha words {i}", "label": "a"} for i in range(40)])
    (tmp_path / "b.txt").write_text("".join(f"beta phrase {i}\n\n" for i in range(40)), encoding="utf-8")
    config = ClassifierTrainConfig(
        data=[{"format": "jsonl", "paths": [str(tmp_path / "a.jsonl")]},
              {"format": "text", "paths": [str(tmp_path / "b.txt")], "label": "b", "max_examples": 30}],
        positive_label="b", epoch=10, dim=8, bucket=1000, held_out_fraction=0.25)
    m = train_classifier(config, str(tmp_path / "m"))
    counts = json.loads((tmp_path / "m" / "labels.json").read_text())
    assert sum(counts["train_counts"].values()) + sum(counts["held_out_counts"].values()) == 70
    assert counts["train_counts"]["b"] + counts["held_out_counts"].get("b", 0) == 30
    assert m["accuracy"] == 1.0 and m["roc_auc"] == 1.0


def test_quantized_model_and_uri_out_dir(tmp_path):
    rows = [{"text": s, "label": "play"} for s in shakespeare_speeches()[:800]] + \
           [{"text": s, "label": "speech"} for s in sotu_sentences()[:800]]
    write_jsonl(tmp_path / "d.jsonl", rows)
    config = ClassifierTrainConfig(data={"format": "jsonl", "paths": [str(tmp_path / "d.jsonl")]},
                                   positive_label="play", quantize=True, quantize_cutoff=5000,
                                   epoch=10, lr=0.5, dim=16, bucket=5000)
    m = train_classifier(config, f"file://{tmp_path}/q")
    # Measured: accuracy 0.963, 121 kB (the same model unquantized: accuracy 0.950, 806 kB).
    assert m["model_file"] == "model.ftz" and not (tmp_path / "q" / "model.bin").exists()
    assert m["accuracy"] >= 0.9 and m["model_bytes"] < 300_000
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == ["config.json", "labels.json", "metrics.json", "model.ftz"]
    d = run_op("quality_classifier", ["O Romeo, wherefore art thou Romeo? Deny thy father and refuse thy name.",
                                      "The budget deficit of the Federal Government must be reduced this fiscal year."],
               model=str(tmp_path / "q" / "model.ftz"))  # a file path finds its config beside it
    s = d.table.column("quality_classifier.score").to_pylist()
    assert s[0] > 0.5 > s[1]


def test_config_errors():
    src = {"format": "jsonl", "paths": ["x.jsonl"]}
    with pytest.raises(ValidationError, match="not both"):
        ClassifierTrainConfig(data=src, positives=src, negatives=src)
    with pytest.raises(ValidationError, match="both `positives` and `negatives`"):
        ClassifierTrainConfig(positives=src)
    with pytest.raises(ValidationError, match="extra"):
        ClassifierTrainConfig(data=src, epochs=3)
    with pytest.raises(ValidationError, match="label names"):
        ClassifierTrainConfig(data={**src, "label_map": {"0": "not ok"}})
    with pytest.raises(ValidationError):
        ClassifierTrainConfig(data=src, loss="ns")
    with pytest.raises(ValidationError, match="not both"):
        ClassifierTrainConfig(data={**src, "label": "x", "label_map": {"0": "y"}})
    with pytest.raises(ValidationError, match="give it a `label`"):
        ClassifierTrainConfig(data={"format": "text", "paths": ["a.txt"]})
    with pytest.raises(ValidationError, match="lists no datasets"):
        ClassifierTrainConfig(data=[])
    rel = ClassifierTrainConfig(data=src).with_base_dir("/specs")
    assert rel.data.paths == ["/specs/x.jsonl"]
    two = ClassifierTrainConfig(data=[src, {"format": "text", "paths": ["s3://b/c.txt", "/d/*.txt"], "label": "x"}])
    assert two.with_base_dir("/specs").data_paths() == ["/specs/x.jsonl", "s3://b/c.txt", "/d/*.txt"]


# -------------------------------------------------------------------------------------------- ops


def test_toxicity_fasttext_op(davidson_model):
    folder, _ = davidson_model
    texts = ["have a lovely day my friend", "shut up you stupid bitch", None, ""]
    d = run_op("toxicity", texts, model=str(folder))
    scores = d.table.column("toxicity.score")
    assert scores.type == pa.float32()
    s = scores.to_pylist()
    assert s[0] < 0.5 < s[1] and all(0.0 <= x <= 1.0 for x in s)
    assert d.keep.to_pylist() == [True, False, True, True]
    assert d.reason.to_pylist() == [None, "toxic", None, None]
    assert run_op("toxicity", texts, model=str(folder), max_score=1.0).keep.to_pylist() == [True] * 4
    empty = run_op("toxicity", [], model=str(folder))
    assert empty.table.num_rows == 0 and empty.table.schema.field("toxicity.score").type == pa.float32()
    assert len(empty.keep) == 0


def test_quality_classifier_op_annotates_and_thresholds(quality_model):
    folder = quality_model[0]
    texts = ["O Romeo, wherefore art thou Romeo? Deny thy father and refuse thy name.",
             "The budget deficit of the Federal Government must be reduced this fiscal year."]
    d = run_op("quality_classifier", texts, model=str(folder))
    assert d.keep is None  # annotate only by default
    s = d.table.column("quality_classifier.score").to_pylist()
    assert s[0] > 0.5 > s[1]
    d = run_op("quality_classifier", texts, model=str(folder), label="negative", min_score=0.5, column_prefix="q.sotu")
    assert d.table.column_names == ["text", "q.sotu.score"]
    assert d.keep.to_pylist() == [False, True] and d.reason.to_pylist() == ["low_quality", None]
    zero = run_op("quality_classifier", [], model=str(folder), min_score=0.5)
    assert zero.table.num_rows == 0 and zero.table.column_names == ["text", "quality_classifier.score"]
    cls = get_op("quality_classifier")
    with pytest.raises(ValueError, match="not one of the model's labels"):
        cls(cls.Config(model=str(folder), label="hq")).setup()
    with pytest.raises(FileNotFoundError):
        cls(cls.Config(model=str(folder / "missing"))).setup()


def test_toxicity_wordlist_flags_listed_words_per_language():
    texts = ["what a fucking mess", "a classic assessment of the class", "So eine Scheiße!",
             "So eine Scheiße!", "这部三级片很无聊", "hello", None]
    langs = ["en", "en", "de", "en", "zh", "xx", None]
    d = run_op("toxicity", texts, extra={"langid.lang": pa.array(langs, pa.string())}, method="wordlist")
    assert d.table.column("toxicity.score").type == pa.float32()
    # 'ass' is not matched inside words; the German word counts only in a German row; Chinese entries
    # match inside a run of characters; a language without a list scores null and is kept.
    assert d.table.column("toxicity.score").to_pylist() == [1.0, 0.0, 1.0, 0.0, 1.0, None, 0.0]
    assert d.reason.to_pylist() == ["toxic", None, "toxic", None, "toxic", None, None]
    assert d.detail.to_pylist()[0] == "wordlist en: 'fucking'"
    assert d.detail.to_pylist()[4] == "wordlist zh: '三级片'"
    # Without a langid column every row is in `language`; phrases match across punctuation.
    d = run_op("toxicity", ["So eine Scheiße!", "he saw 2 girls, 1 cup", "fine text"], method="wordlist", language="de")
    assert d.table.column("toxicity.score").to_pylist() == [1.0, 0.0, 0.0]
    d = run_op("toxicity", ["he saw 2 girls, 1 cup", "shit " + "word " * 9], method="wordlist",
               wordlist_score="fraction", max_score=0.5)
    assert d.table.column("toxicity.score").to_pylist() == [pytest.approx(4 / 6), pytest.approx(0.1)]
    assert d.keep.to_pylist() == [False, True]
    assert run_op("toxicity", [], method="wordlist").table.num_rows == 0


def test_toxicity_config_errors():
    cls = get_op("toxicity")
    with pytest.raises(ValidationError, match="only applies to method: wordlist"):
        cls.Config(language="de")
    with pytest.raises(ValidationError, match="only applies to method: fasttext"):
        cls.Config(method="wordlist", model="m.bin")
    with pytest.raises(ValidationError):
        cls.Config(max_score=1.5)
    assert cls.Config.path_fields == ("model", "wordlist_dir")
    # The runner ships full dumps (defaults included) to workers: they must validate again.
    for config in (cls.Config(), cls.Config(method="wordlist", language="de", wordlist_score="fraction"),
                   cls.Config(model="/m", label="toxic", text_prep={"lowercase": False})):
        assert cls.Config.model_validate(config.model_dump(mode="json")) == config
    q = get_op("quality_classifier").Config(model="/m", min_score=0.2)
    assert type(q).model_validate(q.model_dump(mode="json")) == q
    t = default_toxicity_config()
    assert ClassifierTrainConfig.model_validate(t.model_dump(mode="json")) == t
    assert get_op("quality_classifier").resources.loads_model and cls.resources.loads_model


def test_toxicity_default_model_is_built_on_first_use(tmp_path, monkeypatch):
    monkeypatch.setenv("GRISTMILL_MODEL_CACHE", str(tmp_path))
    d = run_op("toxicity", ["you are a stupid bitch", "lovely weather today"])
    assert d.keep.to_pylist() == [False, True]
    built = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(built) == 1 and built[0].name.startswith("toxicity-davidson-")
    assert (built[0] / "metrics.json").is_file()
