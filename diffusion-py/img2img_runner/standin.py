"""A timed stand-in runner: the real frame protocol, GPU latencies slept instead of computed.

    python -m img2img_runner.standin --model sd15 --per-batch-ms '{"1":150,"8":420,"32":1400}'
    python -m img2img_runner --model sd15 --source 'standin:{"1":150,"8":420,"32":1400}'

It is the real Runner (same reader thread, queue, batching, cancel, progress,
result and error frames) driving a pipeline that sleeps: a batch of B jobs
takes per_batch_ms[B] milliseconds (linear between the listed batch sizes),
split evenly over its denoising steps with one progress frame per step. The
result is the job's own input PNG (so: the input's size, no encoding cost).
It lets the whole system (API, Kafka, MinIO, consumer) be measured on a
machine without a GPU as if an H100 runner were behind it.

The table is for one job shape, by default 512x512 with 15 denoising steps
(bench/gpu measures it: BENCHMARKS.md "## GPU (issue 6)"); other shapes scale
it by pixels and by denoising steps, a rough model. The spec is a JSON object
{"<batch>": ms, ...}, or {"per_batch_ms": {...}, "width": W, "height": H,
"denoise_steps": N}, or the path of a file holding either.
"""

import argparse
import json
import logging
import os
import sys
import time
from types import SimpleNamespace

import torch

from .frames import VERSION
from .jobs import Job, job_id_of
from .runner import FrameWriter, Runner

log = logging.getLogger("img2img_runner")


class Latencies:
    """Per-batch latency table for one job shape, scaled to others."""

    def __init__(self, per_batch_ms: dict[int, float], width: int = 512, height: int = 512, denoise_steps: int = 15):
        if not per_batch_ms or any(batch < 1 or ms < 0 for batch, ms in per_batch_ms.items()):
            raise ValueError(f"per-batch latencies must map batch sizes >= 1 to ms >= 0, got {per_batch_ms!r}")
        self.points = sorted(per_batch_ms.items())
        self.pixels = width * height
        self.denoise_steps = denoise_steps

    @property
    def max_batch(self) -> int:
        return self.points[-1][0]

    def batch_ms(self, batch: int) -> float:
        """Linear between the listed sizes; the nearest segment's line outside them (never below 0)."""
        if len(self.points) == 1:
            return self.points[0][1] * batch / self.points[0][0]
        for (b0, ms0), (b1, ms1) in zip(self.points, self.points[1:]):
            if batch <= b1 or (b1, ms1) == self.points[-1]:
                return max(0.0, ms0 + (ms1 - ms0) * (batch - b0) / (b1 - b0))
        raise AssertionError("unreachable")

    def seconds(self, batch: int, width: int, height: int, denoise_steps: int) -> float:
        return self.batch_ms(batch) / 1000 * (width * height / self.pixels) * (denoise_steps / self.denoise_steps)


def parse_latencies(spec: str) -> Latencies:
    text = spec if spec.lstrip().startswith("{") else open(spec, encoding="utf-8").read()
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("the stand-in spec must be a JSON object")
    table = data.get("per_batch_ms", data)
    shape = {key: int(data[key]) for key in ("width", "height", "denoise_steps") if key in data}
    return Latencies({int(batch): float(ms) for batch, ms in table.items()}, **shape)


class SleepingPipeline:
    """Quacks like a diffusers img2img pipeline for Runner: sleeps the measured latency, returns the inputs."""

    vae_scale_factor = 8

    def __init__(self, latencies: Latencies):
        self.latencies = latencies
        self.num_timesteps = 0
        self._interrupt = False

    def __call__(self, *, image, strength, num_inference_steps, callback_on_step_end=None, **_ignored):
        steps = int(num_inference_steps * strength)
        width, height = image[0].size
        self.num_timesteps = steps
        self._interrupt = False
        started = time.perf_counter()
        total = self.latencies.seconds(len(image), width, height, steps)
        for step in range(steps):
            # Deadlines from the start, so callback overhead does not add up.
            time.sleep(max(0.0, started + total * (step + 1) / steps - time.perf_counter()))
            if callback_on_step_end is not None:
                callback_on_step_end(self, step, 0, {})
            if self._interrupt:
                break
        return SimpleNamespace(images=list(image))


class StandInRunner(Runner):
    """Answers each job with its own input PNG (same size as the input, nothing to encode)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._payloads: dict[str, bytes] = {}

    def _enqueue(self, job: Job, payload: bytes) -> None:
        # Under the queue's (re-entrant) lock: the main thread cannot take the job before its payload is kept.
        with self._cond:
            queued = len(self._pending)
            super()._enqueue(job, payload)
            if len(self._pending) > queued:
                self._payloads[job.id] = payload

    def _cancel(self, header: dict) -> None:
        super()._cancel(header)
        job_id = job_id_of(header)
        with self._cond:
            if job_id is not None and job_id not in self._running and not any(job.id == job_id for job in self._pending):
                self._payloads.pop(job_id, None)  # canceled while queued

    def _settle(self, job: Job) -> bool:
        canceled = super()._settle(job)
        if canceled:
            self._payloads.pop(job.id, None)
        return canceled

    def _fail(self, jobs: list[Job], code: str, message: str) -> None:
        for job in jobs:
            self._payloads.pop(job.id, None)
        super()._fail(jobs, code, message)

    def _encode(self, job: Job, image) -> bytes:
        return self._payloads.pop(job.id)


def serve_standin(model: str, spec: str, frames_out, max_batch: int | None, started: float) -> int:
    latencies = parse_latencies(spec)
    max_batch = max_batch or latencies.max_batch
    writer = FrameWriter(frames_out)
    load_seconds = time.perf_counter() - started
    log.info("stand-in %s ready: sleeps %s ms per batch, max_batch %d", model, dict(latencies.points), max_batch)
    writer.send(
        {
            "v": VERSION,
            "type": "ready",
            "model": model,
            "device": "standin",
            "dtype": "float16",
            "max_batch": max_batch,
            "load_seconds": round(load_seconds, 3),
        }
    )
    runner = StandInRunner(pipe=SleepingPipeline(latencies), model=model, device=torch.device("cpu"), max_batch=max_batch, writer=writer)
    stdin = open(0, "rb", buffering=0, closefd=False)
    return runner.serve(stdin)


def main(argv=None) -> int:
    from .__main__ import _take_stdout

    frames_out = _take_stdout()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m img2img_runner.standin", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="standin", help="model name to report in the ready frame")
    parser.add_argument("--per-batch-ms", required=True, help="JSON latency table or the path of a JSON file")
    parser.add_argument("--max-batch", type=int, help="default: the largest batch in the table")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        return serve_standin(args.model, args.per_batch_ms, frames_out, args.max_batch, started)
    except (OSError, ValueError) as exc:
        log.error("bad stand-in spec: %s", exc)
        return 1


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
