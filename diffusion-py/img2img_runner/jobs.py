"""Turning a job frame into a validated Job (params checked, image decoded)."""

import io
import math
import time
from dataclasses import dataclass

from PIL import Image

MIN_SIDE = 64  # smaller images leave the UNet less than one latent cell per level
MAX_SIDE = 4096
MAX_STEPS = 1000
MAX_GUIDANCE = 100.0
MAX_SEED = 2**53 - 1  # JavaScript Number.MAX_SAFE_INTEGER: the parent is TypeScript


class JobError(Exception):
    """A job that cannot run; code is the protocol error code (bad_image, bad_params)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class Job:
    id: str
    prompt: str
    negative_prompt: str | None
    strength: float
    steps: int
    guidance_scale: float
    seed: int
    image: Image.Image
    decode_s: float
    # The size the result is answered in: the input's, even when `image` was enlarged to compute.
    size: tuple[int, int] = (0, 0)

    @property
    def batch_key(self) -> tuple:
        """Jobs with equal keys can share one pipeline call."""
        return (self.image.width, self.image.height, self.steps, self.strength, self.guidance_scale)


def job_id_of(header: dict) -> str | None:
    job_id = header.get("id")
    return job_id if isinstance(job_id, str) and job_id else None


def _number(params: dict, key: str, low: float, high: float) -> float:
    value = params.get(key)
    # bool is an int in Python; JSON from JavaScript sends 1.0 as 1, so ints are fine.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise JobError("bad_params", f"params.{key} must be a number, got {value!r}")
    if not low <= value <= high:
        raise JobError("bad_params", f"params.{key} must be in [{low}, {high}], got {value!r}")
    return float(value)


def _integer(params: dict, key: str, low: int, high: int) -> int:
    value = params.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise JobError("bad_params", f"params.{key} must be an integer in [{low}, {high}], got {value!r}")
    return value


def _decode_image(payload: bytes) -> Image.Image:
    try:
        with Image.open(io.BytesIO(payload)) as image:
            rgb = image.convert("RGB")
    except Exception as exc:  # PIL raises many types (UnidentifiedImageError, OSError, bomb errors...)
        # Type name only: PIL messages embed object addresses.
        raise JobError("bad_image", f"payload is not a decodable image ({type(exc).__name__})") from exc
    if max(rgb.size) > MAX_SIDE:
        raise JobError("bad_image", f"image is {rgb.width}x{rgb.height}; no side may exceed {MAX_SIDE}")
    return rgb


def _computable(image: Image.Image) -> Image.Image:
    """Small images are enlarged to MIN_SIDE (on the 8-pixel grid) to compute; the result is shrunk back."""
    if min(image.size) >= MIN_SIDE:
        return image
    scale = MIN_SIDE / min(image.size)
    size = tuple(math.ceil(side * scale / 8) * 8 for side in image.size)
    if max(size) > MAX_SIDE:
        raise JobError("bad_image", f"image is {image.width}x{image.height}; too narrow to enlarge to {MIN_SIDE} pixels")
    return image.resize(size, Image.Resampling.LANCZOS)


def parse_job(header: dict, payload: bytes) -> Job:
    job_id = job_id_of(header)
    if job_id is None:
        raise JobError("bad_params", "job.id must be a non-empty string")
    params = header.get("params")
    if not isinstance(params, dict):
        raise JobError("bad_params", "job.params must be an object")
    prompt = params.get("prompt")
    if not isinstance(prompt, str):
        raise JobError("bad_params", "params.prompt must be a string")
    negative_prompt = params.get("negative_prompt")
    if negative_prompt is not None and not isinstance(negative_prompt, str):
        raise JobError("bad_params", "params.negative_prompt must be a string or null")
    strength = _number(params, "strength", low=0.0, high=1.0)
    steps = _integer(params, "steps", low=1, high=MAX_STEPS)
    # Same arithmetic as diffusers' get_timesteps: zero denoising steps cannot run.
    if int(steps * strength) < 1:
        raise JobError("bad_params", f"steps*strength must give at least one step (steps={steps}, strength={strength})")
    guidance_scale = _number(params, "guidance_scale", low=0.0, high=MAX_GUIDANCE)
    seed = _integer(params, "seed", low=0, high=MAX_SEED)
    started = time.perf_counter()
    decoded = _decode_image(payload)
    image = _computable(decoded)
    return Job(
        id=job_id,
        prompt=prompt,
        negative_prompt=negative_prompt,
        strength=strength,
        steps=steps,
        guidance_scale=guidance_scale,
        seed=seed,
        image=image,
        decode_s=time.perf_counter() - started,
        size=decoded.size,
    )
