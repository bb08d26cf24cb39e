"""Several GPUs, one runner each: throughput of N GPUs over one, in one run.

    python3 bench/gpu/multi.py --out $OUT            # on nvidia-h200-x2: 2 runners

Starts one `python -m img2img_runner --model sd15 --source sd15-arch` per GPU
(CUDA_VISIBLE_DEVICES=i, the runner's defaults otherwise), waits for every
ready frame, then: phase 1 feeds runner 0 alone, phase 2 feeds every runner at
once, each with ROUNDS x max_batch jobs of 512x512 img2img (15 denoising
steps, CFG 7.5). Reports images/s of each phase (steady state: after each
runner's first batch) and their ratio. Writes OUT/multi.json and the runners'
logs to OUT/multi-runners.log.
"""

import argparse
import json
import os
import pathlib
import sys
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from feed import RunnerClient, collect, noise_png, send_jobs, throughput  # noqa: E402


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def feed_all(clients, prefix: str, rounds: int, png: bytes, timeout: float) -> dict:
    """Feed every client at once; total images/s (whole run and summed steady state)."""
    results: dict[int, dict] = {}

    def one(index: int, client) -> None:
        ids = send_jobs(client, f"{prefix}-{index}", rounds * client.max_batch, png)
        results[index] = collect(client, ids, timeout)

    started = time.perf_counter()
    threads = [threading.Thread(target=one, args=(index, client)) for index, client in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if len(results) != len(clients):
        raise RuntimeError("a runner did not finish its jobs")
    per_runner = [throughput(results[index], first_batch=client.max_batch) for index, client in enumerate(clients)]
    last = max(run["finished"][-1] for run in results.values())
    images = sum(item["images"] for item in per_runner)
    errors = sum(len(run["errors"]) for run in results.values())
    return {
        "runners": len(clients),
        "images": images,
        "errors": errors,
        "images_per_s_whole": round(images / (last - started), 3),
        "images_per_s_steady": round(sum(item["images_per_s_steady"] or 0 for item in per_runner), 3),
        "per_runner": per_runner,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT", "bench-out"))
    parser.add_argument("--gpus", type=int, help="default: every visible GPU")
    parser.add_argument("--rounds", type=int, default=6, help="jobs per runner and phase: this many max batches")
    parser.add_argument("--runner-args", default="", help="extra runner flags, space-separated")
    parser.add_argument("--timeout", type=float, default=480)
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.perf_counter() + args.timeout
    gpus = args.gpus or gpu_count()
    report: dict = {"gpus": gpus, "rounds": args.rounds}
    clients = []
    try:
        for index in range(gpus):
            # One process per GPU: it sees only its own device, as cuda:0.
            env = {"CUDA_VISIBLE_DEVICES": str(index)}
            clients.append(RunnerClient(["--model", "sd15", "--source", "sd15-arch", *args.runner_args.split()], env=env, log_path=str(out / "multi-runners.log")))
        report["ready"] = []
        for client in clients:
            ready = client.wait_ready(timeout=max(10, deadline - time.perf_counter()))
            client.max_batch = ready["max_batch"]
            report["ready"].append({k: v for k, v in ready.items() if k not in ("v", "type")})
        print("ready:", json.dumps(report["ready"]), flush=True)
        png = noise_png((512, 512))
        feed_all(clients, "warm", 1, png, timeout=deadline - time.perf_counter())
        report["one_gpu"] = feed_all(clients[:1], "one", args.rounds, png, timeout=deadline - time.perf_counter())
        print("one GPU:", json.dumps(report["one_gpu"]), flush=True)
        report["all_gpus"] = feed_all(clients, "all", args.rounds, png, timeout=deadline - time.perf_counter())
        print(f"{gpus} GPUs:", json.dumps(report["all_gpus"]), flush=True)
        for key in ("images_per_s_steady", "images_per_s_whole"):
            report[f"ratio_{key.removeprefix('images_per_s_')}"] = round(report["all_gpus"][key] / report["one_gpu"][key], 3)
    finally:
        for client in clients:
            client.close()
        (out / "multi.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({key: value for key, value in report.items() if key.startswith("ratio")}), flush=True)


if __name__ == "__main__":
    main()
