"""Guidance in a call's first steps only (guidance.py, the `fastest` tuning), on CPU with small real pipelines."""

import pytest
import torch

from img2img_runner import guidance
from img2img_runner.jobs import parse_job
from img2img_runner.models import load_pipeline
from img2img_runner.protocol import TO_RUNNER, parse
from img2img_runner.tuning import TUNINGS, Tuning
from img2img_runner.warmup import run_batch
from tests.helpers import call_tiny, job_header, png_bytes, run_one_batch, sample_image

CPU = torch.device("cpu")


@pytest.mark.parametrize("total, share, guided", [(15, 2 / 3, 10), (15, 1 / 3, 5), (15, 1.0, 15), (3, 2 / 3, 2), (1, 0.5, 1), (10, 0.01, 1)])
def test_guided_steps(total, share, guided):
    assert guidance.guided_steps(total, share) == guided


@pytest.mark.parametrize("share, steps", [(1.0, 1), (2 / 3, 3), (0.5, 2), (0.9, 10)])
def test_a_warm_up_of_this_many_steps_reaches_an_unguided_one(share, steps):
    assert guidance.steps_reaching_the_cut(share) == steps
    assert share == 1 or guidance.guided_steps(steps, share) < steps
    assert share == 1 or guidance.guided_steps(steps - 1, share) >= steps - 1


def test_a_share_outside_zero_to_one_is_refused():
    for share in (0, -0.5, 1.5):
        with pytest.raises(ValueError, match="guidance_share"):
            Tuning("bad", guidance_share=share)


def record_unet(pipe):
    """Each UNet call's rows and conditioning (SDXL: also its pooled embeddings and time ids)."""
    calls = []
    forward = pipe.unet.forward

    def recorded(sample, timestep, encoder_hidden_states, *args, added_cond_kwargs=None, **kwargs):
        extra = {name: value.clone() for name, value in (added_cond_kwargs or {}).items()}
        calls.append({"rows": sample.shape[0], "prompt_embeds": encoder_hidden_states.clone(), **extra})
        return forward(sample, timestep, encoder_hidden_states, *args, added_cond_kwargs=added_cond_kwargs, **kwargs)

    pipe.unet.forward = recorded
    return calls


def call(pipe, share=1.0, guidance_scale=7.5):
    """Two jobs of six denoising steps, guidance cut at share; the float output."""
    return call_tiny(pipe, steps=6, strength=1.0, guidance_scale=guidance_scale, raw=True, **guidance.call_kwargs(pipe, share))


def check_the_cut(pipe, conditioning):
    calls = record_unet(pipe)
    exact = call(pipe)
    guided = [dict(entry) for entry in calls]
    calls.clear()
    cut = call(pipe, share=2 / 3)
    # Four of six steps guided (two rows a job), then the conditional rows alone.
    assert [entry["rows"] for entry in guided] == [4] * 6
    assert [entry["rows"] for entry in calls] == [4, 4, 4, 4, 2, 2]
    for name in conditioning:
        assert torch.equal(calls[0][name], guided[0][name])
        # Guided rows are [unconditional, conditional]: the unguided steps get the conditional half.
        for entry in calls[4:]:
            assert torch.equal(entry[name], guided[0][name][2:])
    assert not torch.equal(exact, cut)
    # The next call is guided again from its first step.
    calls.clear()
    assert torch.equal(call(pipe), exact)
    assert [entry["rows"] for entry in calls] == [4] * 6


def test_sd_unguided_steps_run_the_conditional_rows_alone():
    check_the_cut(load_pipeline("tiny", device=CPU), ["prompt_embeds"])


def tiny_sdxl_pipeline():
    """An SDXL img2img pipeline of the real classes with small random components."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from img2img_runner.tiny import MAX_TOKENS, build_tokenizer

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    text = dict(vocab_size=len(tokenizer), intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=MAX_TOKENS)
    text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=16, **text))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=16, projection_dim=16, **text))
    unet = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,  # both encoders' hidden states side by side
        attention_head_dim=4,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=16 + 6 * 8,  # pooled embedding + six time ids
    )
    vae = AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8, latent_channels=4)
    return StableDiffusionXLImg2ImgPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        text_encoder_2=text_encoder_2.eval(),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet.eval(),
        scheduler=EulerDiscreteScheduler(),
        requires_aesthetics_score=False,
        force_zeros_for_empty_prompt=False,
    )


def test_sdxl_unguided_steps_run_the_conditional_rows_alone():
    check_the_cut(tiny_sdxl_pipeline(), ["prompt_embeds", "text_embeds", "time_ids"])


def test_without_guidance_nothing_is_cut():
    pipe = load_pipeline("tiny", device=CPU)
    calls = record_unet(pipe)
    plain = call(pipe, guidance_scale=1.0)
    assert torch.equal(call(pipe, share=0.5, guidance_scale=1.0), plain)
    assert [entry["rows"] for entry in calls] == [2] * 12


def test_the_warm_up_runs_an_unguided_step():
    pipe = load_pipeline("tiny", device=CPU)
    pipe._img2img_tuning = Tuning("cut", guidance_share=2 / 3)
    calls = record_unet(pipe)
    run_batch(pipe, CPU, 1, (64, 64))
    assert [entry["rows"] for entry in calls] == [2, 2, 1]
    calls.clear()
    pipe._img2img_tuning = TUNINGS["off"]
    run_batch(pipe, CPU, 1, (64, 64))
    assert [entry["rows"] for entry in calls] == [2]


def test_the_runner_cuts_guidance_and_still_reports_every_step():
    pipe = load_pipeline("tiny", device=CPU)
    pipe._img2img_tuning = Tuning("cut", guidance_share=0.5)
    calls = record_unet(pipe)
    jobs = [parse_job(parse(job_header(f"job-{i}", seed=i, steps=4, strength=1.0), TO_RUNNER), png_bytes(sample_image(i)), "tiny") for i in range(2)]
    frames = [header for header, _payload in run_one_batch(pipe, jobs, max_batch=2)]
    assert [entry["rows"] for entry in calls] == [4, 4, 2, 2]
    for job in jobs:
        assert [f["step"] for f in frames if f["type"] == "progress" and f["id"] == job.id] == [1, 2, 3, 4]
        assert [f["type"] for f in frames if f["id"] == job.id][-1] == "result"


def test_a_pipeline_that_does_not_offer_its_prompt_embeddings_is_never_cut():
    pipe = load_pipeline("tiny", device=CPU)
    pipe._callback_tensor_inputs = ["latents"]
    calls = record_unet(pipe)
    assert guidance.call_kwargs(pipe, 0.5) == {}
    call(pipe, share=0.5)
    assert [entry["rows"] for entry in calls] == [4] * 6
