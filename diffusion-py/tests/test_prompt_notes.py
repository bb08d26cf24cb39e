"""Prompts longer than a text encoder reads: the run reads the start, as diffusers does, and the
result's notes say so. The tokens counted are the ones the pipeline encodes: checked against the
pipeline itself (a change in the last counted token changes the image; past the limit none does)."""

import pytest
import torch

from img2img_runner.families import FAMILIES, family_of
from img2img_runner.models import load_pipeline
from tests.families import INPUT, make_job, result, serve
from tests.tiny_dit import build_flux, build_sd3
from tests.tiny_qwen_zimage import build_qwen_image, build_z_image

BUILDERS = {
    "sd": lambda: load_pipeline("tiny", device=torch.device("cpu")),
    "flux": lambda: build_flux("dev"),
    "sd3": build_sd3,
    "qwen-image": lambda: build_qwen_image(processor=False),
    "z-image": build_z_image,
}


def evaluating(pipe):
    """In eval mode, as a loaded model is: built from configs, T5's dropout would be on."""
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    return pipe


@pytest.fixture(scope="module")
def pipes():
    torch.set_num_threads(1)
    return {name: evaluating(build()) for name, build in BUILDERS.items()}


def longest(family, pipe) -> str:
    """The tokenizer attribute with the largest limit: the one that decides what the model reads last."""
    attributes = [attribute for attribute in family.tokenizers if getattr(pipe, attribute, None) is not None]
    return max(attributes, key=lambda attribute: family.prompt_limit(pipe, attribute))


def prompt_at_limit(family, pipe, attribute: str) -> str:
    """"aaa…a", exactly as many tokens as the tokenizer's limit (a binary search on its length)."""
    limit = family.prompt_limit(pipe, attribute)
    low, high = 1, 8 * limit
    while low < high:
        middle = (low + high) // 2
        if family.prompt_length(pipe, attribute, "a" * middle) < limit:
            low = middle + 1
        else:
            high = middle
    assert family.prompt_length(pipe, attribute, "a" * low) == limit
    return "a" * low


def run(family, pipe, prompt: str) -> tuple[list[str], bytes]:
    header, payload = result(serve(pipe, [make_job(family, "one", INPUT, prompt=prompt, steps=2)])["one"])
    return header["notes"], payload


@pytest.mark.parametrize("name", list(BUILDERS))
def test_the_counted_limit_is_where_the_pipeline_stops_reading(pipes, name):
    pipe = pipes[name]
    family = family_of(pipe)
    assert family is FAMILIES[name]
    attribute = longest(family, pipe)
    at_limit = prompt_at_limit(family, pipe, attribute)
    last_changed = at_limit[:-1] + "b"
    assert family.prompt_length(pipe, attribute, last_changed) == family.prompt_length(pipe, attribute, at_limit)

    notes, image = run(family, pipe, at_limit)
    assert [note for note in notes if type(getattr(pipe, attribute)).__name__ in note] == []
    # The last counted token is read: changing it changes the image.
    assert run(family, pipe, last_changed)[1] != image

    # Past the limit (beyond a chat template's closing tokens, which are cut first) nothing is read.
    past = at_limit + "x" * 16
    notes_x, image_x = run(family, pipe, past + "x")
    notes_y, image_y = run(family, pipe, past + "y")
    assert image_x == image_y
    limit = family.prompt_limit(pipe, attribute)
    count = family.prompt_length(pipe, attribute, past + "x")
    expected = f"prompt: {count} tokens for {type(getattr(pipe, attribute)).__name__}, which reads {limit}: the rest was left out"
    assert expected in notes_x and notes_x == notes_y


def test_a_short_prompt_has_no_notes_and_each_clip_encoder_says_what_it_cut(pipes):
    pipe, family = pipes["flux"], FAMILIES["flux"]
    assert run(family, pipe, "a lighthouse at dusk")[0] == []
    # 100 bytes: CLIP (77 tokens) cuts it, T5 (the family's 512) reads it all.
    notes = family.prompt_notes(pipe, make_job(family, "one", INPUT, prompt="b" * 100))
    assert notes == ["prompt: 102 tokens for CLIPTokenizer, which reads 77: the rest was left out"]


def test_a_negative_prompt_is_counted_only_where_guidance_reads_it(pipes):
    pipe, family = pipes["sd"], FAMILIES["sd"]
    long_negative = "blurry " * 20  # 120 bytes, spaces apart: 122 tokens with CLIP's start and end
    guided = family.prompt_notes(pipe, make_job(family, "one", INPUT, negative_prompt=long_negative, guidance_scale=7.5))
    assert guided == ["negative_prompt: 122 tokens for CLIPTokenizer, which reads 77: the rest was left out"]
    assert family.prompt_notes(pipe, make_job(family, "one", INPUT, negative_prompt=long_negative, guidance_scale=1.0)) == []


def test_sd3_without_t5_counts_only_its_clip_encoders(pipes):
    pipe, family = evaluating(build_sd3(t5=False)), FAMILIES["sd3"]
    notes = family.prompt_notes(pipe, make_job(family, "one", INPUT, prompt="c" * 300))
    assert notes == ["prompt: 302 tokens for CLIPTokenizer, which reads 77: the rest was left out"]
