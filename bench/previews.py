"""The cost of live previews in the runner: the same batches with preview_every=5 and without,
alternating in one run, through Runner._run_batch (the pipeline call, progress frames, the
previews' projection and WebP encode, the result's PNG encode), frames written to memory.

    diffusion-py/.venv/bin/python bench/previews.py [--rounds 6] [--batches 4] [--size 256] [--steps 20]

Prints images a second each way, their ratio (median of the rounds) and the preview bytes on the
wire per job. The model is `tiny` on this machine's CPU: a toy UNet, so the previews' share of a
step is larger than it would be beside a full-size UNet on a GPU.
"""

import argparse
import io
import pathlib
import statistics
import sys
import time

RUNNER_DIR = pathlib.Path(__file__).resolve().parents[1] / "diffusion-py"
sys.path.insert(0, str(RUNNER_DIR))

import torch  # noqa: E402

from img2img_runner.frames import read_frame  # noqa: E402
from img2img_runner.jobs import parse_job  # noqa: E402
from img2img_runner.models import load_pipeline  # noqa: E402
from img2img_runner.protocol import TO_RUNNER, parse  # noqa: E402
from img2img_runner.runner import FrameWriter, Runner  # noqa: E402
from tests.helpers import job_header, png_bytes, sample_image  # noqa: E402


def batch_run(pipe, jobs) -> list[dict]:
    out = io.BytesIO()
    runner = Runner(pipe, "tiny", torch.device("cpu"), writer=FrameWriter(out), max_batch=len(jobs))
    runner._running.update(job.id for job in jobs)
    runner._run_batch(jobs)
    out.seek(0)
    frames = []
    while (frame := read_frame(out)) is not None:
        frames.append(frame)
    return frames


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--every", type=int, default=5)
    args = parser.parse_args()
    pipe = load_pipeline("tiny", device=torch.device("cpu"))
    image = png_bytes(sample_image(0, (args.size, args.size)))

    def jobs(every: int, round_: int):
        return [
            parse_job(parse(job_header(f"r{round_}-{n}", seed=n, steps=args.steps, strength=1.0, preview_every=every), TO_RUNNER), image, "tiny")
            for n in range(args.batch_size)
        ]

    rates = {0: [], args.every: []}
    preview_bytes = []
    batch_run(pipe, jobs(0, -1))  # warm-up, not counted
    for round_ in range(args.rounds):
        for every in ((0, args.every) if round_ % 2 == 0 else (args.every, 0)):
            started = time.perf_counter()
            for _ in range(args.batches):
                frames = batch_run(pipe, jobs(every, round_))
                if every:
                    preview_bytes.append(sum(len(payload) for header, payload in frames if header["type"] == "preview") / args.batch_size)
            rates[every].append(args.batches * args.batch_size / (time.perf_counter() - started))
        print(f"round {round_ + 1}: {rates[0][-1]:.2f} img/s without, {rates[args.every][-1]:.2f} with previews every {args.every} steps")
    ratio = statistics.median(w / wo for w, wo in zip(rates[args.every], rates[0]))
    print(
        f"\ntiny, {args.size}x{args.size}, {args.steps} steps, batches of {args.batch_size}, CPU: "
        f"{statistics.median(rates[0]):.2f} img/s without previews, {statistics.median(rates[args.every]):.2f} with previews every {args.every} steps: "
        f"{ratio:.3f}x ({(1 - ratio) * 100:+.1f}% cost); {statistics.median(preview_bytes):.0f} preview bytes a job on the wire"
    )


if __name__ == "__main__":
    main()
