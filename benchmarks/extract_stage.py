"""A heavy op's stage as a user runs it (``gristmill run``, Ray Data, the sandbox) against a bare loop
of the same work on one core, on the same real documents: docs/s per core, and how busy each core was
during the stage.

    python -m benchmarks.extract_stage [--op extract] [--docs N] [--files 8] [--rounds 2] [--engine trafilatura]
    python -m benchmarks.extract_stage --op langid|toxicity|quality_classifier [--docs N]

``--op extract`` (default): every real page the project ships (the 130 hand-checked pages of
data/extraction-dev and the HTML responses of the shipped WARC files), repeated to ``--docs`` pages
(default 1,500) and written once as WARC.gz under ``bench-data/extract-stage/``: one file holding all
pages, and the same pages spread over ``--files`` files. Repeating pages is fair to both sides:
``deduplicate=False`` leaves trafilatura no cache to profit from. The bare loop is
``trafilatura.extract(body, **settings)`` with the op's settings, bytes in, as the op gets them
(whatever ``--engine`` the stage runs: the goal is stated against trafilatura).

``--op langid`` / ``toxicity`` / ``quality_classifier``: long documents (default 3,000 of 4-40 KB) cut from the shipped
public-domain texts (State of the Union addresses, *Moby-Dick*, Shakespeare), as JSONL. The bare loop
is fastText ``predict`` per document on the model the op loads, with the op's preparation (newlines
to spaces for lid.176; the classifier's text preparation for the other two). The quality model is
trained once, DCLM-style, on shipped data (public-domain texts as positives, the shipped Common Crawl
text as negatives, 200 and 20 texts; word bigrams, dim 64, 200,000 buckets: a throughput stand-in,
not a model to curate with).

Each round runs, interleaved so every side sees the same machine load: the bare loop (this process,
one core), then the op alone (``steps: [<op>: {}]``) through ``gristmill run`` for one file and for
many files, each at ``ray.num_cpus`` 1 and 2. A stage's time is the manifest's stage seconds (Ray
start-up and planning excluded; the sandbox's or model's start-up included: a user pays it). Its
docs/s per core divides by the Ray CPUs; ``ratio_per_core`` is that against the bare loop's docs/s in
the same round. CPU use per core comes from ``/proc/stat`` sampled every 0.25 s while the manifest
says the stage is running.

Output: JSON on stdout and in ``bench-data/extract-stage/results-<op>[-<engine>].json``, with the
load average before and after every measurement.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path

from benchmarks.common import BENCH_DATA, DATA, REPO, machine
from benchmarks.extract import TRAFILATURA_SETTINGS, shipped_html_pages

FOLDER = BENCH_DATA / "extract-stage"


# ------------------------------------------------------------------------------------------ corpus


def real_pages() -> list[tuple[bytes, str, str | None, str]]:
    """(body, mime, header charset, url) of every shipped real HTML page."""
    pages = []
    for path in sorted((DATA / "extraction-dev" / "pages").glob("*/source.html.gz")):
        pages.append((gzip.decompress(path.read_bytes()), "text/html", None,
                      f"https://extraction-dev.example/{path.parent.name}"))
    return pages + shipped_html_pages()


def write_warc(path: Path, pages: list[tuple[bytes, str, str | None, str]]) -> None:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as out:
        writer = WARCWriter(out, gzip=True)
        for i, (body, mime, charset, url) in enumerate(pages):
            content_type = f"{mime}; charset={charset}" if charset else mime
            headers = StatusAndHeaders("200 OK", [("Content-Type", content_type),
                                                  ("Content-Length", str(len(body)))], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(f"{url}?copy={i}", "response",
                                                          payload=io.BytesIO(body), http_headers=headers))
    tmp.replace(path)


def long_documents(docs: int) -> list[str]:
    """``docs`` texts of 4-40 KB cut from the shipped public-domain texts (seeded)."""
    import random

    sources = [p.read_text(encoding="utf-8") for p in sorted((DATA / "text").rglob("*.txt"))]
    rng = random.Random(0)
    out = []
    for _ in range(docs):
        text = rng.choice(sources)
        size = rng.randint(4_000, 40_000)
        start = rng.randrange(0, max(1, len(text) - size))
        out.append(text[start:start + size])
    return out


def corpus(op: str, docs: int, files: int) -> tuple[list, Path, list[Path]]:
    """The documents, the one-file input and the many-file input (written once, reused)."""
    folder = FOLDER / op / f"{docs}"
    stamp = folder / f"_complete-{files}.json"
    if op == "extract":
        pages = real_pages()
        items: list = [pages[i % len(pages)] for i in range(docs)]
        suffix, write = "warc.gz", write_warc
    else:
        items = long_documents(docs)
        suffix, write = "jsonl", _write_jsonl
    one = folder / "one" / f"docs.{suffix}"
    many = [folder / f"many-{files}" / f"part-{i:03d}.{suffix}" for i in range(files)]
    if not stamp.exists():
        one.parent.mkdir(parents=True, exist_ok=True)
        many[0].parent.mkdir(parents=True, exist_ok=True)
        write(one, items)
        for i, path in enumerate(many):
            write(path, items[i::files])
        stamp.write_text(json.dumps({"docs": docs, "files": files}))
    return items, one, many


def _write_jsonl(path: Path, texts: list[str]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for i, text in enumerate(texts):
            out.write(json.dumps({"text": text, "url": f"https://bench.example/{i}"}) + "\n")
    tmp.replace(path)


# ------------------------------------------------------------------------------------------- sides


def _bare_work(op: str):
    """The op's work on one document, without the framework: a function of one corpus item."""
    if op == "extract":
        import trafilatura

        return lambda page: trafilatura.extract(page[0], **TRAFILATURA_SETTINGS)
    if op == "langid":
        from curation.langid import load_lid176

        model = load_lid176()
        return lambda text: model.predict(text.replace("\n", " "), k=1)
    from curation.classifiers.apply import FastTextScorer
    from curation.classifiers.default_toxicity import ensure_default_toxicity_model
    from curation.classifiers.text_prep import prepare_texts

    model = str(ensure_default_toxicity_model()) if op == "toxicity" else str(quality_model())
    scorer = FastTextScorer(model, None, None, default_label="toxic" if op == "toxicity" else None)
    return lambda text: scorer.model.predict(prepare_texts([text], scorer.prep)[0], k=-1)


