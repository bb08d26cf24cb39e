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


# What a field that does not apply to a family is sent as (common/params.json, families.not_applied).
OPTIONAL_FIELDS = ("negative_prompt", "strength", "guidance_scale", "preview_every")
STEPS_RULES = ("times_strength", "flow", "all")


@dataclass(frozen=True)
class FamilyRules:
    """One family's entry of common/params.json: its ranges (the general ones with its own in
    their place), the fields that apply, and how its pipeline computes."""

    name: str
    pipelines: tuple[str, ...]
    steps_rule: str
    multiple: int
    prompt_tokens: int
    dtype: str
    applies: frozenset[str]
    strength: Range
    steps: Range
    guidance_scale: Range

    def denoising_steps(self, steps: int, strength: float) -> int:
        """How many denoising steps a call runs: the arithmetic of diffusers' get_timesteps, float for float."""
        if self.steps_rule == "times_strength" and "strength" in self.applies:
            return min(int(steps * strength), steps)
        if self.steps_rule == "flow" and "strength" in self.applies:
            return steps - int(max(steps - min(steps * strength, steps), 0))
        return steps


@dataclass(frozen=True)
class Limits:
    strength: Range
    steps: Range
    guidance_scale: Range
    seed: Range
    preview_every: Range
    # floor(steps * strength) denoising steps run; fewer than this cannot.
    min_denoising_steps: int
    image: ImageLimits
    # Per model, values that replace the general ones (tiny: fewer steps, smaller images).
    # Default steps are the API's business (every job frame carries all its parameters);
    # the image limits are the runner's too.
    model_defaults: dict[str, dict]
    families: dict[str, FamilyRules]
    # The value a job carries for a field that does not apply to its family.
    not_applied: dict[str, object]

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
            for name in ("strength", "steps", "guidance_scale", "seed", "preview_every")
        }
        image = ImageLimits(**{field.name: int(data["image"][field.name]) for field in fields(ImageLimits)})
        for entry in data.get("model_defaults", {}).values():
            replace(image, **entry.get("image", {}))  # an unknown key fails here, at start
        families = {name: _family(name, entry, ranges) for name, entry in data["families"].items() if name not in ("$comment", "not_applied")}
        return Limits(
            **ranges,
            min_denoising_steps=int(data["denoising_steps"]["minimum"]),
            image=image,
            model_defaults=data.get("model_defaults", {}),
            families=families,
            not_applied=data["families"]["not_applied"],
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RuntimeError(f"cannot read parameter limits from {path}: {type(exc).__name__}: {exc}") from exc


def _family(name: str, entry: dict, general: dict[str, Range]) -> FamilyRules:
    if entry["steps_rule"] not in STEPS_RULES:
        raise ValueError(f"family {name}: steps_rule must be one of {', '.join(STEPS_RULES)}")
    own = {key: replace(general[key], **{k: v for k, v in (entry.get(key) or {}).items() if k != "$comment"}) for key in ("strength", "steps", "guidance_scale")}
    return FamilyRules(
        name=name,
        pipelines=tuple(entry["pipelines"]),
        steps_rule=entry["steps_rule"],
        multiple=int(entry["multiple"]),
        prompt_tokens=int(entry["prompt_tokens"]),
        dtype=entry["dtype"],
        applies=frozenset(key for key in OPTIONAL_FIELDS if not (key in entry and entry[key] is None)),
        **own,
    )


# Read once at start: the same file sets the API's limits, so the API refuses at submission
# what the runner would refuse.
LIMITS = load_limits()
