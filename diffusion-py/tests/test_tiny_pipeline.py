import time

import pytest
import torch

from img2img_runner.models import load_pipeline
from img2img_runner.tiny import build_tiny_pipeline
from tests.helpers import png_bytes, sample_image


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline(name="tiny", device=torch.device("cpu"))


def run(pipe, images, seeds, prompts=None):
    with torch.inference_mode():
        output = pipe(
            prompt=prompts or ["a cat"] * len(images),
            negative_prompt=[""] * len(images),
            image=images,
            strength=0.6,
            num_inference_steps=10,
            guidance_scale=7.5,
            generator=[torch.Generator().manual_seed(seed) for seed in seeds],
            output_type="pil",
        )
    return [png_bytes(image) for image in output.images], output.images


def test_architecture_is_stable_diffusion_at_toy_size(pipe):
    assert type(pipe).__name__ == "StableDiffusionImg2ImgPipeline"
    assert pipe.vae_scale_factor == 8
    assert pipe.safety_checker is None
    assert pipe.tokenizer("chat 猫 ☕").input_ids[0] == pipe.tokenizer.bos_token_id


def test_build_is_quick():
    started = time.perf_counter()
    build_tiny_pipeline()
    assert time.perf_counter() - started < 2.0


def test_64x64_in_gives_64x64_out(pipe):
    _, images = run(pipe, images=[sample_image(0)], seeds=[1])
    assert images[0].size == (64, 64)
    assert images[0].mode == "RGB"


def test_same_seed_gives_identical_bytes(pipe):
    first, _ = run(pipe, images=[sample_image(0)], seeds=[1])
    second, _ = run(pipe, images=[sample_image(0)], seeds=[1])
    assert first == second


def test_different_seeds_give_different_bytes(pipe):
    first, _ = run(pipe, images=[sample_image(0)], seeds=[1])
    second, _ = run(pipe, images=[sample_image(0)], seeds=[2])
    assert first != second


def test_batched_job_equals_the_job_alone(pipe):
    alone, _ = run(pipe, images=[sample_image(0)], seeds=[1])
    batched, _ = run(pipe, images=[sample_image(5), sample_image(0), sample_image(6)], seeds=[9, 1, 3], prompts=["x", "a cat", "a dog"])
    assert batched[1] == alone[0]
    assert batched[0] != alone[0]