def quality_model() -> Path:
    """A DCLM-style quality classifier (fastText, word bigrams) trained once on shipped data: the
    public-domain texts as positives, the shipped Common Crawl text (cc_en_head JSONL) as negatives."""
    from curation.classifiers.train import ClassifierTrainConfig, train_classifier

    folder = FOLDER / "quality-model"
    if not (folder / "labels.json").exists():
        config = ClassifierTrainConfig(
            positives={"format": "text", "paths": [str(DATA / "text")], "max_examples": 200},
            negatives={"format": "jsonl", "paths": [str(DATA / "warc" / "cc_en_head-*.jsonl")]})
        train_classifier(config, str(folder))
    return folder


def bare_loop(op: str, docs: list) -> dict:
    work = _bare_work(op)
    work(docs[0])  # warm up, as the stage's worker does
    load = os.getloadavg()[0]
    cpu, start = time.process_time(), time.perf_counter()
    for doc in docs:
        work(doc)
    wall = time.perf_counter() - start
    return {"seconds": round(wall, 2), "cpu_seconds": round(time.process_time() - cpu, 2),
            "docs_per_s": round(len(docs) / wall, 1), "load_before": round(load, 2),
            "load_after": round(os.getloadavg()[0], 2)}


def _cpu_times() -> list[tuple[int, int]]:
    """(busy, total) jiffies per core from /proc/stat."""
    out = []
    with open("/proc/stat") as stat:
        for line in stat:
            if line.startswith("cpu") and line[3].isdigit():
                values = [int(v) for v in line.split()[1:]]
                idle = values[3] + values[4]  # idle + iowait
                out.append((sum(values) - idle, sum(values)))
    return out


