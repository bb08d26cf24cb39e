"""A timed stand-in: a pipeline that sleeps measured GPU latencies, and an encoder that echoes.

    python -m img2img_runner --model sd15 --source 'standin:{"1":150,"8":420,"32":1400}'

cli.py gives the real Runner (same reader thread, queue, batching, cancel,
progress, result and error frames) a pipeline that sleeps: a batch of B jobs
takes per_batch_ms[B] milliseconds (linear between the listed batch sizes),
split evenly over its denoising steps with one progress frame per step. The
result is the job's own input PNG (so: the input's size, no encoding cost). A
step callback that asks for the latents gets seeded noise of the latents'
shape, so previews cost what they cost beside a GPU: projection and encoding.
It lets the whole system (API, Kafka, MinIO, consumer) be measured on a
machine without a GPU as if an H100 runner were behind it.

The table is for one job shape, by default 512x512 with 15 denoising steps
(bench/gpu measures it: bench/NOTES.md, the GPU sections); other shapes scale
it by pixels and by denoising steps, a rough model. The spec is a JSON object
{"<batch>": ms, ...}, or {"per_batch_ms": {...}, "width": W, "height": H,
"denoise_steps": N}, or the path of a file holding either.
"""

import json
import time
from types import SimpleNamespace

import torch

from .jobs import Job


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
    latent_channels = 4
    # Called as a Stable Diffusion img2img pipeline is (families/sd.py).
    _img2img_family = "sd"
    _callback_tensor_inputs = ("latents",)

    def __init__(self, latencies: Latencies):
        self.latencies = latencies
        self.num_timesteps = 0
        self._interrupt = False

    def __call__(self, *, image, strength, num_inference_steps, callback_on_step_end=None, callback_on_step_end_tensor_inputs=(), **_ignored):
        steps = int(num_inference_steps * strength)
        width, height = image[0].size
        self.num_timesteps = steps
        self._interrupt = False
        started = time.perf_counter()
        total = self.latencies.seconds(len(image), width, height, steps)
        tensors = {}
        if "latents" in callback_on_step_end_tensor_inputs:
            shape = (len(image), self.latent_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
            tensors["latents"] = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(torch.float16)
        for step in range(steps):
            # Deadlines from the start, so callback overhead does not add up.
            time.sleep(max(0.0, started + total * (step + 1) / steps - time.perf_counter()))
            if callback_on_step_end is not None:
                callback_on_step_end(self, step, 0, tensors)
            if self._interrupt:
                break
        return SimpleNamespace(images=list(image))


def echo_input(job: Job, image) -> bytes:
    """The stand-in's result encoder: the job's own input PNG (the input's size, nothing to encode)."""
    return job.payload
