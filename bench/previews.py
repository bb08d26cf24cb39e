"""The cost of live previews in the runner: the same batches with preview_every=5 and without,
alternating in one run, through Runner._run_batch (the pipeline call, progress frames, the
previews' projection and WebP encode, the result's PNG encode), frames written to memory.

    diffusion-py/.venv/bin/python bench/previews.py [--rounds 6] [--batches 4] [--size 256] [--steps 20]
    diffusion-py/.venv/bin/python bench/previews.py --standin bench/gpu/h200-sd15-fastest.json

Prints images a second each way, their ratio (median of the rounds) and the preview bytes on the
wire per job. The model is `tiny` on this machine's CPU: a toy UNet, so the previews' share of a
step is larger than it would be beside a full-size UNet on a GPU. With --standin the pipeline is
the timed stand-in (img2img_runner/standin.py) sleeping a GPU's measured batch latencies, whose
step callback hands over noise of the latents' shape: what previews cost the runner's thread
beside that GPU (projection and WebP encode of 64x64 latents at 512x512), in full batches of the
table's largest size. It leaves out the device-to-host copy of the preview's pixels (a few KB).
With --source the pipeline is a benchmark model on the GPU (--size 512 --batch-size 24 --steps 15
for SD 1.5's job).
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
from img2img_runner.standin import SleepingPipeline, echo_input, parse_latencies  # noqa: E402
from tests.helpers import job_header, png_bytes, sample_image  # noqa: E402


def batch_run(pipe, jobs, model: str, encoder=None, device=torch.device("cpu")) -> list[dict]:
    out = io.BytesIO()
    runner = Runner(pipe, model, device, writer=FrameWriter(out), max_batch=len(jobs), encoder=encoder)
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
    parser.add_argument("--standin", help="a stand-in latency table (bench/gpu/*.json): its shape, steps and largest batch replace --size, --steps and --batch-size")
    parser.add_argument("--source", help="a benchmark model on the GPU (sd15-arch, sdxl-arch), tuned with --tuning")
    parser.add_argument("--tuning", default="eager")
    args = parser.parse_args()
    device = torch.device("cpu")
    if args.source:
        from img2img_runner.tuning import TUNINGS, apply_tuning

        device = torch.device("cuda")
        pipe, model, encoder = load_pipeline("bench", source=args.source, device=device, dtype=torch.float16), "bench", None
        apply_tuning(pipe, TUNINGS[args.tuning])
        what = f"{args.source} ({args.tuning}) on {torch.cuda.get_device_name()}"
    elif args.standin:
        latencies = parse_latencies(args.standin)
        pipe, model, encoder = SleepingPipeline(latencies), "sd15", echo_input
        side = int(latencies.pixels**0.5)
        args.size, args.steps, args.batch_size = side, latencies.denoise_steps, latencies.max_batch
        what = f"stand-in {pathlib.Path(args.standin).name}"
    else:
        pipe, model, encoder = load_pipeline("tiny", device=torch.device("cpu")), "tiny", None
        what = "tiny, CPU"
    image = png_bytes(sample_image(0, (args.size, args.size)))

    def jobs(every: int, round_: int):
        return [
            parse_job(parse(job_header(f"r{round_}-{n}", seed=n, steps=args.steps, strength=1.0, preview_every=every), TO_RUNNER), image, model)
            for n in range(args.batch_size)
        ]

    def batch(every: int, round_: int):
        return batch_run(pipe, jobs(every, round_), model, encoder, device)

    rates = {0: [], args.every: []}
    preview_bytes = []
    batch(0, -1)  # warm-up, not counted
    for round_ in range(args.rounds):
        for every in ((0, args.every) if round_ % 2 == 0 else (args.every, 0)):
            started = time.perf_counter()
            for _ in range(args.batches):
                frames = batch(every, round_)
                if every:
                    preview_bytes.append(sum(len(payload) for header, payload in frames if header["type"] == "preview") / args.batch_size)
            rates[every].append(args.batches * args.batch_size / (time.perf_counter() - started))
        print(f"round {round_ + 1}: {rates[0][-1]:.2f} img/s without, {rates[args.every][-1]:.2f} with previews every {args.every} steps")
    ratio = statistics.median(w / wo for w, wo in zip(rates[args.every], rates[0]))
    print(
        f"\n{what}, {args.size}x{args.size}, {args.steps} steps, batches of {args.batch_size}: "
        f"{statistics.median(rates[0]):.2f} img/s without previews, {statistics.median(rates[args.every]):.2f} with previews every {args.every} steps: "
        f"{ratio:.3f}x ({(1 - ratio) * 100:+.1f}% cost); {statistics.median(preview_bytes):.0f} preview bytes a job on the wire"
    )


if __name__ == "__main__":
    main()
