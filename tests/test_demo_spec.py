"""specs/demo.yaml, the spec `make demo` runs: it validates as the chain the demo promises, and its
first two stages (the toxicity classifier and the curation of the crawled site + bundled text, ending
in the tokenizer and shards) run as written through the `gristmill` command, on a reduced input given
with `--set`: the whole demo site crawled from the session's server, one Common Crawl file and the
Moby-Dick mirror with two of the chapters it copies. The training and evaluation stages are left to
`make demo` (minutes, not seconds); their kinds have end-to-end tests of their own.

The reduced spec is the demo spec's own text with the later stages cut off, written next to a link
to data/ so its relative paths resolve as they do from specs/."""

from __future__ import annotations

import json

import pytest
import yaml

from pipelines.demo_summary import summary
from pipelines.specs import load_spec
from tests.conftest import DATA, REPO
from tests.helpers import read_dir, rejected_tables

pytestmark = pytest.mark.e2e

DEMO = REPO / "specs" / "demo.yaml"
CURATION_STAGES = ("toxicity_model", "web")


def test_demo_spec_is_the_whole_chain():
    loaded = load_spec(str(DEMO), env={"GRISTMILL_DEMO_SITE": "http://127.0.0.1:9/"})
    stages = loaded.pipeline.stages
    assert [(s.name, s.kind) for s in stages] == [("toxicity_model", "classifier"), ("web", "curate"),
                                                  ("pretrain", "pretrain"), ("sft", "finetune"), ("eval", "eval")]
    by_name = {s.name: s for s in stages}
    assert by_name["web"].refs == ["toxicity_model"]  # the curate step filters with stage 1's model
    assert by_name["sft"].refs == ["pretrain"]
    assert set(by_name["eval"].refs) == {"pretrain", "sft", "web", "toxicity_model"}
    web = by_name["web"].data
    assert [i["format"] for i in web["input"]][0] == "crawl"
    assert web["input"][0]["seeds"] == ["http://127.0.0.1:9/"], "the site's URL comes from GRISTMILL_DEMO_SITE"
    ops = [next(iter(step)) for step in web["steps"]]
    for op in ("extract", "langid", "gopher_quality", "toxicity", "pii", "exact_dedup", "minhash_dedup"):
        assert op in ops, f"the demo's curation lacks {op}"
    assert ops[-1] == "tokenize"
    tasks = by_name["eval"].data["tasks"]
    assert {"name": "arc_easy", "num_fewshot": 0, "limit": 100} in tasks
    assert any("perplexity" in t for t in tasks) and any("generate" in t for t in tasks)
    # the toxicity probe scores the models' continuations with stage 1's classifier, as the curate step filters
    (probe,) = [t["toxicity_probe"] for t in tasks if "toxicity_probe" in t]
    assert probe["classifier"]["model"] == "${stages.toxicity_model}/model"
    assert next(s for s in web["steps"] if "toxicity" in s)["toxicity"]["model"] == probe["classifier"]["model"]


@pytest.fixture(scope="module")
def curated(ray_address, demo_site, tmp_path_factory):
    from tests.conftest import run_gristmill

    base_url, site = demo_site
    root = tmp_path_factory.mktemp("demo-spec")
    (root / "data").symlink_to(DATA)
    (root / "specs").mkdir()
    spec = yaml.safe_load(DEMO.read_text())
    spec["stages"] = {name: spec["stages"][name] for name in CURATION_STAGES}
    reduced = root / "specs" / "demo-curation.yaml"
    reduced.write_text(yaml.safe_dump(spec, sort_keys=False))
    mirror = DATA / "dedup" / "moby-dick-mirror.jsonl"
    copied = sorted({json.loads(line)["of"] for line in mirror.read_text().splitlines()})[:2]
    run = root / "run"
    proc = run_gristmill(
        "run", str(reduced), "--out", str(run),
        "--set", "stages.web.input[1].paths=[../data/warc/cc_en_head-0091.jsonl]",
        "--set", "stages.web.input[2].paths=[" + ", ".join(f"../data/text/moby-dick/{c}" for c in copied) + "]",
        address=ray_address, env={"GRISTMILL_DEMO_SITE": base_url + "/", "OMP_NUM_THREADS": "1"}, timeout=600)
    return run, site, proc


def test_demo_curation_runs_as_written(curated):
    run, site, proc = curated
    pipeline = json.loads((run / "manifest.json").read_text())
    assert pipeline["kind"] == "pipeline" and pipeline["status"] == "done"
    assert [(s["id"], s["status"]) for s in pipeline["stages"]] == [("toxicity_model", "done"), ("web", "done")]
    web = run / "stages" / "web"
    m = json.loads((web / "manifest.json").read_text())
    t = m["totals"]
    assert t["read"] == t["kept"] + sum(t["rejected"].values()) + t["quarantined"]
    assert list((web / "inputs" / "00-crawl").glob("*.warc.gz")), "the crawl writes WARC files into the stage"
    public = len(site["pages"]) - len(site["kinds"].get("private", []))
    assert t["read"] >= public + 10 + 20, "every public page, the Common Crawl file and the mirror are read"
    reasons = {step: set(table.column("reason").to_pylist()) for step, table in rejected_tables(web).items()}
    assert reasons.get("langid"), "the site's /intl/ pages are not English"
    assert reasons.get("toxicity") == {"toxic"}, "the forum's hate speech goes, by the classifier of stage 1"
    assert "near_duplicate" in reasons.get("minhash_dedup", set()), "the /mirror/ pages and edited chapters go"
    kept_urls = set(read_dir(web / "data").column("url").to_pylist())
    assert not [u for u in kept_urls if u and "/private/" in u], "robots.txt is honoured"
    shards = json.loads((web / "shards" / "manifest.json").read_text())
    assert shards["seq_len"] == 256 and shards["tokenizer"]["vocab_size"] == 4096
    assert shards["splits"]["train"]["tokens"] > 10_000
    assert (run / "report" / "index.html").exists(), "one report for the chain"


def test_demo_summary_of_the_curation(curated):
    run, _, _ = curated
    text = "\n".join(summary(str(run)))
    t = json.loads((run / "stages" / "web" / "manifest.json").read_text())["totals"]
    assert f"{t['read']:,} documents read" in text and f"{t['kept']:,} kept" in text
    assert "minhash_dedup −" in text and "toxicity −" in text
    assert "tokens (web):" in text and "vocabulary 4,096" in text
    assert "toxicity_model" in text and "total" in text
    assert str(run / "report" / "index.html") in text
