"""Spawn-to-ready of the runner: cold, then with the compile cache fetched from a stand-in object store.

    python3 bench/gpu/coldstart.py --out $OUT --tunings compile,regional

For each tuning, in one run on one machine:

1. cold: a runner (`python -m img2img_runner --model sd15 --source sd15-arch
   --tuning T`) with empty Inductor and Triton caches and an empty compile
   cache directory (IMG2IMG_COMPILE_CACHE): it compiles, saves its artifacts,
   then gets ROUNDS x max_batch jobs over frames (PNG in, PNG out);
2. upload: the compile cache directory is copied into STORE/compile-cache/T/
   (a directory standing in for the object store: the GPU machine has none),
   as consumer/compilecache.ts does with the real one;
3. warm: a fresh runner with new, empty Inductor and Triton caches and an
   empty compile cache directory, into which STORE/compile-cache/T/ is copied
   first (the download before the spawn); same jobs, same seeds; its outputs
   are compared with the cold runner's, and its cache directory is checked for
   new files (a warm start should produce none: nothing to upload).

Spawn-to-ready is the wall time from Popen to the ready frame, as the consumer
sees it. Records go to OUT/results.jsonl (kind "coldstart"), the runners' logs
to OUT/runners.log; --pack-store tars the store into OUT in 15 MiB parts so a
later call can start from it (`--store-from DIR` unpacks such parts first and
skips the cold runs whose tuning it already holds).
"""

import argparse
import glob
import io
import json
import os
import pathlib
import queue
import shutil
import signal
import subprocess
import sys
import tarfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from feed import RunnerClient, collect, noise_png, send_jobs, throughput  # noqa: E402

PART_BYTES = 15 * 2**20


def tree_files(root: pathlib.Path) -> dict[str, int]:
    return {str(path.relative_to(root)): path.stat().st_size for path in root.rglob("*") if path.is_file()} if root.exists() else {}


