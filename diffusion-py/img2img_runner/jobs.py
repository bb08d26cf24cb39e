"""Turning a job message into a validated Job (params within the limits, image decoded)."""

import io
import math
import time
from dataclasses import dataclass, field

from PIL import Image

from .families import FAMILIES, Family
from .params import LIMITS, ImageLimits, Range
from .protocol import JobFrame


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
    # 0 high, 1 normal, 2 low: lower runs first.
    rank: int = 1
    # Jobs with equal keys can share one pipeline call (the family's key).
    batch_key: tuple = ()
    # The denoising steps the call runs (the family's rule).
    denoising_steps: int = 0
    # A preview frame every this many denoising steps; 0: none.
    preview_every: int = 0
    # What the result frame tells the user about the run (the family's prompt_notes).
    notes: list[str] = field(default_factory=list)

    @property
    def cost(self) -> int:
        """Pixel-steps: what one denoising pass over this job costs, near enough (a step's work grows with the pixels)."""
        return self.image.width * self.image.height * max(1, self.denoising_steps)


def _number(key: str, value: float, limits: Range) -> float:
    # float(): the limits print as 0.0 and 1.0 in messages, as they always have.
    low, high = float(limits.minimum), float(limits.maximum)
    above_low = low < value if limits.exclusive_minimum else low <= value
    if not (above_low and value <= high):
        interval = f"{'(' if limits.exclusive_minimum else '['}{low}, {high}]"
        raise JobError("bad_params", f"params.{key} must be in {interval}, got {value!r}")
    return float(value)


def _integer(key: str, value: int, limits: Range) -> int:
    if not limits.minimum <= value <= limits.maximum:
        raise JobError("bad_params", f"params.{key} must be an integer in [{limits.minimum}, {limits.maximum}], got {value!r}")
    return value


def compute_size(width: int, height: int, limits: ImageLimits) -> tuple[int, int]:
    """The size computed at: a side under compute_min_side is enlarged to it, on the 8-pixel
    grid, keeping the aspect (common/params.ts computeSize does the same arithmetic)."""
    if min(width, height) >= limits.compute_min_side:
        return width, height
    scale = limits.compute_min_side / min(width, height)
    return math.ceil(width * scale / 8) * 8, math.ceil(height * scale / 8) * 8


def _check_size(width: int, height: int, limits: ImageLimits) -> tuple[int, int]:
    """The size to compute at, within the model's limits (the API checks the same before accepting)."""
    if max(width, height) > limits.max_side or width * height > limits.max_pixels:
        raise JobError(
            "bad_image", f"image is {width}x{height}; the limits are {limits.max_side} pixels a side and {limits.max_pixels} in all"
        )
    size = compute_size(width, height, limits)
    if max(size) > limits.max_side or size[0] * size[1] > limits.max_pixels:
        raise JobError(
            "bad_image", f"image is {width}x{height}; too narrow to enlarge to {limits.compute_min_side} pixels ({size[0]}x{size[1]})"
        )
    return size


def _decode_image(payload: bytes, limits: ImageLimits) -> Image.Image:
    try:
        with Image.open(io.BytesIO(payload)) as image:
            # From the header, before any pixel is decoded.
            _check_size(image.width, image.height, limits)
            rgb = image.convert("RGB")
    except JobError:
        raise
    except Exception as exc:  # PIL raises many types (UnidentifiedImageError, OSError, bomb errors...)
        # Type name only: PIL messages embed object addresses.
        raise JobError("bad_image", f"payload is not a decodable image ({type(exc).__name__})") from exc
    return rgb


def _computable(image: Image.Image, limits: ImageLimits, family: Family) -> Image.Image:
    """The image at the size its family computes: small images enlarged to compute_min_side (on
    the 8-pixel grid), then each side on the family's grid; the result is resized back."""
    width, height = _check_size(image.width, image.height, limits)
    size = family.compute_size(width, height)
    if max(size) > limits.max_side or size[0] * size[1] > limits.max_pixels:
        raise JobError("bad_image", f"image is {image.width}x{image.height}; on the model's {family.rules.multiple}-pixel grid it is {size[0]}x{size[1]}, over the limits")
    return image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)


PRIORITY_RANKS = {"high": 0, "normal": 1, "low": 2}


def _applies(key: str, value, family: Family) -> None:
    """A field the family does not take must carry the value the API records for it (not_applied)."""
    if key not in family.rules.applies and value != LIMITS.not_applied[key]:
        raise JobError("bad_params", f"params.{key} does not apply to models of the {family.name} family (got {value!r})")


def parse_job(message: JobFrame, payload: bytes, model: str | None = None, family: Family | None = None) -> Job:
    """The message's types are already checked (protocol.parse); here its values and its image,
    against the rules of the model's family (None: Stable Diffusion's) and the image limits of
    `model` (the general ones when None)."""
    family = family or FAMILIES["sd"]
    if message.priority not in PRIORITY_RANKS:
        raise JobError("bad_params", f"priority must be one of high, normal, low, got {message.priority!r}")
    params = message.params
    rules = family.rules
    for key in ("negative_prompt", "strength", "guidance_scale", "preview_every"):
        _applies(key, getattr(params, key), family)
    strength = _number("strength", params.strength, rules.strength)
    steps = _integer("steps", params.steps, rules.steps)
    denoising = rules.denoising_steps(steps, strength)
    if denoising < LIMITS.min_denoising_steps:
        raise JobError("bad_params", f"steps*strength must give at least one step (steps={steps}, strength={strength})")
    guidance_scale = _number("guidance_scale", params.guidance_scale, rules.guidance_scale)
    seed = _integer("seed", params.seed, LIMITS.seed)
    preview_every = _integer("preview_every", params.preview_every, LIMITS.preview_every)
    limits = LIMITS.image_for(model)
    started = time.perf_counter()
    decoded = _decode_image(payload, limits)
    image = _computable(decoded, limits, family)
    job = Job(
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
        rank=PRIORITY_RANKS[message.priority],
        denoising_steps=denoising,
        preview_every=preview_every,
    )
    job.batch_key = family.batch_key(job)
    return job
