"""Drive `python -m img2img_runner` processes over the frame protocol and time them.

Shared by bench.py (one runner) and multi.py (one runner per GPU). A runner
gets all its jobs at once (it queues them and batches as it goes), so it is
saturated from the first batch to the last.
"""

import io
import os
import pathlib
import queue
import subprocess
import sys
import threading
import time

import numpy as np
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[2]
RUNNER_DIR = REPO / "diffusion-py"
sys.path.insert(0, str(RUNNER_DIR))

from img2img_runner.frames import encode_frame, read_frame  # noqa: E402

# The benchmark job: img2img 512x512, 30 steps at strength 0.5 (15 denoising steps), CFG 7.5.
PARAMS = {"prompt": "a watercolor painting of a lighthouse", "negative_prompt": None, "strength": 0.5, "steps": 30, "guidance_scale": 7.5, "preview_every": 0}


def noise_png(size: tuple[int, int], seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class RunnerClient:
    """One runner subprocess; every frame it sends is kept with its arrival time."""

    def __init__(self, args: list[str], env: dict | None = None, log_path: str | None = None, python: str = sys.executable):
        self.log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [python, "-m", "img2img_runner", *args],
            cwd=RUNNER_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env={**os.environ, **(env or {})},
        )
        self.frames: queue.Queue = queue.Queue()
        # Final frames (result, error) of jobs that no collect was waiting for yet: a runner batches
        # whatever is pending, so the next batch's jobs can finish while the current one is collected.
        self.early: list[tuple[float, tuple]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        while True:
            try:
                frame = read_frame(self.proc.stdout)
            except Exception as exc:  # broken stream: report it as the end
                frame = None
                print(f"runner stream broke: {exc}", file=sys.stderr)
            self.frames.put((time.perf_counter(), frame))
            if frame is None:
                return

    def wait_ready(self, timeout: float) -> dict:
        arrived, frame = self.frames.get(timeout=timeout)
        if frame is None or frame[0]["type"] != "ready":
            raise RuntimeError(f"runner did not get ready: {frame and frame[0]}")
        header = dict(frame[0])
        header["wall_start_seconds"] = round(arrived - self.started, 3)
        return header

    def send(self, header: dict, payload: bytes = b"") -> None:
        with self._lock:
            self.proc.stdin.write(encode_frame(header, payload))
            self.proc.stdin.flush()

    def close(self, timeout: float = 60) -> int:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def send_jobs(client: RunnerClient, prefix: str, count: int, png: bytes, params: dict = PARAMS, distinct_prompts: bool = False) -> list[str]:
    ids = [f"{prefix}-{index}" for index in range(count)]
    for index, job_id in enumerate(ids):
        prompt = f"{params['prompt']} {index}" if distinct_prompts else params["prompt"]
        client.send({"v": 1, "type": "job", "id": job_id, "priority": "normal", "params": {**params, "prompt": prompt, "seed": index}}, png)
    return ids


def collect(client: RunnerClient, ids: list[str], timeout: float, keep: set | None = None) -> dict:
    """Wait for every job's final frame; return timings of the run (and the PNGs of the jobs in keep)."""
    waiting = set(ids)
    kept: dict[str, bytes] = {}
    sent = time.perf_counter()
    finished: list[float] = []
    batch_sizes: list[int] = []
    errors: list[dict] = []
    sizes = set()
    compute_s: dict[float, int] = {}  # one compute_s per batch: value -> batch size
    pixels: list[tuple[float, float]] = []  # mean and std of the first results' pixels
    deadline = sent + timeout
    early = [item for item in client.early if item[1][0].get("id") in waiting]
    client.early = [item for item in client.early if item[1][0].get("id") not in waiting]
    while waiting:
        if early:
            arrived, frame = early.pop(0)
        else:
            arrived, frame = client.frames.get(timeout=max(0.1, deadline - time.perf_counter()))
        if frame is None:
            raise RuntimeError("runner exited before finishing its jobs")
        header, payload = frame
        if header.get("id") not in waiting:
            if header["type"] in ("result", "error") and header.get("id") is not None:
                client.early.append((arrived, frame))
            continue
        if header["type"] == "result":
            finished.append(arrived)
            batch_sizes.append(header["batch_size"])
            image = Image.open(io.BytesIO(payload))
            sizes.add(image.size)
            compute_s[header["timings"]["compute_s"]] = header["batch_size"]
            if keep and header["id"] in keep:
                kept[header["id"]] = payload
            if len(pixels) < 4:
                array = np.asarray(image.convert("RGB"), dtype=np.float32)
                pixels.append((round(float(array.mean()), 2), round(float(array.std()), 2)))
            waiting.discard(header["id"])
        elif header["type"] == "error":
            errors.append(header)
            waiting.discard(header["id"])
    batches = sorted(((size, round(seconds, 3)) for seconds, size in compute_s.items()), key=lambda item: item[0])
    return {"sent": sent, "finished": sorted(finished), "batch_sizes": batch_sizes, "errors": errors, "sizes": sorted(sizes), "compute_s": batches, "pixels": pixels, "kept": kept}


def throughput(run: dict, first_batch: int) -> dict:
    """Images/s over the whole run, and in steady state (after the first batch's results)."""
    done = run["finished"]
    whole = len(done) / (done[-1] - run["sent"])
    steady_count = len(done) - first_batch
    steady = steady_count / (done[-1] - done[first_batch - 1]) if steady_count > 0 and done[-1] > done[first_batch - 1] else None
    return {"images": len(done), "images_per_s_whole": round(whole, 3), "images_per_s_steady": steady and round(steady, 3)}
