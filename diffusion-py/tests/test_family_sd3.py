"""The SD3 family on toy pipelines of the real diffusers classes, with and without the T5 encoder."""

import json
import shutil

import pytest
import torch

from img2img_runner.families import FAMILIES, family_of
from img2img_runner.models import load_pipeline
from img2img_runner.runner import warm_up
from tests.families import COMPUTE, INPUT, OTHER, answered_at_input_size, instrument, make_job, result, saved_and_loaded, serve
from tests.tiny_dit import build_sd3, hidden_states_shape

SD3 = FAMILIES["sd3"]
# The transformer's input: 4 latent channels at 1/8 of the pixels (it patches them 2x2 itself).
LATENTS = (4, COMPUTE[1] // 8, COMPUTE[0] // 8)


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sd3")
    pipes = {"t5": saved_and_loaded(build_sd3(), folder / "t5")}
    # Saved without T5: model_index.json has text_encoder_3 and tokenizer_3 null.
    pipes["no-t5"] = saved_and_loaded(build_sd3(t5=False), folder / "no-t5")
    # Downloaded without T5's folders: model_index.json lists them, the folders are missing.
    shutil.copytree(folder / "t5", folder / "t5-left-out")
    for name in ("text_encoder_3", "tokenizer_3"):
        shutil.rmtree(folder / "t5-left-out" / name)
    pipes["t5-left-out"] = load_pipeline("dit", source=str(folder / "t5-left-out"), device=torch.device("cpu"))
    index = json.loads((folder / "no-t5" / "model_index.json").read_text())
    assert index["text_encoder_3"] == [None, None]
    return {name: instrument(pipe, hidden_states_shape) for name, pipe in pipes.items()}


@pytest.fixture
def pipe_of(pipes):
    def get(name):
        pipe = pipes[name]
        pipe.calls.clear()
        pipe.forwards.clear()
        return pipe

    return get


def output(pipe, **params) -> bytes:
    job = make_job(SD3, "one", INPUT, **params)
    return result(serve(pipe, [job])["one"])[1]


def test_family_of_is_sd3_with_or_without_t5(pipes):
    assert pipes["t5"].text_encoder_3 is not None
    for name in ("no-t5", "t5-left-out"):
        assert pipes[name].text_encoder_3 is None and pipes[name].tokenizer_3 is None
    for pipe in pipes.values():
        assert family_of(pipe) is SD3
        warm_up(pipe, torch.device("cpu"))


@pytest.mark.parametrize("name", ["t5", "no-t5", "t5-left-out"])
def test_a_batch_of_two_is_one_call_at_the_input_size_on_the_grid(pipe_of, name):
    pipe = pipe_of(name)
    jobs = [make_job(SD3, "a", INPUT, seed=1), make_job(SD3, "b", OTHER, seed=2, prompt="a dog", negative_prompt="blurry")]
    assert jobs[0].batch_key == jobs[1].batch_key
    frames = serve(pipe, jobs)
    payloads = answered_at_input_size(frames, jobs)
    assert payloads[0] != payloads[1]
    # One call at the grid size (without height and width SD3 computes at its default sample size).
    (call,) = pipe.calls
    assert (call["width"], call["height"]) == COMPUTE
    assert call["negative_prompt"] == ["", "blurry"]
    assert call["max_sequence_length"] == SD3.rules.prompt_tokens
    # Classifier-free guidance: each step runs the unconditional and the conditional rows.
    assert set(pipe.forwards) == {(4, *LATENTS)}


CHANGES = {"prompt": "a dog", "negative_prompt": "blurry", "strength": 0.9, "steps": 6, "guidance_scale": 3.0, "seed": 2}


@pytest.mark.parametrize("field", list(CHANGES))
def test_each_parameter_changes_the_output(pipe_of, field):
    pipe = pipe_of("t5")
    assert output(pipe) != output(pipe, **{field: CHANGES[field]})


def test_guidance_of_one_or_less_turns_cfg_off(pipe_of):
    pipe = pipe_of("t5")
    # One transformer row a step, and the negative prompt is then unused.
    assert output(pipe, guidance_scale=1.0) == output(pipe, guidance_scale=1.0, negative_prompt="blurry")
    assert {shape[0] for shape in pipe.forwards} == {1}


def test_every_field_applies():
    assert SD3.rules.applies == {"negative_prompt", "strength", "guidance_scale"}
    make_job(SD3, "all", INPUT, negative_prompt="blurry", strength=0.3, guidance_scale=12.0)


# 10 steps at 0.8: diffusers' get_timesteps runs 10 - int(10 - 8.0) = 8, where the float
# rounding of 10 - int(10 * (1 - 0.8)) would say 9.
@pytest.mark.parametrize(("steps", "strength"), [(4, 0.5), (7, 0.6), (3, 1.0), (10, 0.8)])
def test_progress_total_is_the_rules_denoising_steps(pipe_of, steps, strength):
    pipe = pipe_of("no-t5")
    job = make_job(SD3, "p", INPUT, steps=steps, strength=strength)
    progress = [header for header, _ in serve(pipe, [job])["p"] if header["type"] == "progress"]
    total = SD3.rules.denoising_steps(steps, strength)
    assert job.denoising_steps == total
    assert [(header["step"], header["total"]) for header in progress] == [(step, total) for step in range(1, total + 1)]
    assert len(pipe.forwards) == total
