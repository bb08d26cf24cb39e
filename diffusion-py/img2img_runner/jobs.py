"""Turning a job message into a validated Job (params within the limits, image decoded)."""

import io
import math
import time
from dataclasses import dataclass

from PIL import Image

from .params import Range, load_limits
from .protocol import JobFrame

MIN_SIDE = 64  # smaller images leave the UNet less than one latent cell per level
MAX_SIDE = 4096
# Read once at start: the same file (common/params.json) sets the API's limits.
LIMITS = load_limits()


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
    # The input image as it came: the stand-in answers with it.
    payload: bytes
    # The size the result is answered in: the input's, even when `image` was enlarged to compute.
    size: tuple[int, int] = (0, 0)

    @property
    def batch_key(self) -> tuple:
        """Jobs with equal keys can share one pipeline call."""
        return (self.image.width, self.image.height, self.steps, self.strength, self.guidance_scale)


def _number(key: str, value: float, limits: Range) -> float:
    # float(): the limits print as 0.0 and 1.0 in messages, as they always have.
    low, high = float(limits.minimum), float(limits.maximum)
    if not low <= value <= high:
        raise JobError("bad_params", f"params.{key} must be in [{low}, {high}], got {value!r}")
    return float(value)


def _integer(key: str, value: int, limits: Range) -> int:
    if not limits.minimum <= value <= limits.maximum:
        raise JobError("bad_params", f"params.{key} must be an integer in [{limits.minimum}, {limits.maximum}], got {value!r}")
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


def parse_job(message: JobFrame, payload: bytes) -> Job:
    """The message's types are already checked (protocol.parse); here its values and its image."""
    params = message.params
    strength = _number("strength", params.strength, LIMITS.strength)
    steps = _integer("steps", params.steps, LIMITS.steps)
    # Same arithmetic as diffusers' get_timesteps: zero denoising steps cannot run.
    if int(steps * strength) < 1:
        raise JobError("bad_params", f"steps*strength must give at least one step (steps={steps}, strength={strength})")
    guidance_scale = _number("guidance_scale", params.guidance_scale, LIMITS.guidance_scale)
    seed = _integer("seed", params.seed, LIMITS.seed)
    started = time.perf_counter()
    decoded = _decode_image(payload)
    image = _computable(decoded)
    return Job(
        id=message.id,
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        strength=strength,
        steps=steps,
        guidance_scale=guidance_scale,
        seed=seed,
        image=image,
        decode_s=time.perf_counter() - started,
        size=decoded.size,
        payload=payload,
    )
