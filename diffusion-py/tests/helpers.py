"""Shared test helpers: sample images, job headers and a real runner subprocess."""

import io
import pathlib
import queue
import subprocess
import sys
import tempfile
import threading

import numpy as np
from PIL import Image

from img2img_runner.frames import encode_frame, read_frame

PACKAGE_DIR = pathlib.Path(__file__).resolve().parents[1]


def sample_image(seed: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def job_header(
    job_id: str,
    seed: int = 1,
    prompt: str = "a cat",
    steps: int = 10,
    strength: float = 0.6,
    guidance_scale: float = 7.5,
    priority: str = "normal",
    negative_prompt: str | None = None,
    preview_every: int = 0,
) -> dict:
    params = {
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "strength": strength,
        "steps": steps,
        "guidance_scale": guidance_scale,
        "seed": seed,
        "preview_every": preview_every,
    }
    return {"v": 1, "type": "job", "id": job_id, "priority": priority, "params": params}


def call_tiny(pipe, batch: int = 2, steps: int = 4, strength: float = 0.6, guidance_scale: float = 7.5, raw: bool = False, **extra):
    """One seeded call of a (tiny) pipeline on CPU with tensor I/O, as the runner makes it; uint8 NHWC.

    raw: the pipeline's float output instead (before rounding to 8 bits); extra: more pipeline arguments.
    """
    import torch

    from img2img_runner.runner import images_to_tensor, tensor_to_arrays

    images = [sample_image(seed, (64, 64)) for seed in range(batch)]
    generators = [torch.Generator().manual_seed(seed) for seed in range(batch)]
    with torch.inference_mode():
        out = pipe(
            prompt=["a"] * batch,
            negative_prompt=[""] * batch,
            image=images_to_tensor(images, torch.device("cpu")),
            strength=strength,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            generator=generators,
            output_type="pt",
            **extra,
        )
    return out.images.float() if raw else np.stack(tensor_to_arrays(out.images))


def run_one_batch(pipe, jobs, **options) -> list[tuple[dict, bytes]]:
    """Run jobs as one batch through Runner._run_batch on CPU; return every frame it sent."""
    import io

    import torch

    from img2img_runner.runner import FrameWriter, Runner

    out = io.BytesIO()
    runner = Runner(pipe, "tiny", torch.device("cpu"), writer=FrameWriter(out), **options)
    runner._running.update(job.id for job in jobs)
    runner._run_batch(jobs)
    out.seek(0)
    frames = []
    while (frame := read_frame(out)) is not None:
        frames.append(frame)
    return frames


def on_each_call(pipe, hook) -> None:
    """Make pipe call hook(kwargs) before each of its calls (a subclass: __call__ is looked up on the type)."""
    original = type(pipe).__call__

    class Hooked(type(pipe)):
        def __call__(self, *args, **kwargs):
            hook(kwargs)
            return original(self, *args, **kwargs)

    pipe.__class__ = Hooked


class RunnerProcess:
    """`python -m img2img_runner --model tiny` run from diffusion-py/, spoken to in frames."""

    def __init__(self, *extra_args: str):
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "img2img_runner", "--model", "tiny", *extra_args],
            cwd=PACKAGE_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self._frames: queue.Queue = queue.Queue()
        # A pump thread so a test never blocks forever on a silent runner.
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        while True:
            frame = read_frame(self.proc.stdout)
            self._frames.put(frame)
            if frame is None:
                return

    def send(self, header: dict, payload: bytes = b"") -> None:
        self.send_raw(encode_frame(header, payload))

    def send_raw(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def next(self, timeout: float = 60) -> tuple[dict, bytes] | None:
        try:
            return self._frames.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no frame from the runner in {timeout}s; its log:\n{self.log()}") from None

    def collect(self, job_ids: list[str], timeout: float = 60) -> dict[str, list[tuple[dict, bytes]]]:
        """All frames for these jobs, until each has its final frame (result or error)."""
        frames: dict[str, list] = {job_id: [] for job_id in job_ids}
        waiting = set(job_ids)
        while waiting:
            frame = self.next(timeout=timeout)
            assert frame is not None, f"runner closed its output; its log:\n{self.log()}"
            header = frame[0]
            if header.get("id") in frames:
                frames[header["id"]].append(frame)
                if header["type"] in ("result", "error"):
                    waiting.discard(header["id"])
        return frames

    def log(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")[-5000:]

    def close(self, timeout: float = 60) -> int:
        if not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
