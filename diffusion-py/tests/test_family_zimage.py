"""The Z-Image family on a toy pipeline of the real diffusers classes."""

from functools import partial

import pytest
import torch
from diffusers import ZImageImg2ImgPipeline, ZImagePipeline

from img2img_runner.families import FAMILIES, family_of
from img2img_runner.runner import warm_up
from tests.families import COMPUTE, INPUT, OTHER, answered_at_input_size, instrument, pixels, result, saved_and_loaded, serve
from tests.families import make_job as family_job
from tests.tiny_qwen_zimage import build_z_image, rows_and_latents

# Jobs of one full-strength step pair, as these toy pipelines run fastest.
make_job = partial(family_job, strength=1.0, steps=2)

# One row's latents as the transformer gets them: 16 channels, 1 frame, the 8x VAE's height and width.
LATENTS = (16, 1, COMPUTE[1] // 8, COMPUTE[0] // 8)
ZIMAGE = FAMILIES["z-image"]


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    # Saved as Tongyi-MAI/Z-Image-Turbo's folder is (ZImagePipeline): the runner loads it for img2img.
    built = build_z_image()
    loaded = saved_and_loaded(ZImagePipeline(**built.components), tmp_path_factory.mktemp("z-image"))
    return instrument(loaded, rows_and_latents)


def output(pipe, **params) -> bytes:
    pipe.calls.clear()
    pipe.forwards.clear()
    job = make_job(ZIMAGE, "one", INPUT, **params)
    return result(serve(pipe, [job])["one"])[1]


def test_family_of_z_image_and_warm_up(pipe):
    assert isinstance(pipe, ZImageImg2ImgPipeline)
    assert family_of(pipe) is ZIMAGE
    warm_up(pipe, torch.device("cpu"))


def test_batch_of_two_computes_on_the_grid_and_answers_at_the_input_size(pipe):
    pipe.calls.clear()
    pipe.forwards.clear()
    params = {"steps": 5, "strength": 0.8, "guidance_scale": 3.0}
    jobs = [make_job(ZIMAGE, "a", INPUT, seed=1, **params), make_job(ZIMAGE, "b", OTHER, seed=2, prompt="a long prompt, of a dog", negative_prompt="blurry", **params)]
    assert jobs[0].batch_key == jobs[1].batch_key and jobs[0].image.size == COMPUTE
    frames = serve(pipe, jobs)
    answered_at_input_size(frames, jobs)
    for job in jobs:
        # 4 denoising steps as diffusers counts them (5 - int(5 - 5 * 0.8)), numbered 1..4, as the rules say.
        progress = [h for h, _ in frames[job.id] if h["type"] == "progress"]
        assert [h["step"] for h in progress] == [1, 2, 3, 4] and {h["total"] for h in progress} == {job.denoising_steps} == {4}
    (call,) = pipe.calls
    assert (call["width"], call["height"]) == COMPUTE
    assert call["guidance_scale"] == 2.0 and call["negative_prompt"] == ["", "blurry"]
    assert call["max_sequence_length"] == 512 and call["strength"] == 0.8 and call["num_inference_steps"] == 5
    # One transformer call a step, on both rows and their unconditional ones, at 96x64 (not 1024x1024).
    assert pipe.forwards == [(4, LATENTS)] * 4
    # A job's output does not depend on its batch-mate (prompts of other lengths, a negative prompt).
    assert pixels(result(frames["a"])[1]) == pytest.approx(pixels(output(pipe, seed=1, **params)), abs=2)


def test_guidance_above_one_is_cfg_and_one_or_less_is_off(pipe):
    plain = output(pipe, guidance_scale=1.0, negative_prompt="blurry")
    assert pipe.calls[0]["guidance_scale"] == 0 and pipe.calls[0]["negative_prompt"] is None
    assert pipe.forwards == [(1, LATENTS)] * 2
    # The negative prompt only acts through CFG: without it, it changes nothing.
    assert output(pipe, guidance_scale=1.0) == plain
    assert output(pipe, guidance_scale=0.5) == plain
    guided = output(pipe, guidance_scale=3.0, negative_prompt="blurry")
    # Z-Image writes CFG as cond + g * (cond - uncond): the service's 3 is the pipeline's 2.
    assert pipe.calls[0]["guidance_scale"] == 2.0 and pipe.calls[0]["negative_prompt"] == ["blurry"]
    # CFG: the conditional and unconditional rows in one transformer call a step.
    assert pipe.forwards == [(2, LATENTS)] * 2 and guided != plain


def test_each_parameter_changes_the_output(pipe):
    base = {"prompt": "a cat", "negative_prompt": None, "strength": 1.0, "steps": 2, "guidance_scale": 3.0, "seed": 1}
    reference = output(pipe, **base)
    assert output(pipe, **base) == reference  # deterministic
    changes = {"prompt": "a dog", "negative_prompt": "blurry", "strength": 0.5, "steps": 3, "guidance_scale": 2.0, "seed": 2}
    for key, value in changes.items():
        assert output(pipe, **{**base, key: value}) != reference, key
