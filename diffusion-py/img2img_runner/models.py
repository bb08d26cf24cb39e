"""Which model to load, on which device, and loading it (never from the network)."""

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .params import LIMITS
from .sources import ARCH_FAMILIES, ARCH_SOURCES
from .tuning import TUNINGS

log = logging.getLogger("img2img_runner")

TINY = "tiny"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# A Hugging Face repo id (org/name), loaded from the local cache only.
REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    source: str | None  # local diffusers folder or HF repo id in the offline cache; None for built-ins
    tuning: str | None = None  # `tuning=NAME`: the GPU tuning (tuning.TUNINGS); None: the default
    family: str | None = None  # `family=NAME`: what the loaded pipeline must be (common/params.json families)
    dtype: str | None = None  # `dtype=NAME`: the weights' precision on a GPU; None: the family's


def parse_model_names(path: str) -> list[ModelEntry]:
    """Read model_names.txt: one `name` or `name source` per line, `#` starts a comment.

    Trailing `key=value` fields: `tuning=NAME` picks the model's GPU tuning (tuning.TUNINGS,
    e.g. the opt-in `fast`); `family=NAME` is the family the model must be of; `dtype=NAME` its
    precision on a GPU; `verify=POLICY` is the service's verification policy (common/models.ts
    checks it), which the runner skips.
    """
    entries: list[ModelEntry] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            where = f"{path}:{number}: {raw.rstrip()!r}"
            fields = [field for field in line.split() if not field.startswith("verify=")]
            keyed = {}
            for key, allowed in (("tuning", TUNINGS), ("family", LIMITS.families), ("dtype", DTYPES)):
                found = [field.removeprefix(f"{key}=") for field in fields if field.startswith(f"{key}=")]
                fields = [field for field in fields if not field.startswith(f"{key}=")]
                if len(found) > 1 or (found and found[0] not in allowed):
                    raise ValueError(f"{where}: {key} must be one of {', '.join(allowed)}, given once")
                keyed[key] = found[0] if found else None
            if len(fields) > 2:
                raise ValueError(f"{where}: expected `name` or `name source`, got {len(fields)} fields")
            name = fields[0]
            if not NAME_PATTERN.match(name):
                raise ValueError(f"{where}: invalid model name {name!r} (must match {NAME_PATTERN.pattern})")
            if name in seen:
                raise ValueError(f"{where}: model name {name!r} is listed twice")
            seen.add(name)
            entries.append(ModelEntry(name=name, source=fields[1] if len(fields) == 2 else None, **keyed))
    return entries


def pick_device(requested: str | None = None) -> torch.device:
    choice = requested or ("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for but torch.cuda.is_available() is False")
        # An explicit index so the ready frame says "cuda:0", not "cuda".
        return torch.device("cuda", torch.cuda.current_device())
    if choice == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {choice!r} (cpu or cuda)")


def pick_dtype(device: torch.device, requested: str | None = None, family: str | None = None) -> torch.dtype:
    if requested is None:
        # Half precision halves GPU memory and time (in the family's own: bf16 for models trained
        # in it, whose T5 or Qwen text encoders overflow in fp16); CPU kernels want float32.
        return DTYPES[LIMITS.families[family or "sd"].dtype] if device.type == "cuda" else torch.float32
    if requested not in DTYPES:
        raise ValueError(f"unknown dtype {requested!r} (one of {', '.join(DTYPES)})")
    return DTYPES[requested]


# SD3's T5 encoder, which a model may leave out (its prompts are then encoded by the two CLIPs alone).
DROPPABLE_COMPONENTS = ("text_encoder_3", "tokenizer_3")


def _dropped_components(source: str) -> dict:
    """None for the droppable components a local folder lacks (null in its model_index.json, or no
    subfolder): diffusers fills in None only for a pipeline's _optional_components, which SD3's T5 is not."""
    folder = Path(source)
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # a repo id, or no diffusers folder: from_pretrained says what is wrong
    listed = [name for name in DROPPABLE_COMPONENTS if name in index]
    if any(not isinstance(index[name], list) or index[name][0] is None or not (folder / name).is_dir() for name in listed):
        return dict.fromkeys(listed)
    return {}


