"""HTML extraction: docs/s of the `extract` op (sandboxed child process, charset chain, binary check,
title and language hint) against calling ``trafilatura.extract`` directly with the same settings,
on the same pages, in one process, plus how closely the two texts agree (bag-of-tokens F1).

The corpus is every HTML response in the shipped WARC files (real crawled pages), repeated to
``--docs`` documents. The two sides run interleaved batch by batch, so both see the same machine
load. Both are single-threaded (the op's process waits while its child extracts), so docs/s is
docs/s per core; CPU time is reported too, the op's split between its process and its child.

    python -m benchmarks.extract [--docs 3000] [--batch 256] [--engine trafilatura|auto|resiliparse]

``--engine trafilatura`` (the default here) is the parity check: the op with trafilatura against
trafilatura itself, so F1 should be 1.0 and the ratio shows what the sandbox costs. ``--engine auto``
(the op's default) measures the default's speed on these real pages against trafilatura; its F1 is
then agreement with trafilatura, not quality (quality: ``benchmarks.extract_quality``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections import Counter

import pyarrow as pa
import trafilatura
from warcio.archiveiterator import ArchiveIterator

from benchmarks.common import DATA, machine
from curation.extract import Extract, ExtractConfig

# What the op's trafilatura engine runs (see curation/html_text.py).
TRAFILATURA_SETTINGS = dict(favor_precision=True, include_comments=False, include_tables=True,
                            deduplicate=False, fast=True)


def shipped_html_pages() -> list[tuple[bytes, str, str | None, str]]:
    """(body, mime type, header charset, url) of every non-empty HTML response in data/warc."""
    pages = []
    for path in sorted((DATA / "warc").glob("*.warc*")):
        if path.name.endswith((".wat.gz", ".wet.gz")):
            continue
        with path.open("rb") as stream:
            for record in ArchiveIterator(stream):
                if record.rec_type != "response" or record.http_headers is None:
                    continue
                mime, _, params = (record.http_headers.get_header("Content-Type") or "").partition(";")
                body = record.content_stream().read()
                if "html" in mime and len(body) > 1000:  # skip empty bodies and 161-byte redirect stubs
                    charset = params.split("charset=", 1)[1].strip() if "charset=" in params else None
                    pages.append((body, mime.strip().lower(), charset, record.rec_headers.get_header("WARC-Target-URI")))
    return pages


def token_f1(a: str | None, b: str | None) -> float:
    """Bag-of-tokens F1 of two texts (whitespace tokens); 1.0 when both are empty."""
    ta, tb = Counter((a or "").split()), Counter((b or "").split())
    if not ta and not tb:
        return 1.0
    overlap = sum((ta & tb).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / sum(ta.values()), overlap / sum(tb.values())
    return 2 * precision * recall / (precision + recall)


def child_cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--engine", default="trafilatura", choices=["trafilatura", "auto", "resiliparse"])
    args = parser.parse_args()
    pages = shipped_html_pages()
    docs = [pages[i % len(pages)] for i in range(args.docs)]

    op = Extract(ExtractConfig(engine=args.engine))
    start = time.perf_counter()
    op.setup()
    setup_s = time.perf_counter() - start
    pid = op.sandbox.pid
    child_cpu_at_start = child_cpu_seconds(pid)  # interpreter start-up and imports: not per-document work
    trafilatura.extract(pages[0][0], **TRAFILATURA_SETTINGS)  # warm up the direct side too

    op_s = direct_s = 0.0
    op_texts: list[str | None] = []
    direct_texts: list[str | None] = []
    per_doc: list[float] = []
    reasons: Counter = Counter()
    op_parent_cpu = direct_cpu = 0.0
    for lo in range(0, len(docs), args.batch):
        part = docs[lo:lo + args.batch]
        table = pa.table({
            "content": pa.array([d[0] for d in part], pa.binary()),
            "content_type": pa.array([d[1] for d in part], pa.string()),
            "charset": pa.array([d[2] for d in part], pa.string()),
            "url": pa.array([d[3] for d in part], pa.string()),
            "text": pa.nulls(len(part), pa.string()),
        })
        cpu0, t0 = time.process_time(), time.perf_counter()
        decision = op.process(table)
        op_s += time.perf_counter() - t0
        op_parent_cpu += time.process_time() - cpu0
        op_texts += decision.table.column("text").to_pylist()
        per_doc += decision.table.column("extract.seconds").to_pylist()
        if decision.reason is not None:
            reasons.update(r for r in decision.reason.to_pylist() if r is not None)
        cpu0, t0 = time.process_time(), time.perf_counter()
        direct_texts += [trafilatura.extract(d[0], **TRAFILATURA_SETTINGS) for d in part]
        direct_s += time.perf_counter() - t0
        direct_cpu += time.process_time() - cpu0
    child_cpu = child_cpu_seconds(op.sandbox.pid) - child_cpu_at_start
    restarts = op.sandbox.restarts
    op.close()

    f1 = [token_f1(a, b) for a, b in zip(op_texts[:len(pages)], direct_texts[:len(pages)])]
    per_doc.sort()
    results = {
        "benchmark": "extract",
        "machine": machine(),
        "docs": len(docs),
        "engine": args.engine,
        "load_average": round(os.getloadavg()[0], 2),
        "unique_pages": len(pages),
        "html_mb": round(sum(len(d[0]) for d in docs) / 2**20, 1),
        "op": {
            "docs_per_s": round(len(docs) / op_s, 1),
            "docs_per_cpu_s": round(len(docs) / (op_parent_cpu + child_cpu), 1),
            "seconds": round(op_s, 2),
            "setup_seconds": round(setup_s, 3),
            "cpu_seconds_parent": round(op_parent_cpu, 2),
            "cpu_seconds_child": round(child_cpu, 2),
            "per_doc_ms_p50": round(per_doc[len(per_doc) // 2] * 1000, 2),
            "per_doc_ms_p99": round(per_doc[int(len(per_doc) * 0.99)] * 1000, 2),
            "per_doc_ms_max": round(per_doc[-1] * 1000, 2),
            "rejected": dict(reasons),
            "child_restarts": restarts,
            "child_pid_unchanged": pid is not None and restarts == 0,
        },
        "direct_trafilatura": {
            "docs_per_s": round(len(docs) / direct_s, 1),
            "docs_per_cpu_s": round(len(docs) / direct_cpu, 1),
            "seconds": round(direct_s, 2),
            "settings": TRAFILATURA_SETTINGS,
        },
        "ratio_op_vs_direct": round(direct_s / op_s, 3),
        "ratio_op_vs_direct_cpu": round(direct_cpu / (op_parent_cpu + child_cpu), 3),
        "goal_ratio": 0.9,
        "token_f1_mean": round(statistics.fmean(f1), 4),
        "token_f1_min": round(min(f1), 4),
        "exact_text_match": f"{sum(a == b for a, b in zip(op_texts[:len(pages)], direct_texts[:len(pages)]))}/{len(pages)}",
        "goal_token_f1": 0.99,
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