class StageSampler(threading.Thread):
    """Per-core CPU use while the run's manifest says a stage is running."""

    def __init__(self, run_dir: Path):
        super().__init__(daemon=True)
        self.manifest = run_dir / "manifest.json"
        self.stop = threading.Event()
        self.first: list | None = None
        self.last: list | None = None

    def _running(self) -> bool:
        try:
            stages = json.loads(self.manifest.read_text())["stages"]
        except (OSError, ValueError, KeyError):
            return False
        return any(stage.get("status") == "running" for stage in stages)

    def run(self) -> None:
        while not self.stop.wait(0.25):
            if self._running():
                times = _cpu_times()
                self.first = self.first or times
                self.last = times

    def busy(self) -> list[float]:
        if not self.first or not self.last or self.first is self.last:
            return []
        return [round((b1 - b0) / max(1, t1 - t0), 2)
                for (b0, t0), (b1, t1) in zip(self.first, self.last)]


def stage(op: str, docs: int, paths: list[Path], cpus: int, engine: str, label: str) -> dict:
    import yaml

    run_dir = FOLDER / op / f"{docs}" / "runs" / f"{label}-{cpus}cpu"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    config = {"engine": engine} if op == "extract" else {}
    if op == "quality_classifier":
        config = {"model": str(quality_model())}
    spec = {"kind": "curate", "name": f"{op}-stage-{label}",
            "input": [{"format": "warc" if op == "extract" else "jsonl", "paths": [str(p) for p in paths]}],
            "steps": [{op: config}], "ray": {"num_cpus": cpus}}
    spec_path = run_dir.parent / f"{label}-{cpus}cpu.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    gristmill = str(REPO / ".venv" / "bin" / "gristmill")
    sampler = StageSampler(run_dir)
    load = os.getloadavg()[0]
    sampler.start()
    proc = subprocess.run([gristmill, "run", str(spec_path), "--out", str(run_dir)], check=False, cwd=REPO,
                          capture_output=True, text=True)
    sampler.stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"gristmill run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    record = manifest["stages"][0]
    seconds = record["seconds"]
    counts = record.get("counts", {})
    return {"seconds": seconds, "docs_per_s": round(docs / seconds, 1),
            "docs_per_s_per_core": round(docs / seconds / cpus, 1), "cpu_busy_per_core": sampler.busy(),
            "kept": counts.get("kept"), "rejected": counts.get("rejected"),
            "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}


# -------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--op", choices=("extract", "langid", "toxicity", "quality_classifier"), default="extract")
    parser.add_argument("--docs", type=int, default=None, help="default: 1,500 pages; 3,000 long documents")
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--engine", choices=("trafilatura", "resiliparse"), default="trafilatura")
    parser.add_argument("--cpus", type=int, action="append", help="Ray CPUs to run the stage at (default: 1 and 2)")
    args = parser.parse_args()
    cpus_list = args.cpus or [1, 2]
    args.docs = args.docs or (1500 if args.op == "extract" else 3000)
    docs, one, many = corpus(args.op, args.docs, args.files)
    rounds = []
    for number in range(args.rounds):
        result: dict = {"round": number + 1, "bare": bare_loop(args.op, docs)}
        for label, paths in (("one-file", [one]), (f"{args.files}-files", many)):
            for cpus in cpus_list:
                side = stage(args.op, args.docs, paths, cpus, args.engine, label)
                side["ratio_per_core"] = round(side["docs_per_s_per_core"] / result["bare"]["docs_per_s"], 3)
                result[f"{label}/{cpus}cpu"] = side
        rounds.append(result)
        print(json.dumps(result), flush=True)
    keys = [k for k in rounds[0] if "/" in k]
    summary = {k: {"ratio_per_core_median": round(statistics.median(r[k]["ratio_per_core"] for r in rounds), 3),
                   "ratios": [r[k]["ratio_per_core"] for r in rounds]} for k in keys}
    size = sum(len(d[0]) if args.op == "extract" else len(d.encode()) for d in docs)
    out = {"benchmark": "extract_stage", "op": args.op, "machine": machine(),
           "engine": args.engine if args.op == "extract" else None, "docs": args.docs, "files": args.files,
           "input_mb": round(size / 2**20, 1), "summary": summary, "rounds": rounds}
    path = FOLDER / (f"results-extract-{args.engine}.json" if args.op == "extract" else f"results-{args.op}.json")
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps(out["summary"], indent=2))


if __name__ == "__main__":
    main()
