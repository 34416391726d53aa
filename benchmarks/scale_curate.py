"""The whole curate chain on a Common-Crawl-like WARC corpus of N records, with time, memory, spill and
disk per stage; ``--report`` fits how each stage grows with N.

    python -m benchmarks.scale_curate --docs 10000 [--docs 100000 ...] [--cpus C] [--rerun]
    python -m benchmarks.scale_curate --report

For each size: the corpus (benchmarks/scale_corpus.py: generated once under ``bench-data/scale/<N>/``,
reused afterwards), a curate spec written to ``bench-data/scale-runs/<N>/_bench/scale.yaml`` reading
it with ``extract → langid (keep en) → gopher_quality → gopher_repetition → c4_quality →
fineweb_quality → toxicity → pii → exact_dedup → minhash_dedup → tokenize``, then
``.venv/bin/gristmill run SPEC --out bench-data/scale-runs/<N>`` as a child process.

``toxicity: {}`` is the project's default model: fastText trained on the shipped Davidson et al.
tweets plus 4,000 *Moby-Dick* lines, built on first use into ``$GRISTMILL_MODEL_CACHE`` or
``~/.cache/gristmill/models/toxicity-davidson-<hash>`` (curation/classifiers/default_toxicity.py).
``tokenize`` trains an 8,192-token byte-level BPE on the kept documents (defaults otherwise:
``seq_len`` 1024, ``val_fraction`` 0.01).

**Resuming.** A killed benchmark (or run) is continued by running the same command: gristmill resumes
its run directory, and every invocation of this benchmark is recorded in
``bench-data/scale-runs/<N>/_bench/invocations.json`` (start, end, exit status, per-stage seconds,
peaks; rewritten every 10 s while it runs, so even a SIGKILLed benchmark leaves its record). The
figures add the invocations up and say how many they were assembled from. Per stage, seconds come
from the run's manifest for stages that finished in an invocation (a stream stage's manifest seconds
accumulate over resumed invocations; the difference is this invocation's share), and from this
benchmark's own observation (the manifest polled every 0.5 s) for a stage an invocation was
interrupted in: work a killed invocation did and the rerun redid is counted, since it was spent. A
finished run is not run again: its results are reassembled (``--rerun`` deletes the run and starts
over). The gristmill child gets SIGINT (its clean stop) when this process is interrupted or killed.

**Sampling** (every 0.5 s, in a thread): RSS and ``VmHWM`` (the kernel's peak RSS) of the driver
(the ``gristmill`` process), of every Ray worker (children of the raylet; a per-pid peak, the larger
of sampled RSS and VmHWM), of the workers' own children (``extract``'s sandbox processes) and of Ray's
system processes; the size of Ray's spill directory (``<session dir>/ray_spilled_objects_<node id>/``
for a local Ray 2.60 cluster unless ``RAY_object_spilling_directory`` says otherwise; Ray deletes it
at shutdown) plus, afterwards, the cumulative ``Spilled N MiB`` the raylet logs in
``<session dir>/logs/raylet.out``; the run directory's disk use by top-level folder (walked at most
every 0.5 s and no more than 10% of the time). A worker's RSS includes the object-store pages it
maps (shared memory); ``private`` is RSS minus shared pages.

**Timing inside the streaming pass.** The ops from ``extract`` to ``pii`` are fused into one Ray Data
pass (``01-stream``); the manifest records that stage's wall time and each step's in/out counts, not
per-op times. Per-op figures available from the data: ``extract.seconds`` (each document's
extraction wall time, sandbox round trip included) summed over every row; ``tokenize``'s manifest
splits its time into tokenizer training, encode-and-pack and shuffle-write. The other ops' times
are not recorded anywhere (see the ``notes`` in the output).

Output: ``bench-data/scale-results/<N>.json`` and the same JSON on stdout. Timings on a shared
machine are noisy: the load average at start and end is recorded with each figure.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks import scale_corpus
from benchmarks.common import BENCH_DATA, REPO, machine

RUNS = BENCH_DATA / "scale-runs"
RESULTS = BENCH_DATA / "scale-results"
BENCH = "_bench"  # inside the run directory: spec, invocation records, logs, samples
INTERMEDIATE = ("stages", "work", "_progress")
OUTPUTS = ("data", "rejected", "shards", "tokenizer", "dedup", "report")
SAVE_EVERY_S = 10.0
STEPS = [{"extract": {}}, {"langid": {"keep": ["en"]}}, {"gopher_quality": {}}, {"gopher_repetition": {}},
         {"c4_quality": {}}, {"fineweb_quality": {}}, {"toxicity": {}}, {"pii": {}}, {"exact_dedup": {}},
         {"minhash_dedup": {}}, {"tokenize": {"tokenizer": {"train": {"vocab_size": 8192}}}}]
RAY_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")
_RE_SPILLED = re.compile(r"Spilled (\d+) MiB, (\d+) objects")
_RE_RESTORED = re.compile(r"Restored (\d+) MiB, (\d+) objects")


def now_iso(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".part")  # never ".tmp-": gristmill sweeps those from its run dir
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def gristmill_bin() -> str:
    for candidate in (Path(sys.executable).parent / "gristmill", REPO / ".venv" / "bin" / "gristmill"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("gristmill")
    if not found:
        raise SystemExit("gristmill command not found: run `make install` first")
    return found


def machine_info() -> dict[str, Any]:
    info = machine()
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / (1 << 30), 1)
    except Exception:  # noqa: BLE001
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info["machine"] = platform.machine()
    return info


# ----------------------------------------------------------------------------------------- spec


def spec_for(docs: int, corpus: Path, cpus: int | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"kind": "curate", "name": f"scale-{docs}",
                            "input": [{"format": "warc", "paths": [str(corpus / "part-*.warc.gz")]}],
                            "steps": STEPS}
    if cpus:
        spec["ray"] = {"num_cpus": cpus}
    return spec


def spec_text(spec: dict[str, Any]) -> str:
    import yaml

    return ("# Written by benchmarks/scale_curate.py: the full curate chain on the scale corpus.\n"
            + yaml.safe_dump(spec, sort_keys=False))


# -------------------------------------------------------------------------------------- sampler


def _proc_status(pid: int) -> dict[str, int]:
    """VmHWM / VmRSS in bytes from /proc (empty where unavailable)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def _dir_bytes(path: Path) -> int:
    total = 0
    stack = [str(path)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        else:
                            st = entry.stat(follow_symlinks=False)
                            total += st.st_blocks * 512
                    except OSError:
                        continue
        except OSError:
            continue
    return total


def run_dir_usage(run_dir: Path) -> dict[str, int]:
    """Disk use (allocated blocks) by top-level entry of the run directory, without our _bench/."""
    usage: dict[str, int] = {}
    try:
        entries = list(os.scandir(run_dir))
    except OSError:
        return usage
    for entry in entries:
        if entry.name == BENCH:
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                usage[entry.name] = _dir_bytes(Path(entry.path))
            else:
                usage[entry.name] = entry.stat(follow_symlinks=False).st_blocks * 512
        except OSError:
            continue
    return usage


class Sampler(threading.Thread):
    """Samples the run's processes, Ray's spill directory, the run directory and the manifest."""

    def __init__(self, driver_pid: int, run_dir: Path, interval: float, samples_path: Path, on_save=None):
        super().__init__(daemon=True, name="scale-sampler")
        import psutil

        self.psutil = psutil
        self.driver_pid, self.run_dir, self.interval = driver_pid, run_dir, interval
        self.samples_path, self.on_save = samples_path, on_save
        self.stop_event = threading.Event()
        self.t0 = time.time()
        self.procs: dict[int, dict[str, Any]] = {}
        self._handles: dict[int, Any] = {}
        self.session_dir: str | None = None
        self.peak = {"driver_rss": 0, "driver_hwm": 0, "driver_rss_through_stages": 0, "workers_rss_sum": 0,
                     "worker_children_rss_sum": 0, "ray_system_rss_sum": 0, "spill_dir_bytes": 0, "run_dir_bytes": 0,
                     "intermediate_bytes": 0}
        self.peak_usage: dict[str, int] = {}
        self.disk_walks, self.disk_walk_s, self.samples = 0, 0.0, 0
        self._last_walk, self._walk_cost = 0.0, 0.0
        self.manifest_mtime = 0.0
        self.execute_started: float | None = None
        self.stage_done_at: dict[str, float] = {}
        self.stage_seen_running: dict[str, float] = {}
        self.run_done_at: float | None = None
        self.cpu_s = 0.0

    # processes ---------------------------------------------------------------------------
    def _handle(self, pid: int):
        h = self._handles.get(pid)
        if h is None:
            h = self._handles[pid] = self.psutil.Process(pid)
        return h

    def _sample_processes(self, now: float) -> dict[str, int]:
        psutil = self.psutil
        try:
            driver = self._handle(self.driver_pid)
            tree = driver.children(recursive=True)
        except psutil.Error:
            return {}
        by_pid = {p.pid: p for p in tree}
        raylets = [p for p in tree if _name(p) == "raylet"]
        raylet_pids = {p.pid for p in raylets}
        if raylets and self.session_dir is None:
            self.session_dir = _session_dir(raylets[0])
        parents = {}
        for p in tree:
            try:
                parents[p.pid] = p.ppid()
            except psutil.Error:
                continue
        sums = defaultdict(int)
        for pid, proc in [(self.driver_pid, driver)] + list(by_pid.items()):
            try:
                name = _name(proc)
                mem = proc.memory_info()
            except psutil.Error:
                continue
            role = self._role(pid, name, parents, raylet_pids)
            status = _proc_status(pid)
            rss, hwm = mem.rss, status.get("VmHWM", 0)
            private = max(0, mem.rss - getattr(mem, "shared", 0))
            rec = self.procs.get(pid)
            if rec is None:
                rec = self.procs[pid] = {"pid": pid, "role": role, "names": [], "peak_rss": 0, "peak_hwm": 0,
                                         "peak_private": 0, "first_s": round(now - self.t0, 1)}
            if name not in rec["names"] and len(rec["names"]) < 6:
                rec["names"].append(name)
            rec["role"] = role
            rec["peak_rss"] = max(rec["peak_rss"], rss)
            rec["peak_hwm"] = max(rec["peak_hwm"], hwm)
            rec["peak_private"] = max(rec["peak_private"], private)
            rec["last_s"] = round(now - self.t0, 1)
            sums[role] += rss
            if role == "worker":
                sums["max_worker"] = max(sums["max_worker"], rss)
        self.peak["driver_rss"] = max(self.peak["driver_rss"], self.procs.get(self.driver_pid, {}).get("peak_rss", 0))
        self.peak["driver_hwm"] = max(self.peak["driver_hwm"], self.procs.get(self.driver_pid, {}).get("peak_hwm", 0))
        self.peak["workers_rss_sum"] = max(self.peak["workers_rss_sum"], sums["worker"])
        self.peak["worker_children_rss_sum"] = max(self.peak["worker_children_rss_sum"], sums["worker_child"])
        self.peak["ray_system_rss_sum"] = max(self.peak["ray_system_rss_sum"], sums["ray_system"])
        return dict(sums)

    def _role(self, pid: int, name: str, parents: dict[int, int], raylets: set[int]) -> str:
        if pid == self.driver_pid:
            return "driver"
        parent = parents.get(pid)
        if parent in raylets:
            return "ray_system" if name.startswith(RAY_AGENTS) else "worker"
        # below a worker (extract's sandbox, …)?
        seen = 0
        while parent is not None and seen < 8:
            grand = parents.get(parent)
            if grand in raylets:
                return "worker_child"
            parent, seen = grand, seen + 1
        return "ray_system"

    # spill, disk, manifest ----------------------------------------------------------------
    def spill_dirs(self) -> list[Path]:
        roots = [os.environ.get("RAY_object_spilling_directory") or "", self.session_dir or ""]
        out = []
        for root in roots:
            if root and os.path.isdir(root):
                out += [Path(root) / n for n in os.listdir(root) if n.startswith("ray_spilled_objects")]
        return out

    def _sample_disk(self, now: float) -> dict[str, int] | None:
        # at most every interval, and no more than ~10% of the time
        if now - self._last_walk < max(self.interval, 10 * self._walk_cost):
            return None
        started = time.perf_counter()
        usage = run_dir_usage(self.run_dir)
        self._walk_cost = time.perf_counter() - started
        self._last_walk = now
        self.disk_walks += 1
        self.disk_walk_s += self._walk_cost
        total = sum(usage.values())
        inter = sum(usage.get(k, 0) for k in INTERMEDIATE)
        self.peak["run_dir_bytes"] = max(self.peak["run_dir_bytes"], total)
        self.peak["intermediate_bytes"] = max(self.peak["intermediate_bytes"], inter)
        for k, v in usage.items():
            self.peak_usage[k] = max(self.peak_usage.get(k, 0), v)
        return usage

    def _poll_manifest(self, now: float) -> None:
        path = self.run_dir / "manifest.json"
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return
        if mtime == self.manifest_mtime:
            return
        self.manifest_mtime = mtime
        if mtime < self.t0 - 1:
            return  # an earlier invocation's manifest, not yet touched by this one
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        if self.execute_started is None:
            self.execute_started = now
        for stage in manifest.get("stages", []):
            if stage.get("status") == "done":
                self.stage_done_at.setdefault(stage["id"], now)
            else:
                self.stage_seen_running.setdefault(stage["id"], now)
        if manifest.get("status") == "done" and self.run_done_at is None:
            self.run_done_at = now

    def tick(self) -> None:
        now = time.time()
        sums = self._sample_processes(now)
        spill = sum(_dir_bytes(d) for d in self.spill_dirs())
        self.peak["spill_dir_bytes"] = max(self.peak["spill_dir_bytes"], spill)
        usage = self._sample_disk(now)
        self._poll_manifest(now)
        if self.run_done_at is None:  # the run itself, not the report the CLI builds after it
            self.peak["driver_rss_through_stages"] = max(self.peak["driver_rss_through_stages"], sums.get("driver", 0))
        self.samples += 1
        line = {"t": round(now - self.t0, 2), "driver": sums.get("driver", 0), "workers": sums.get("worker", 0), "max_worker": sums.get("max_worker", 0),
                "worker_children": sums.get("worker_child", 0), "ray_system": sums.get("ray_system", 0),
                "spill": spill}
        if usage is not None:
            line["disk"] = sum(usage.values())
            line["intermediate"] = sum(usage.get(k, 0) for k in INTERMEDIATE)
        with self.samples_path.open("a") as fh:
            fh.write(json.dumps(line) + "\n")

    def run(self) -> None:
        last_save = time.time()
        cpu0 = time.thread_time()
        while not self.stop_event.is_set():
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - a sampling hiccup must not end the benchmark
                print(f"sampler: {type(exc).__name__}: {exc}", file=sys.stderr)
            self.cpu_s = time.thread_time() - cpu0
            if self.on_save and time.time() - last_save >= SAVE_EVERY_S:
                last_save = time.time()
                try:
                    self.on_save()
                except Exception as exc:  # noqa: BLE001
                    print(f"sampler: saving the invocation record failed: {exc}", file=sys.stderr)
            self.stop_event.wait(self.interval)

    def summary(self) -> dict[str, Any]:
        workers = [p for p in self.procs.values() if p["role"] == "worker"]
        largest = max(workers, key=lambda p: max(p["peak_rss"], p["peak_hwm"]), default=None)
        children = [p for p in self.procs.values() if p["role"] == "worker_child"]
        largest_child = max(children, key=lambda p: max(p["peak_rss"], p["peak_hwm"]), default=None)
        driver = self.procs.get(self.driver_pid, {})
        return {"driver": {"peak_rss": driver.get("peak_rss", 0), "peak_hwm": driver.get("peak_hwm", 0),
                           "peak_private": driver.get("peak_private", 0)},
                "largest_worker": _proc_summary(largest), "workers_seen": len(workers),
                "largest_worker_child": _proc_summary(largest_child), "worker_children_seen": len(children),
                "peaks": dict(self.peak), "peak_usage": dict(self.peak_usage), "session_dir": self.session_dir,
                "samples": self.samples, "disk_walks": self.disk_walks, "disk_walk_s": round(self.disk_walk_s, 2),
                "sampler_cpu_s": round(self.cpu_s, 2)}


def _name(proc) -> str:
    try:
        cmd = proc.cmdline()
        if cmd and cmd[0].startswith("ray::"):
            return cmd[0].split(" ")[0]
    except Exception:  # noqa: BLE001
        pass
    return proc.name()


def _session_dir(raylet) -> str | None:
    try:
        for arg in raylet.cmdline():
            m = re.search(r"(/[^\s=]*/session_[^/\s]+)", arg)
            if m:
                return m.group(1)
    except Exception:  # noqa: BLE001
        pass
    return None


def _proc_summary(p: dict[str, Any] | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {"pid": p["pid"], "names": p["names"], "peak_rss": p["peak_rss"], "peak_hwm": p["peak_hwm"],
            "peak_private": p["peak_private"], "peak": max(p["peak_rss"], p["peak_hwm"])}


def raylet_spill_totals(session_dir: str | None) -> dict[str, int] | None:
    """Cumulative spilled / restored MiB and objects as the raylet last logged them."""
    if not session_dir:
        return None
    out = {"spilled_mib": 0, "spilled_objects": 0, "restored_mib": 0, "restored_objects": 0}
    for path in Path(session_dir, "logs").glob("raylet*.out"):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for m in _RE_SPILLED.finditer(text):
            out["spilled_mib"] = max(out["spilled_mib"], int(m.group(1)))
            out["spilled_objects"] = max(out["spilled_objects"], int(m.group(2)))
        for m in _RE_RESTORED.finditer(text):
            out["restored_mib"] = max(out["restored_mib"], int(m.group(1)))
            out["restored_objects"] = max(out["restored_objects"], int(m.group(2)))
    return out


# ----------------------------------------------------------------------------------- invocations


def manifest_stages(run_dir: Path) -> dict[str, dict[str, Any]]:
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}
    return {s["id"]: {"status": s.get("status"), "seconds": s.get("seconds") or 0.0, "hash": s.get("hash"),
                      "kind": s.get("kind")} for s in manifest.get("stages", [])}


def attribute(record: dict[str, Any], sampler: Sampler, end: float, finished: bool) -> None:
    """Per-stage seconds of this invocation into ``record``: manifest differences for stages done
    here, the observed time for the stage an unfinished invocation was in."""
    before, after = record["manifest_before"], manifest_stages(Path(record["run_dir"]))
    stages: dict[str, dict[str, Any]] = {}
    last_boundary = sampler.execute_started
    for sid, a in after.items():
        b = before.get(sid)
        done_before = b is not None and b["status"] == "done" and b["hash"] == a["hash"]
        if a["status"] == "done" and not done_before:
            carried = b["seconds"] if (b and b["hash"] == a["hash"] and a["kind"] == "stream") else 0.0
            stages[sid] = {"seconds": round(a["seconds"] - carried, 3), "source": "manifest", "finished": True}
            done_at = sampler.stage_done_at.get(sid)
            if done_at is not None:
                last_boundary = max(last_boundary or done_at, done_at)
    record["startup_s"] = round((sampler.execute_started or end) - record["t0"], 2)
    running = [sid for sid, a in after.items() if a["status"] != "done"]
    if not finished and running and sampler.execute_started is not None:
        sid = running[0]
        since = max(last_boundary or sampler.execute_started, sampler.execute_started)
        stages[sid] = {"seconds": round(end - since, 3), "source": "observed (interrupted)", "finished": False}
    record["stages"] = stages
    record["tail_s"] = round(end - sampler.run_done_at, 2) if sampler.run_done_at else None


def _pdeathsig() -> None:
    """In the child: SIGINT when this benchmark dies; SIGINT handled normally even if we ignore it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Interrupted(Exception):
    pass


def run_invocation(docs: int, run_dir: Path, spec_path: Path, records: dict[str, Any], interval: float) -> dict:
    bench = run_dir / BENCH
    k = len(records["invocations"]) + 1
    record: dict[str, Any] = {"invocation": k, "status": "running", "started": now_iso(), "t0": time.time(),
                              "pid": os.getpid(), "argv": sys.argv, "loadavg_start": os.getloadavg(),
                              "run_dir": str(run_dir), "manifest_before": manifest_stages(run_dir),
                              "log": f"{BENCH}/gristmill-{k}.log", "samples": f"{BENCH}/samples-{k}.jsonl"}
    records["invocations"].append(record)
    inv_path = bench / "invocations.json"
    write_json(inv_path, records)
    log = (run_dir / record["log"]).open("wb")
    cmd = [gristmill_bin(), "run", str(spec_path), "--out", str(run_dir)]
    print(f"[scale {docs:,}] invocation {k}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO), start_new_session=True,
                            preexec_fn=_pdeathsig)
    record["child_pid"] = proc.pid
    sampler = Sampler(proc.pid, run_dir, interval, run_dir / record["samples"])

    def save() -> None:
        now = time.time()
        attribute(record, sampler, now, finished=False)
        record.update(updated=now_iso(now), t_updated=now, wall_s=round(now - record["t0"], 2),
                      memory=sampler.summary())
        write_json(inv_path, records)

    sampler.on_save = save
    sampler.start()

    def on_term(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    old = {s: signal.signal(s, on_term) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    interrupted = None
    try:
        try:
            rc = proc.wait()
        except Interrupted as exc:
            interrupted = str(exc)
            for s in old:  # one clean stop; a second signal must not cut the recording short
                signal.signal(s, signal.SIG_IGN)
            print(f"[scale {docs:,}] {interrupted}: stopping the run (SIGINT), then recording it", file=sys.stderr)
            rc = _stop(proc)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        sampler.stop_event.set()
        sampler.join(timeout=30)
        log.close()
    end = time.time()
    manifest = _manifest(run_dir)
    finished = rc == 0 and manifest.get("status") == "done"
    attribute(record, sampler, end, finished)
    record.update(status="done" if finished else ("interrupted" if interrupted or rc in (130, -2) else "failed"),
                  rc=rc, interrupted_by=interrupted, ended=now_iso(end), t_updated=end,
                  wall_s=round(end - record["t0"], 2), loadavg_end=os.getloadavg(), memory=sampler.summary(),
                  spill_totals=raylet_spill_totals(sampler.session_dir))
    write_json(inv_path, records)
    if interrupted:
        raise KeyboardInterrupt
    return record


def _stop(proc: subprocess.Popen) -> int:
    for sig, wait in ((signal.SIGINT, 120), (signal.SIGTERM, 30), (signal.SIGKILL, 30)):
        try:
            if sig == signal.SIGKILL:
                os.killpg(proc.pid, sig)  # the child's own session: gristmill and the Ray it started
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            return proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


def _manifest(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def recover_lost(records: dict[str, Any], run_dir: Path) -> None:
    """An invocation still marked running belongs to a benchmark process that was killed. Its
    gristmill child was sent SIGINT when that happened: wait for it to end, then count the stages it
    finished from the manifest, and the stage it was in as observed up to the last periodic save."""
    import psutil

    for record in records["invocations"]:
        if record["status"] != "running":
            continue
        child = record.get("child_pid")
        deadline = time.time() + 180
        while child and time.time() < deadline:
            try:
                if "gristmill" not in " ".join(psutil.Process(child).cmdline()):
                    break
            except psutil.Error:
                break
            time.sleep(1)
        before, after = record["manifest_before"], manifest_stages(run_dir)
        stages = record.get("stages") or {}
        for sid, a in after.items():
            b = before.get(sid)
            done_before = b is not None and b["status"] == "done" and b["hash"] == a["hash"]
            if a["status"] == "done" and not done_before and not stages.get(sid, {}).get("finished"):
                carried = b["seconds"] if (b and b["hash"] == a["hash"] and a["kind"] == "stream") else 0.0
                stages[sid] = {"seconds": round(a["seconds"] - carried, 3), "source": "manifest", "finished": True}
        for stage in stages.values():
            if not stage.get("finished"):
                stage["source"] = "observed (benchmark killed; up to its last save)"
        record["stages"] = stages
        record["status"] = "lost"
        record["wall_s"] = round(max(record.get("wall_s") or 0.0, (record.get("startup_s") or 0.0)
                                     + sum(st["seconds"] for st in stages.values())), 2)
        record["note"] = ("the benchmark process was killed; wall time, peaks and the unfinished stage's time as of "
                          f"its last periodic save ({record.get('updated', record['started'])}); stages its "
                          "gristmill finished afterwards, from the manifest")


# -------------------------------------------------------------------------------------- results


def _read_columns(folder: Path, columns: list[str]):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for path in sorted(folder.rglob("*.parquet")):
        names = pq.read_schema(path).names
        present = [c for c in columns if c in names]
        table = pq.read_table(path, columns=present)
        for c in columns:
            if c not in names:
                table = table.append_column(c, pa.nulls(table.num_rows, pa.int64() if c != "reason" else pa.string()))
        tables.append(table.select(columns).cast(pa.schema([(c, pa.string() if c == "reason" else pa.int64())
                                                            for c in columns])))
    if not tables:
        return None
    return pa.concat_tables(tables)


def funnel_vs_planted(run_dir: Path, manifest: dict[str, Any], corpus: Path) -> dict[str, Any]:
    """Every document's fate (kept, or the step that removed it) against its planted kind; planted
    duplicates against what dedup removed."""
    file_of_index = {}
    for entry in manifest.get("inputs", []):
        m = re.search(r"part-(\d+)\.warc\.gz$", entry["location"])
        if m:
            file_of_index[entry["index"]] = int(m.group(1))
    planted = {}
    for index, part in file_of_index.items():
        planted[index] = scale_corpus.read_planted(corpus, part)
    stamp = json.loads((corpus / "_complete.json").read_text())
    docs, files = stamp["params"]["docs"], stamp["params"]["files"]
    index_of_file = {v: k for k, v in file_of_index.items()}

    def kind(doc_id: int) -> str:
        p = planted.get(doc_id >> 32)
        rec = doc_id & 0xFFFFFFFF
        if p is None or not 1 <= rec <= len(p["kinds"]):
            return "unknown"
        return scale_corpus.KIND[p["kinds"][rec - 1]]

    def doc_id_of(g: int) -> int:
        f, rec = scale_corpus.locate(docs, files, g)
        return index_of_file.get(f, -1) << 32 | rec

    fate: dict[int, str] = {}
    cluster: dict[int, int] = {}
    dup_of: dict[int, int] = {}
    cols = ["doc_id", "dedup.duplicate_of", "dedup.cluster_id"]
    kept = _read_columns(run_dir / "data", cols)
    if kept is not None:
        ids = kept.column("doc_id").to_numpy(zero_copy_only=False)
        for d in ids.tolist():
            fate[d] = "kept"
        for d, c in zip(ids.tolist(), kept.column("dedup.cluster_id").to_pylist()):
            if c is not None:
                cluster[d] = c
    rejected_root = run_dir / "rejected"
    steps = [s["step"] for s in manifest.get("totals", {}).get("steps", [])]
    for step in steps:
        table = _read_columns(rejected_root / step, cols) if (rejected_root / step).exists() else None
        if table is None:
            continue
        ids = table.column("doc_id").to_pylist()
        for d in ids:
            fate[d] = step
        if step in ("exact_dedup", "minhash_dedup"):
            for d, o, c in zip(ids, table.column("dedup.duplicate_of").to_pylist(),
                               table.column("dedup.cluster_id").to_pylist()):
                if o is not None:
                    dup_of[d] = o
                if c is not None and step == "minhash_dedup":
                    cluster[d] = c
    by_kind: dict[str, dict[str, Any]] = {}
    for d, f in fate.items():
        k = kind(d)
        entry = by_kind.setdefault(k, {"planted": 0, "kept": 0, "removed_by": {}})
        entry["planted"] += 1
        if f == "kept":
            entry["kept"] += 1
        else:
            entry["removed_by"][f] = entry["removed_by"].get(f, 0) + 1
    for entry in by_kind.values():
        entry["removed_by"] = dict(sorted(entry["removed_by"].items(), key=lambda kv: -kv[1]))

    dups = [d for p in planted.values() for d in p["duplicates"]]
    exact = {"planted": 0, "removed_by_exact_dedup": 0, "of_which_duplicate_of_original": 0,
             "removed_by_minhash_dedup": 0, "removed_before_dedup": 0, "kept": 0}
    near = {"planted": 0, "removed_by_minhash_dedup": 0, "of_which_in_original_cluster": 0,
            "removed_by_exact_dedup": 0, "removed_before_dedup": 0, "kept": 0,
            "reached_minhash_with_original": 0, "expected_found_14x8": 0.0}
    for d in dups:
        copy, orig = doc_id_of(d["g"]), doc_id_of(d["original"])
        f = fate.get(copy)
        target = exact if d["jaccard"] is None else near
        target["planted"] += 1
        if f == "kept":
            target["kept"] += 1
        elif f == "exact_dedup":
            target["removed_by_exact_dedup"] += 1
            if target is exact and dup_of.get(copy) == orig:
                exact["of_which_duplicate_of_original"] += 1
        elif f == "minhash_dedup":
            target["removed_by_minhash_dedup"] += 1
            if target is near and cluster.get(copy) is not None and cluster.get(copy) == cluster.get(orig):
                near["of_which_in_original_cluster"] += 1
        else:
            target["removed_before_dedup"] += 1
        if target is near and f in ("kept", "minhash_dedup") and fate.get(orig) in ("kept", "minhash_dedup"):
            near["reached_minhash_with_original"] += 1
            near["expected_found_14x8"] += 1 - (1 - d["jaccard"] ** 8) ** 14
    near["expected_found_14x8"] = round(near["expected_found_14x8"], 1)
    planted_copies = {doc_id_of(d["g"]) for d in dups}
    unplanted = {"exact_dedup": {}, "minhash_dedup": {}}
    for d, f in fate.items():
        if f in unplanted and d not in planted_copies:
            k = kind(d)
            unplanted[f][k] = unplanted[f].get(k, 0) + 1
    removed = {s: sum(1 for f in fate.values() if f == s) for s in ("exact_dedup", "minhash_dedup")}
    return {"by_planted_kind": dict(sorted(by_kind.items())), "exact_duplicates": exact, "near_duplicates": near,
            "dedup_removed": removed, "dedup_removed_not_planted_copies": unplanted,
            "documents_accounted": len(fate), "corpus_records": docs}


def extract_op_seconds(run_dir: Path) -> dict[str, Any] | None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    total, rows = 0.0, 0
    for folder in [run_dir / "data", run_dir / "rejected"]:
        for path in folder.rglob("*.parquet"):
            if "extract.seconds" not in pq.read_schema(path).names:
                continue
            col = pq.read_table(path, columns=["extract.seconds"]).column(0)
            total += pc.sum(col).as_py() or 0.0
            rows += len(col) - col.null_count
    return {"seconds_summed_over_documents": round(total, 1), "documents": rows} if rows else None


def worker_peaks_by_stage(run_dir: Path, manifest: dict[str, Any], invocations: list[dict[str, Any]]) -> dict:
    """Largest single worker and all workers' RSS while each stage ran, from every invocation's samples
    (a sample's time is its invocation's ``t0`` plus ``t``; a stage's window is its manifest
    ``started``..``finished``, which spans the invocations a resumed stage took)."""
    def stamp(text: str | None) -> float | None:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None

    windows = [(st["id"], stamp(st.get("started")), stamp(st.get("finished")) or math.inf)
               for st in manifest.get("stages", []) if st.get("started")]
    peaks: dict[str, dict[str, int]] = {}
    for inv in invocations:
        path = run_dir / inv.get("samples", "")
        if not inv.get("samples") or not path.exists() or inv.get("t0") is None:
            continue
        with path.open() as fh:
            for line in fh:
                try:
                    sample = json.loads(line)
                except ValueError:
                    continue  # a line cut by a kill
                t = inv["t0"] + sample["t"]
                for sid, start, end in windows:
                    if start <= t <= end:
                        peak = peaks.setdefault(sid, {"largest_worker_rss": 0, "workers_rss_sum": 0})
                        peak["largest_worker_rss"] = max(peak["largest_worker_rss"], sample.get("max_worker", 0))
                        peak["workers_rss_sum"] = max(peak["workers_rss_sum"], sample.get("workers", 0))
                        break
    return peaks


def assemble(docs: int, run_dir: Path, records: dict[str, Any], corpus_stamp: dict[str, Any]) -> dict[str, Any]:
    manifest = _manifest(run_dir)
    invocations = records["invocations"]
    cores = float(manifest.get("ray", {}).get("cpus") or os.cpu_count() or 1)
    per_stage: dict[str, dict[str, Any]] = {}
    for inv in invocations:
        for sid, st in (inv.get("stages") or {}).items():
            agg = per_stage.setdefault(sid, {"seconds": 0.0, "invocations": 0, "observed_unfinished_s": 0.0})
            agg["seconds"] += st["seconds"]
            agg["invocations"] += 1
            if not st.get("finished"):
                agg["observed_unfinished_s"] += st["seconds"]
    stage_total = sum(v["seconds"] for v in per_stage.values()) or 1.0
    stages = []
    for record in manifest.get("stages", []):
        sid = record["id"]
        agg = per_stage.get(sid, {"seconds": record.get("seconds") or 0.0, "invocations": 0,
                                  "observed_unfinished_s": 0.0})
        counts = record.get("counts", {})
        seconds = agg["seconds"]
        row: dict[str, Any] = {"stage": sid, "kind": record.get("kind"), "steps": record.get("steps"),
                               "docs_in": counts.get("in"), "docs_out": counts.get("kept"),
                               "wall_s": round(seconds, 2), "share": round(seconds / stage_total, 4),
                               "docs_per_s_per_core": round(counts["in"] / seconds / cores, 2)
                               if seconds and counts.get("in") else None,
                               "assembled_from_invocations": agg["invocations"],
                               "manifest_seconds": record.get("seconds")}
        if agg["observed_unfinished_s"]:
            row["of_which_interrupted_work_s"] = round(agg["observed_unfinished_s"], 2)
        if record.get("kind") == "stream":
            row["per_step"] = [{"step": s["step"], "in": s["in"], "out": s["out"]} for s in counts.get("steps", [])]
        if record.get("kind") == "sink" and "tokens" in counts:
            tokens = counts["tokens"].get("in", 0)
            row["tokens"] = tokens
            row["tokens_per_s"] = round(tokens / seconds, 1) if seconds else None
            row["tokens_per_s_per_core"] = round(tokens / seconds / cores, 1) if seconds else None
            row["phases_s"] = counts.get("seconds")
            enc = (counts.get("seconds") or {}).get("encode_pack")
            if enc:
                row["encode_pack_tokens_per_s"] = round(tokens / enc, 1)
        stages.append(row)
    mem = [inv.get("memory") or {} for inv in invocations]
    largest = max((m.get("largest_worker") for m in mem if m.get("largest_worker")), key=lambda w: w["peak"],
                  default=None)
    largest_child = max((m.get("largest_worker_child") for m in mem if m.get("largest_worker_child")),
                        key=lambda w: w["peak"], default=None)
    peaks = defaultdict(int)
    peak_usage: dict[str, int] = defaultdict(int)
    for m in mem:
        for k, v in (m.get("peaks") or {}).items():
            peaks[k] = max(peaks[k], v)
        for k, v in (m.get("peak_usage") or {}).items():
            peak_usage[k] = max(peak_usage[k], v)
    spill_totals = [inv.get("spill_totals") for inv in invocations if inv.get("spill_totals")]
    final_usage = run_dir_usage(run_dir)
    input_bytes = corpus_stamp["warc_bytes"]
    ratio = lambda b: round(b / input_bytes, 3) if input_bytes else None  # noqa: E731
    final_inter = sum(final_usage.get(k, 0) for k in INTERMEDIATE)
    extract_op = extract_op_seconds(run_dir)
    stream = next((s for s in stages if s["kind"] == "stream"), None)
    notes = ["Ops extract … pii run fused in one streaming pass (01-stream): the manifest gives that pass's wall "
             "time and each step's in/out counts, not per-op times; the runner records no per-op times. "
             "Measured per op: extract (extract.seconds per document, summed) and tokenize's phases.",
             "docs_per_s_per_core = docs_in / wall / Ray CPUs; a stage's wall includes its fixed costs (Ray Data "
             "start-up of its operators, shuffles, actor pools of tokenize), which dominate at small sizes.",
             "RSS includes shared object-store pages a process touched; 'private' is RSS minus shared."]
    if extract_op and stream and stream["wall_s"]:
        extract_op["share_of_stream_core_seconds"] = round(
            extract_op["seconds_summed_over_documents"] / (stream["wall_s"] * cores), 3)
    done = [inv for inv in invocations if inv["status"] == "done"]
    wall = sum(inv.get("wall_s") or 0.0 for inv in invocations)
    return {
        "docs": docs, "status": manifest.get("status"), "machine": machine_info(), "ray_cpus": cores,
        "invocations": {"count": len(invocations), "completed": len(done),
                        "statuses": [inv["status"] for inv in invocations],
                        "note": f"figures assembled from {len(invocations)} invocation(s) of this benchmark"},
        "loadavg": {"start": invocations[0].get("loadavg_start") if invocations else None,
                    "end": invocations[-1].get("loadavg_end") if invocations else None},
        "wall_s": {"total": round(wall, 1), "stages": round(sum(s["wall_s"] for s in stages), 1),
                   "startup": round(sum(inv.get("startup_s") or 0.0 for inv in invocations), 1),
                   "after_last_stage": round(sum(inv.get("tail_s") or 0.0 for inv in invocations), 1),
                   "note": "startup: imports, Ray start, input listing; after_last_stage: report build, status, "
                           "Ray shutdown"},
        "stages": stages,
        "per_op": {"extract": extract_op, "tokenize_phases_s": next((s.get("phases_s") for s in stages
                                                                      if s["kind"] == "sink"), None),
                   "other_ops": "not recorded: fused in 01-stream"},
        "memory": {"driver_peak_rss": max((m.get("driver", {}).get("peak_rss", 0) for m in mem), default=0),
                   "driver_peak_hwm": max((m.get("driver", {}).get("peak_hwm", 0) for m in mem), default=0),
                   "driver_peak_rss_through_stages": peaks["driver_rss_through_stages"],
                   "largest_worker": largest, "largest_worker_child": largest_child,
                   "workers_rss_sum_peak": peaks["workers_rss_sum"], "ray_system_rss_sum_peak": peaks["ray_system_rss_sum"],
                   "worker_children_rss_sum_peak": peaks["worker_children_rss_sum"],
                   "by_stage": worker_peaks_by_stage(run_dir, manifest, invocations)},
        "spill": {"spill_dir_peak_bytes": peaks["spill_dir_bytes"],
                  "raylet_logged_spilled_mib": sum(s["spilled_mib"] for s in spill_totals),
                  "raylet_logged_restored_mib": sum(s["restored_mib"] for s in spill_totals),
                  "note": "spill_dir_peak_bytes: the spill directory's largest sampled size (Ray deletes it at "
                          "shutdown); raylet_logged_*: the cumulative totals the raylet last logged, summed over "
                          "invocations; the raylet logs them now and then, so a lower bound (a check that spilled "
                          "140 MiB: 70 MiB logged)"},
        "disk": {"input_warc_bytes": input_bytes, "final_by_folder": final_usage,
                 "final_intermediate_bytes": final_inter, "final_intermediate_over_input": ratio(final_inter),
                 "peak_intermediate_bytes": peaks["intermediate_bytes"],
                 "peak_intermediate_over_input": ratio(peaks["intermediate_bytes"]),
                 "peak_run_dir_bytes": peaks["run_dir_bytes"], "peak_run_dir_over_input": ratio(peaks["run_dir_bytes"]),
                 "peak_by_folder": dict(peak_usage), "intermediate_folders": list(INTERMEDIATE)},
        "funnel": {"read": manifest.get("totals", {}).get("read"), "kept": manifest.get("totals", {}).get("kept"),
                   "steps": [{"step": s["step"], "in": s["in"], "out": s["out"]}
                             for s in manifest.get("totals", {}).get("steps", [])]},
        "vs_planted": funnel_vs_planted(run_dir, manifest, Path(corpus_stamp["folder"]))
        if manifest.get("status") == "done" else None,
        "corpus": {k: corpus_stamp.get(k) for k in ("folder", "records", "counts", "warc_bytes", "html_bytes",
                                                     "text_chars", "near_dup_jaccard",
                                                     "near_dup_expected_lsh_recall_14x8")},
        "sampler": {"interval_s": records.get("interval_s"),
                    "cpu_s": round(sum((m.get("sampler_cpu_s") or 0) for m in mem), 1),
                    "disk_walks": sum((m.get("disk_walks") or 0) for m in mem)},
        "notes": notes,
        "command": f"python -m benchmarks.scale_curate --docs {docs}",
    }


# -------------------------------------------------------------------------------------- one size


def run_size(docs: int, args: argparse.Namespace) -> dict[str, Any]:
    log = lambda m: print(f"[scale {docs:,}] {m}", file=sys.stderr, flush=True)  # noqa: E731
    corpus_stamp = scale_corpus.generate(docs, jobs=args.jobs, log=log)
    generated = {"files_written": len(corpus_stamp.pop("written")), "seconds": corpus_stamp.pop("seconds")}
    corpus = Path(corpus_stamp["folder"])
    run_dir = RUNS / str(docs)
    spec = spec_text(spec_for(docs, corpus, args.cpus))
    identity = {"corpus_params": corpus_stamp["params"], "corpus_warc_bytes": corpus_stamp["warc_bytes"], "spec": spec}
    inv_path = run_dir / BENCH / "invocations.json"
    records = json.loads(inv_path.read_text()) if inv_path.exists() else None
    if args.rerun or (records is not None and records.get("identity") != identity) or \
            (records is None and run_dir.exists()):
        if run_dir.exists():
            why = "--rerun" if args.rerun else "the corpus or spec changed, or the run has no benchmark records"
            log(f"starting {run_dir} over ({why})")
            shutil.rmtree(run_dir)
        records = None
    (run_dir / BENCH).mkdir(parents=True, exist_ok=True)
    if records is None:
        records = {"docs": docs, "identity": identity, "interval_s": args.interval, "invocations": []}
    spec_path = run_dir / BENCH / "scale.yaml"
    if not spec_path.exists() or spec_path.read_text() != spec:
        spec_path.write_text(spec)
    recover_lost(records, run_dir)
    if _manifest(run_dir).get("status") == "done" and any(i["status"] == "done" for i in records["invocations"]):
        log("the run finished earlier: reassembling its figures (--rerun to run it again)")
    else:
        record = run_invocation(docs, run_dir, spec_path, records, args.interval)
        if record["status"] != "done":
            tail = (run_dir / record["log"]).read_text(errors="replace")[-4000:]
            log(f"gristmill exited with {record['rc']}; the end of its log ({run_dir / record['log']}):\n{tail}")
            if "in use by another run" in tail:
                records["invocations"].pop()  # refused at once: no work done, not an invocation
                write_json(inv_path, records)
            raise SystemExit(1)
    result = assemble(docs, run_dir, records, corpus_stamp)
    result["corpus"]["generated_this_call"] = generated
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / f"{docs}.json", result)
    return result


# ---------------------------------------------------------------------------------------- report


def _fit(xs: list[float], ys: list[float]) -> float | None:
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x and y and x > 0 and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return None
    return round(sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx, 3)


def _mib(b: float | None) -> str:
    return "—" if not b else f"{b / (1 << 20):,.0f} MiB"


def report() -> str:
    results = []
    for path in sorted(RESULTS.glob("*.json")):
        try:
            results.append(json.loads(path.read_text()))
        except ValueError:
            continue
    results = sorted((r for r in results if r.get("status") == "done"), key=lambda r: r["docs"])
    if not results:
        return f"no finished results under {RESULTS}: run python -m benchmarks.scale_curate --docs N first"
    sizes = [r["docs"] for r in results]
    stage_ids = [s["stage"] for s in results[-1]["stages"]]
    header = "| stage | " + " | ".join(f"{n:,} docs: wall s (docs/s/core)" for n in sizes) + \
             " | exponent (all sizes) | exponent (two largest) |"
    lines = [header, "|" + "---|" * (len(sizes) + 3)]
    fits = {}
    for sid in stage_ids + ["total"]:
        cells, ys = [], []
        for r in results:
            if sid == "total":
                wall = r["wall_s"]["total"]
                cells.append(f"{wall:,.1f}")
            else:
                s = next((s for s in r["stages"] if s["stage"] == sid), None)
                wall = s["wall_s"] if s else None
                extra = ""
                if s and s.get("tokens_per_s"):
                    extra = f", {s['tokens_per_s']:,.0f} tok/s"
                cells.append("—" if s is None else f"{wall:,.1f} ({s['docs_per_s_per_core'] or 0:,.1f}{extra})")
            ys.append(wall)
        every = _fit(sizes, ys)
        last2 = _fit(sizes[-2:], ys[-2:]) if len(sizes) >= 3 else None
        fits[sid] = {"all": every, "two_largest": last2}
        name = f"**{sid}**" if sid == "total" else f"`{sid}`"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {every if every is not None else '—'} | "
                     f"{last2 if last2 is not None else '—'} |")
    drivers = [r["memory"]["driver_peak_rss"] for r in results]
    growth = round((drivers[-1] - drivers[0]) / drivers[0], 3) if drivers[0] else None
    staged = [r["memory"].get("driver_peak_rss_through_stages") for r in results]
    staged_growth = round((staged[-1] - staged[0]) / staged[0], 3) if all(staged) else None
    more = [("driver peak RSS", [_mib(r["memory"]["driver_peak_rss"]) for r in results],
             f"growth {growth:+.1%}" if growth is not None else "—"),
            ("driver peak RSS through the stages (before the report)", [_mib(v) if v else "—" for v in staged],
             f"growth {staged_growth:+.1%}" if staged_growth is not None else "—"),
            ("extract op: summed document s (share of 01-stream core-s)",
             [f"{(r['per_op']['extract'] or {}).get('seconds_summed_over_documents', 0):,.1f} "
              f"({(r['per_op']['extract'] or {}).get('share_of_stream_core_seconds', 0):.0%})" for r in results], ""),
            ("largest worker peak RSS", [_mib((r["memory"]["largest_worker"] or {}).get("peak")) for r in results], ""),
            *[(f"largest worker during `{sid}`", [_mib(r["memory"].get("by_stage", {}).get(sid, {}).get(
                "largest_worker_rss")) if r["memory"].get("by_stage", {}).get(sid) else "—" for r in results], "")
              for sid in stage_ids],
            ("spill (peak dir / raylet total)", [f"{_mib(r['spill']['spill_dir_peak_bytes'])} / "
                                                 f"{r['spill']['raylet_logged_spilled_mib']:,} MiB" for r in results], ""),
            ("intermediates / input (peak)", [f"{r['disk']['peak_intermediate_over_input']}" for r in results], ""),
            ("input WARC", [_mib(r["disk"]["input_warc_bytes"]) for r in results], ""),
            ("invocations", [str(r["invocations"]["count"]) for r in results], ""),
            ("load avg start → end", [f"{r['loadavg']['start'][0]:.1f} → {r['loadavg']['end'][0]:.1f}"
                                      if r["loadavg"]["start"] and r["loadavg"]["end"] else "—" for r in results], "")]
    for label, cells, tail in more:
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {tail} | |")
    m = results[-1]["machine"]
    lines.append("")
    lines.append(f"Machine: {m.get('cpu', '?')}, {m.get('cpus')} CPUs, {m.get('memory_gib', '?')} GiB, Python "
                 f"{m.get('python')}; Ray CPUs {results[-1]['ray_cpus']:g}. Exponent: least-squares slope of "
                 "log(wall) on log(docs); goal ≤ 1.1 per stage; driver RSS goal: within 10% from the smallest "
                 "to the largest size.")
    lines.append("")
    lines.append("```json")
    lines.append(json.dumps({"sizes": sizes, "exponents": fits, "driver_rss_growth": growth}))
    lines.append("```")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, action="append", default=[], help="corpus size (repeatable)")
    parser.add_argument("--report", action="store_true", help="fit growth over every results file present")
    parser.add_argument("--cpus", type=int, default=None, help="Ray CPUs (default: the machine's)")
    parser.add_argument("--jobs", type=int, default=2, help="processes generating the corpus")
    parser.add_argument("--interval", type=float, default=0.5, help="sampling interval, seconds")
    parser.add_argument("--rerun", action="store_true", help="delete the run directory and run again")
    args = parser.parse_args(argv)
    if not args.docs and not args.report:
        parser.error("give --docs N (repeatable) and/or --report")
    try:
        for docs in args.docs:
            print(json.dumps(run_size(docs, args), indent=1), flush=True)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        raise SystemExit(130) from None
    if args.report:
        print(report())


if __name__ == "__main__":
    main()
