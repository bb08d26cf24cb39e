"""What the family tests share around toy pipelines: loading them as the runner does, recording
their calls and transformer inputs, jobs parsed against a family's rules, one batch served."""

import io

import torch
from PIL import Image

from img2img_runner.jobs import parse_job
from img2img_runner.models import load_pipeline
from img2img_runner.params import LIMITS
from img2img_runner.protocol import TO_RUNNER, parse
from tests.helpers import job_header, on_each_call, png_bytes, run_one_batch, sample_image

# Off the 16-pixel grid and not square: computed at 96x64, answered at 100x70.
INPUT = sample_image(0, (100, 70))
OTHER = sample_image(1, (100, 70))
COMPUTE = (96, 64)


def saved_and_loaded(pipe, folder, name: str = "dit"):
    """The pipeline saved as a diffusers folder and loaded back the way the runner loads a model."""
    pipe.save_pretrained(folder)
    torch.set_num_threads(1)  # toy tensors: threads cost more than they save on shared cores
    return load_pipeline(name, source=str(folder), device=torch.device("cpu"))


def instrument(pipe, record):
    """Record each pipeline call's kwargs (pipe.calls) and record(args, kwargs) of each transformer
    forward (pipe.forwards); the tests clear both."""
    pipe.calls, pipe.forwards = [], []
    # Copies of the lists: ZImage*Pipeline writes the chat-templated prompts into the caller's.
    on_each_call(pipe, lambda kwargs: pipe.calls.append({key: list(value) if isinstance(value, list) else value for key, value in kwargs.items()}))
    forward = pipe.transformer.forward

    def recorded(*args, **kwargs):
        pipe.forwards.append(record(args, kwargs))
        return forward(*args, **kwargs)

    pipe.transformer.forward = recorded  # an instance attribute: the class stays stock
    return pipe


def make_job(family, job_id: str, image, **params):
    """A Job parsed by jobs.parse_job against the family's rules: the fields that do not apply at
    their neutral values, then params (a PIL image)."""
    values = {"prompt": "a cat", "negative_prompt": None, "strength": 0.5, "steps": 4, "guidance_scale": family.rules.guidance_scale.default, "seed": 1, "preview_every": 0}
    values.update({key: value for key, value in LIMITS.not_applied.items() if key not in family.rules.applies})
    values.update(params)
    header = job_header(job_id)
    header["params"] = values
    return parse_job(parse(header, TO_RUNNER), png_bytes(image), "dit", family)


def serve(pipe, jobs) -> dict:
    """Run the jobs as one batch through Runner._run_batch; each job's frames, as (header, payload)."""
    frames = {job.id: [] for job in jobs}
    for header, payload in run_one_batch(pipe, jobs, max_batch=len(jobs)):
        frames[header["id"]].append((header, payload))
    return frames


def result(frames):
    header, payload = frames[-1]
    assert header["type"] == "result", header
    return header, payload


def answered_at_input_size(frames, jobs) -> list[bytes]:
    """Each job's result: at the input's size (100x70), from one batch of all the jobs."""
    payloads = []
    for job in jobs:
        header, payload = result(frames[job.id])
        assert (header["width"], header["height"], header["batch_size"]) == (*INPUT.size, len(jobs))
        assert Image.open(io.BytesIO(payload)).size == INPUT.size
        payloads.append(payload)
    return payloads


def pixels(payload: bytes) -> list[int]:
    return list(Image.open(io.BytesIO(payload)).tobytes())

