"""Job parameter limits and defaults: common/params.json, the file the API reads too.

IMG2IMG_PARAMS_FILE names another file (a deployment that keeps diffusion-py/
apart from the repository's common/ folder).
"""

import json
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "common" / "params.json"


@dataclass(frozen=True)
class Range:
    minimum: float
    maximum: float
    default: float | None = None
    exclusive_minimum: bool = False


@dataclass(frozen=True)
class ImageLimits:
    """Sides (multiples of 8) the runner computes; smaller than compute_min_side is enlarged first."""

    min_side: int
    compute_min_side: int
    max_side: int
    max_pixels: int


@dataclass(frozen=True)
class Limits:
    strength: Range
    steps: Range
    guidance_scale: Range
    seed: Range
    # floor(steps * strength) denoising steps run; fewer than this cannot.
    min_denoising_steps: int
    image: ImageLimits
    # Per model, values that replace the general ones (tiny: fewer steps, smaller images).
    # Default steps are the API's business (every job frame carries all its parameters);
    # the image limits are the runner's too.
    model_defaults: dict[str, dict]

    def image_for(self, model: str | None) -> ImageLimits:
        own = self.model_defaults.get(model, {}).get("image", {}) if model else {}
        return replace(self.image, **own)


def params_path() -> Path:
    return Path(os.environ.get("IMG2IMG_PARAMS_FILE") or DEFAULT_PATH)


def load_limits(path: str | Path | None = None) -> Limits:
    path = Path(path) if path is not None else params_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        ranges = {
            name: Range(
                minimum=data[name]["minimum"],
                maximum=data[name]["maximum"],
                default=data[name].get("default"),
                exclusive_minimum=data[name].get("exclusive_minimum", False),
            )
            for name in ("strength", "steps", "guidance_scale", "seed")
        }
        image = ImageLimits(**{field.name: int(data["image"][field.name]) for field in fields(ImageLimits)})
        for entry in data.get("model_defaults", {}).values():
            replace(image, **entry.get("image", {}))  # an unknown key fails here, at start
        return Limits(
            **ranges,
            min_denoising_steps=int(data["denoising_steps"]["minimum"]),
            image=image,
            model_defaults=data.get("model_defaults", {}),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RuntimeError(f"cannot read parameter limits from {path}: {type(exc).__name__}: {exc}") from exc
