"""The FLUX.1 families (dev, schnell, Kontext) on toy pipelines of the real diffusers classes."""


import pytest
import torch
from diffusers import FluxImg2ImgPipeline

from img2img_runner.families import FAMILIES, family_of
from img2img_runner.jobs import JobError
from img2img_runner.runner import warm_up
from tests.families import COMPUTE, INPUT, OTHER, answered_at_input_size, instrument, make_job, result, saved_and_loaded, serve
from tests.tiny_dit import build_flux, hidden_states_shape

# Flux packs 2x2 latents of the 8x VAE: one token per 16x16 pixels.
TOKENS = (COMPUTE[0] // 16) * (COMPUTE[1] // 16)
KINDS = {"flux": "dev", "flux-schnell": "schnell", "flux-kontext": "kontext"}


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flux")
    return {family: instrument(saved_and_loaded(build_flux(kind), folder / kind), hidden_states_shape) for family, kind in KINDS.items()}


@pytest.fixture
def pipe_of(pipes):
    def get(family):
        pipe = pipes[family]
        pipe.calls.clear()
        pipe.forwards.clear()
        return pipe

    return get


def output(pipe, family, **params) -> bytes:
    job = make_job(family, "one", INPUT, **params)
    return result(serve(pipe, [job])["one"])[1]


def test_family_of_tells_dev_schnell_and_kontext_apart(pipes):
    assert {name: family_of(pipe).name for name, pipe in pipes.items()} == {name: name for name in KINDS}
    assert pipes["flux"].transformer.config.guidance_embeds and not pipes["flux-schnell"].transformer.config.guidance_embeds
    # schnell's rules name no class: the same FluxImg2ImgPipeline as dev.
    assert isinstance(pipes["flux-schnell"], FluxImg2ImgPipeline) and isinstance(pipes["flux"], FluxImg2ImgPipeline)
    for pipe in pipes.values():
        warm_up(pipe, torch.device("cpu"))


@pytest.mark.parametrize("name", list(KINDS))
def test_a_batch_of_two_is_one_call_at_the_input_size_on_the_grid(pipe_of, name):
    pipe, family = pipe_of(name), FAMILIES[name]
    jobs = [make_job(family, "a", INPUT, seed=1), make_job(family, "b", OTHER, seed=2, prompt="a dog")]
    assert jobs[0].batch_key == jobs[1].batch_key
    frames = serve(pipe, jobs)
    payloads = answered_at_input_size(frames, jobs)
    assert payloads[0] != payloads[1]
    # One call, at the grid size (not 1024x1024): its arguments and the transformer's tokens say so.
    (call,) = pipe.calls
    assert (call["width"], call["height"]) == COMPUTE
    assert call["max_sequence_length"] == family.rules.prompt_tokens
    # Kontext's sequence is the noise's tokens, then the reference image's.
    tokens = 2 * TOKENS if name == "flux-kontext" else TOKENS
    assert set(pipe.forwards) == {(2, tokens, pipe.transformer.config.in_channels)}
    # Never a negative prompt nor true CFG; Kontext gets no strength, schnell no guidance.
    assert not {"negative_prompt", "true_cfg_scale"} & set(call)
    assert ("strength" in call) == (name != "flux-kontext")
    assert ("guidance_scale" in call) == (name != "flux-schnell")
    if name == "flux-kontext":
        assert call["max_area"] == COMPUTE[0] * COMPUTE[1] and call["_auto_resize"] is False


CHANGES = {
    "flux": {"prompt": "a dog", "strength": 0.9, "steps": 6, "guidance_scale": 8.0, "seed": 2},
    "flux-schnell": {"prompt": "a dog", "strength": 0.9, "steps": 6, "seed": 2},
    "flux-kontext": {"prompt": "a dog", "steps": 6, "guidance_scale": 8.0, "seed": 2},
}


@pytest.mark.parametrize(("name", "field"), [(name, field) for name, changes in CHANGES.items() for field in changes])
def test_each_applicable_parameter_changes_the_output(pipe_of, name, field):
    pipe, family = pipe_of(name), FAMILIES[name]
    assert field in ("prompt", "steps", "seed") or field in family.rules.applies
    assert output(pipe, family) != output(pipe, family, **{field: CHANGES[name][field]})


REFUSED = [
    ("flux", "negative_prompt", "ugly"),
    ("flux-schnell", "negative_prompt", "ugly"),
    ("flux-schnell", "guidance_scale", 3.5),
    ("flux-kontext", "negative_prompt", "ugly"),
    ("flux-kontext", "strength", 0.6),
]


@pytest.mark.parametrize(("name", "field", "value"), REFUSED)
def test_a_field_that_does_not_apply_is_refused(name, field, value):
    family = FAMILIES[name]
    with pytest.raises(JobError) as error:
        make_job(family, "no", INPUT, **{field: value})
    assert error.value.code == "bad_params"
    assert f"params.{field} does not apply to models of the {name} family" in str(error.value)


# 10 steps at 0.8: diffusers' get_timesteps runs 10 - int(10 - 8.0) = 8, where the float
# rounding of 10 - int(10 * (1 - 0.8)) would say 9.
PROGRESS = [(name, steps, strength) for name in KINDS for steps, strength in ((4, 0.5), (7, 0.6), (3, 1.0), (10, 0.8))]


@pytest.mark.parametrize(("name", "steps", "strength"), PROGRESS)
def test_progress_total_is_the_rules_denoising_steps(pipe_of, name, steps, strength):
    pipe, family = pipe_of(name), FAMILIES[name]
    if "strength" not in family.rules.applies:
        strength = 1  # Kontext: every step runs
    job = make_job(family, "p", INPUT, steps=steps, strength=strength)
    progress = [header for header, _ in serve(pipe, [job])["p"] if header["type"] == "progress"]
    total = family.rules.denoising_steps(steps, strength)
    assert job.denoising_steps == total
    assert [(header["step"], header["total"]) for header in progress] == [(step, total) for step in range(1, total + 1)]
    assert len(pipe.forwards) == total  # one transformer call a step: no CFG
