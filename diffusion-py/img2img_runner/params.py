"""Job parameter limits and defaults: common/params.json, the file the API reads too.

IMG2IMG_PARAMS_FILE names another file (a deployment that keeps diffusion-py/
apart from the repository's common/ folder).
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "common" / "params.json"


@dataclass(frozen=True)
class Range:
    minimum: float
    maximum: float
    default: float | None = None


@dataclass(frozen=True)
class Limits:
    strength: Range
    steps: Range
    guidance_scale: Range
    seed: Range
    # Per model, defaults that replace the general ones (tiny: fewer steps). The runner
    # itself needs none (every job frame carries all its parameters); the API fills them in.
    model_defaults: dict[str, dict]


def params_path() -> Path:
    return Path(os.environ.get("IMG2IMG_PARAMS_FILE") or DEFAULT_PATH)


def load_limits(path: str | Path | None = None) -> Limits:
    path = Path(path) if path is not None else params_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        ranges = {
            name: Range(minimum=data[name]["minimum"], maximum=data[name]["maximum"], default=data[name].get("default"))
            for name in ("strength", "steps", "guidance_scale", "seed")
        }
        return Limits(**ranges, model_defaults=data.get("model_defaults", {}))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RuntimeError(f"cannot read parameter limits from {path}: {type(exc).__name__}: {exc}") from exc