def record(out: pathlib.Path, **item) -> None:
    item = {"kind": "coldstart", **item}
    with open(out / "results.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(item) + "\n")
    print("RESULT", json.dumps(item), flush=True)


def compiler_line(log_path: pathlib.Path, since: int) -> dict:
    """The runner's 'warm-up took ...; compiler: {...}' and compile cache lines from its log."""
    text = log_path.read_bytes()[since:].decode("utf-8", "replace")
    found = {}
    for line in text.splitlines():
        if "warm-up took" in line:
            found["warm_up_line"] = line.split("INFO img2img_runner: ", 1)[-1]
        if "compile cache" in line:
            found.setdefault("cache_lines", []).append(line.split("img2img_runner: ", 1)[-1][:300])
        if "first call at" in line:
            found["first_call_line"] = line.split("img2img_runner: ", 1)[-1]
        if "pipeline loaded" in line:
            found["load_line"] = line.split("img2img_runner: ", 1)[-1]
        if "regional compilation" in line:
            found["regional_line"] = line.split("img2img_runner: ", 1)[-1]
    return found


def _log_since(log_path: pathlib.Path, since: int) -> str:
    return log_path.read_bytes()[since:].decode("utf-8", "replace") if log_path.exists() else ""


def serve_while_compiling(client, name: str, max_batch: int, png: bytes, log_path: pathlib.Path, since: int, deadline: float) -> dict:
    """Feed batches (one queued behind the one computing) until the runner says its compiled path is in service.

    Returns what the eager phase served and when the switch was seen (seconds from spawn;
    the runner switches between batches, so within one eager batch of the compile's end).
    """
    phase = {"eager_images": 0, "eager_errors": 0}
    started = time.perf_counter()
    ids = send_jobs(client, f"{name}-eager", max_batch, png)
    index = 0
    while time.perf_counter() < deadline:
        text = _log_since(log_path, since)
        if "compiled path in service" in text or "background compile failed" in text:
            phase["compile_failed"] = "background compile failed" in text
            phase["compiled_seen_s"] = round(time.perf_counter() - client.started, 1)
            break
        index += 1
        queued = send_jobs(client, f"{name}-eager{index}", max_batch, png)
        run = collect(client, ids, timeout=max(30, deadline - time.perf_counter()))
        phase["eager_images"] += len(run["finished"])
        phase["eager_errors"] += len(run["errors"])
        phase.setdefault("eager_compute_s", run["compute_s"][:2])
        ids = queued
    collect(client, ids, timeout=max(30, deadline - time.perf_counter()))  # the last queued batch (maybe compiled)
    seconds = time.perf_counter() - started
    phase["eager_images_per_s"] = round(phase["eager_images"] / seconds, 2) if seconds else None
    for line in _log_since(log_path, since).splitlines():
        if "background compile took" in line:
            phase["background_line"] = line.split("img2img_runner: ", 1)[-1][:400]
    return phase


def one_runner(out, name: str, tuning: str, work: pathlib.Path, rounds: int, png: bytes, timeout: float, extra: list[str], source: str = "sd15-arch", warmup_rounds: int = 0):
    """Start a runner with its own empty caches, wait for ready, feed jobs; return (record, arrays by seed).

    A runner that compiles in the background is fed batches until its compiled path is in
    service (what it served meanwhile is recorded), then WARMUP_ROUNDS unmeasured max batches
    (CUDA graphs are captured on a bucket's first use), then the measured rounds.
    """
    env = {
        "IMG2IMG_COMPILE_CACHE": str(work / "cc"),
        "TORCHINDUCTOR_CACHE_DIR": str(work / "inductor"),
        "TRITON_CACHE_DIR": str(work / "triton"),
        # Any recompilation (a job that compiles while serving) is named in the log.
        "TORCH_LOGS": "recompiles",
        # A runner that stops answering is sent SIGABRT: every thread's stack goes to the log.
        "PYTHONFAULTHANDLER": "1",
    }
    log_path = out / "runners.log"
    since = log_path.stat().st_size if log_path.exists() else 0
    before = tree_files(work / "cc")
    client = RunnerClient(["--model", source.removesuffix("-arch"), "--source", source, "--tuning", tuning, *extra], env=env, log_path=str(log_path))
    item = {"run": name, "tuning": tuning, "source": source, "cache_files_before": len(before)}
    arrays = {}
    deadline = time.perf_counter() + timeout
    try:
        ready = client.wait_ready(timeout=timeout)
        item.update(spawn_to_ready_s=ready["wall_start_seconds"], load_seconds=ready.get("load_seconds"), max_batch=ready["max_batch"])
        max_batch = ready["max_batch"]
        if "in the background" in _log_since(log_path, since):
            item.update(serve_while_compiling(client, name, max_batch, png, log_path, since, deadline - 30))
        after = tree_files(work / "cc")
        item["new_cache_files"] = sorted(set(after) - set(before))
        item["cache_mib"] = round(sum(after.values()) / 2**20, 1)
        if warmup_rounds:
            warmup = collect(client, send_jobs(client, f"{name}-warmup", warmup_rounds * max_batch, png), timeout=max(30, deadline - time.perf_counter()))
            item.update(warmup_images=len(warmup["finished"]), warmup_errors=len(warmup["errors"]))
        ids = send_jobs(client, name, rounds * max_batch, png)
        run = collect(client, ids, timeout=max(30, deadline - time.perf_counter()), keep=set(ids[:4]))
        if not run["finished"]:
            raise RuntimeError(f"none of {len(ids)} jobs finished; the first error: {run['errors'][:1]}")
        item.update(errors=len(run["errors"]), jobs=len(ids), compute_s=run["compute_s"][:3], **throughput(run, first_batch=min(max_batch, len(ids))))
        arrays = {job_id.split("-")[-1]: np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for job_id, data in run["kept"].items()}
    except (queue.Empty, RuntimeError, TimeoutError) as exc:
        # Out of time or the runner died: keep what was measured, and let the next tuning run.
        item["failed"] = f"{type(exc).__name__}: {exc}"[:300]
        if client.proc.poll() is None:
            client.proc.send_signal(signal.SIGABRT)
            client.proc.wait(timeout=30)
    finally:
        client.close()
        item.update(compiler_line(log_path, since))
    return item, arrays


def fresh(directory: pathlib.Path) -> pathlib.Path:
    """directory, emptied: what an earlier call left on a machine still held must not make a cold run warm."""
    shutil.rmtree(directory, ignore_errors=True)
    return directory


def deviation(reference: dict, arrays: dict) -> dict:
    """Max and mean absolute pixel difference and PSNR over the seeds both runs kept."""
    diffs = [np.abs(reference[seed].astype(np.int16) - arrays[seed].astype(np.int16)) for seed in reference if seed in arrays]
    if not diffs:
        return {}
    squared = float(np.mean([(diff.astype(np.float64) ** 2).mean() for diff in diffs]))
    return {
        "max_abs": int(max(diff.max() for diff in diffs)),
        "mean_abs": round(float(np.mean([diff.mean() for diff in diffs])), 4),
        "psnr_db": round(10 * np.log10(255**2 / max(squared, 1e-12)), 2),
    }


def copy_tree(source: pathlib.Path, target: pathlib.Path) -> float:
    started = time.perf_counter()
    if source.exists():
        shutil.copytree(source, target, dirs_exist_ok=True)
    return round(time.perf_counter() - started, 3)


def pack(store: pathlib.Path, out: pathlib.Path, max_parts: int, tunings: list[str]) -> None:
    """The store (every tuning's entry, else the first tuning's alone) as 15 MiB parts in OUT."""
    for chosen in (tunings, tunings[:1]):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
            for tuning in chosen:
                if (store / "compile-cache" / tuning).exists():
                    tar.add(store / "compile-cache" / tuning, arcname=f"store/compile-cache/{tuning}")
        data = buffer.getvalue()
        parts = (len(data) + PART_BYTES - 1) // PART_BYTES
        print(f"store {chosen}: {len(data) / 2**20:.1f} MiB packed, {parts} part(s)", flush=True)
        if parts <= max_parts:
            break
    else:
        print("store too large to bring back; not packed", flush=True)
        return
    for index in range(parts):
        (out / f"store.tgz.{index:02d}").write_bytes(data[index * PART_BYTES : (index + 1) * PART_BYTES])


def unpack(parts_dir: str, work: pathlib.Path) -> None:
    data = b"".join(pathlib.Path(path).read_bytes() for path in sorted(glob.glob(os.path.join(parts_dir, "store.tgz.*"))))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(work, filter="data")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT", "bench-out"))
    parser.add_argument("--work", default="/tmp/coldstart")
    parser.add_argument("--tunings", default="compile,regional")
    parser.add_argument("--rounds", type=int, default=3, help="jobs per runner: this many max batches")
    parser.add_argument("--budget", type=float, default=540, help="seconds for everything; a cold run needs --cold-need")
    parser.add_argument("--cold-need", type=float, default=200)
    parser.add_argument("--warmup-rounds", type=int, default=0, help="unmeasured max batches before the measured rounds")
    parser.add_argument("--warm-need", type=float, default=60)
    parser.add_argument("--runner-args", default="")
    parser.add_argument(
        "--cold-tuning",
        help="tuning of the cold runners (default: each warm runner's own), e.g. compile-first: it compiles before "
        "its ready frame, so spawn-to-ready is the whole cold compile; its entry serves `compile` (same key)",
    )
    parser.add_argument("--source", default="sd15-arch", help="sd15-arch (512x512 jobs) or sdxl-arch (1024x1024)")
    parser.add_argument("--pack-store", action="store_true")
    parser.add_argument("--max-parts", type=int, default=5)
    parser.add_argument("--store-from", help="a directory with store.tgz.* parts from an earlier call")
    args = parser.parse_args()
    deadline = time.perf_counter() + args.budget
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    store = work / "store"
    if args.store_from and not store.exists():
        unpack(args.store_from, work)
    store.mkdir(exist_ok=True)
    side = 1024 if args.source == "sdxl-arch" else 512
    png = noise_png((side, side))
    extra = args.runner_args.split()
    import torch

    record(out, run="env", gpu=torch.cuda.get_device_name(0), torch=torch.__version__, store_from=args.store_from)
    tunings = [name for name in args.tunings.split(",") if name]
    reference = None  # the first tuning's outputs
    for tuning in tunings:
        prefix = store / "compile-cache" / (tuning if args.source == "sd15-arch" else f"{args.source}-{tuning}")
        cold_arrays = None
        if not prefix.exists():
            if deadline - time.perf_counter() < args.cold_need:
                record(out, run="cold", tuning=tuning, skipped="budget")
                continue
            cold_dir = fresh(work / f"{args.source}-{tuning}-cold")
            item, cold_arrays = one_runner(out, f"{args.source}-{tuning}-cold", args.cold_tuning or tuning, cold_dir, args.rounds, png, deadline - time.perf_counter(), extra, args.source, args.warmup_rounds)
            if "failed" in item:
                record(out, **item)
                continue
            item["upload_s"] = copy_tree(cold_dir / "cc", prefix)
            if reference and tuning != tunings[0]:
                item[f"vs_{tunings[0]}"] = deviation(reference, cold_arrays)
            reference = reference or cold_arrays
            record(out, **item)
        if deadline - time.perf_counter() < args.warm_need:
            record(out, run="warm", tuning=tuning, skipped="budget")
            continue
        warm_dir = fresh(work / f"{args.source}-{tuning}-warm")
        download_s = copy_tree(prefix, warm_dir / "cc")
        item, warm_arrays = one_runner(out, f"{args.source}-{tuning}-warm", tuning, warm_dir, args.rounds, png, deadline - time.perf_counter(), extra, args.source, args.warmup_rounds)
        item["download_s"] = download_s
        if "failed" in item:
            record(out, **item)
            continue
        item["store_mib"] = round(sum(tree_files(prefix).values()) / 2**20, 1)
        if cold_arrays:
            item["vs_cold"] = deviation(cold_arrays, warm_arrays)
        if reference and tuning != tunings[0]:
            # Same jobs, seeds and input as the first tuning's runner (the exact one): what this tuning changes.
            item[f"vs_{tunings[0]}"] = deviation(reference, warm_arrays)
        reference = reference or warm_arrays
        record(out, **item)
    if args.pack_store:
        pack(store, out, args.max_parts, tunings)
    summary = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if '"coldstart"' in line]
    print("\n| run | spawn-to-ready s | compiled in service s | eager img/s meanwhile | max_batch | img/s steady | new cache files | vs cold |")
    print("|---|---|---|---|---|---|---|---|")
    for item in summary:
        if item.get("run") == "env":
            continue
        print(
            f"| {item.get('run')} | {item.get('spawn_to_ready_s')} | {item.get('compiled_seen_s')} | {item.get('eager_images_per_s')} | "
            f"{item.get('max_batch')} | {item.get('images_per_s_steady')} | "
            f"{len(item.get('new_cache_files', [])) if 'new_cache_files' in item else item.get('skipped')} | {item.get('vs_cold')} |"
        )


if __name__ == "__main__":
    main()