def _from_source(source: str, dtype: torch.dtype):
    # Imported here: diffusers' auto classes pull in many pipelines, tiny needs none of them.
    from diffusers import AutoPipelineForImage2Image

    # A local diffusers folder, or a repo id that must already be in the HF cache
    # (local_files_only: a missing model fails here instead of downloading).
    folder = Path(source).expanduser()
    if not folder.exists() and not REPO_ID.fullmatch(source):
        # Else diffusers takes it for a repo id and talks about the hub.
        raise FileNotFoundError(f"model folder {folder.resolve()} does not exist")
    if folder.is_dir() and not (folder / "model_index.json").exists():
        raise FileNotFoundError(f"{folder.resolve()} has no model_index.json: it is not a diffusers pipeline folder")
    return AutoPipelineForImage2Image.from_pretrained(
        source,
        dtype=dtype,
        local_files_only=True,
        safety_checker=None,
        requires_safety_checker=False,
        **_dropped_components(source),
    )


def load_pipeline(name: str, source: str | None = None, device: torch.device | None = None, dtype: torch.dtype | None = None):
    """Return an img2img pipeline ready to serve: on device, SDPA attention, no progress bars."""
    started = time.perf_counter()
    # Imported here and timed: the log gives diffusers' import its own figure.
    from diffusers.models.attention_processor import AttnProcessor2_0

    imported = time.perf_counter()
    device = device or pick_device()
    dtype = dtype or pick_dtype(device)
    if name == TINY and source is None:
        # tiny and arch import transformers and diffusers' pipelines (seconds): only for their own model.
        from .tiny import build_tiny_pipeline

        if device.type == "cpu":
            # Toy-sized tensors: OpenMP fork/join costs more than it saves, a lot
            # more when the cores are shared with other processes.
            torch.set_num_threads(1)
        pipe = build_tiny_pipeline()
    elif source is None:
        raise ValueError(f"model {name!r} has no source: give a local diffusers folder or an HF repo id")
    elif source in ARCH_SOURCES:
        # Benchmark models: real architecture and size, random weights (images are noise).
        from .arch import build_arch_pipeline  # see tiny above

        pipe = build_arch_pipeline(source=source, device=device, dtype=dtype)
    else:
        pipe = _from_source(source=source, dtype=dtype)
    # Cast only when needed: diffusers warns on every dtype cast.
    pipe = pipe.to(device=device) if pipe.dtype == dtype else pipe.to(device=device, dtype=dtype)
    if hasattr(pipe, "unet"):
        # Stable Diffusion family: plain PyTorch SDPA attention in the UNet and VAE.
        for component in (pipe.unet, pipe.vae):
            component.set_attn_processor(AttnProcessor2_0())
    # Decode one image at a time: a batch's VAE decode is the memory peak, and it
    # keeps each image's pixels independent of its batch-mates.
    pipe.vae.enable_slicing()
    pipe.set_progress_bar_config(disable=True)
    # Where it came from: the fast tuning looks for the model's tiny VAE there.
    pipe._img2img_source = source
    # Start-up cost, part by part (spawn to ready).
    log.info("pipeline loaded in %.1fs (diffusers import %.1fs)", time.perf_counter() - started, imported - started)
    return pipe


def family_of_source(name: str, source: str | None) -> str | None:
    """The family a model's source says it is of before it loads (for its dtype): the folder's
    model_index.json pipeline class, or the built-in model's; None when it cannot tell."""
    if source is None:
        return LIMITS.model_defaults.get(name, {}).get("family")
    if source in ARCH_FAMILIES:
        return ARCH_FAMILIES[source]
    try:
        with open(Path(source) / "model_index.json", encoding="utf-8") as handle:
            pipeline = json.load(handle).get("_class_name")
    except (OSError, ValueError):
        return None
    return next((family for family, rules in LIMITS.families.items() if pipeline in rules.pipelines), None)
