"""The UNet families (families/sd.py) and the family rules at load: SDXL's empty negative prompt
as diffusers gives it, LCM without one, a model of another family refused at start."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from img2img_runner.families import FAMILIES, UnsupportedModel, family_of
from img2img_runner.jobs import JobError, parse_job
from img2img_runner.models import family_of_source, load_pipeline, parse_model_names, pick_dtype
from img2img_runner.protocol import TO_RUNNER, parse
from tests.helpers import job_header, png_bytes, run_one_batch, sample_image
from tests.test_guidance import tiny_sdxl_pipeline

CPU = torch.device("cpu")


def jobs_of(family, **params):
    return [parse_job(parse(job_header(f"job-{i}", seed=i, steps=4, strength=1.0, **params), TO_RUNNER), png_bytes(sample_image(i)), "tiny", family) for i in range(2)]


def result_pixels(frames) -> list[np.ndarray]:
    import io

    return [np.asarray(Image.open(io.BytesIO(payload))) for header, payload in frames if header["type"] == "result"]


def test_the_tiny_model_and_its_stand_ins_are_of_the_sd_family():
    assert family_of(load_pipeline("tiny", device=CPU)).name == "sd"
    with pytest.raises(UnsupportedModel, match="object is not a pipeline this runner serves"):
        family_of(object())


@pytest.mark.parametrize("force_zeros", [True, False])
def test_sdxl_without_a_negative_prompt_gives_what_diffusers_gives(force_zeros):
    pipe = tiny_sdxl_pipeline()
    pipe.register_to_config(force_zeros_for_empty_prompt=force_zeros)
    family = family_of(pipe)
    assert family.name == "sdxl"
    jobs = jobs_of(family)
    served = result_pixels(run_one_batch(pipe, jobs, max_batch=2))
    with torch.inference_mode():
        expected = pipe(
            prompt=[job.prompt for job in jobs],
            negative_prompt=None,
            image=[job.image for job in jobs],
            strength=1.0,
            num_inference_steps=4,
            guidance_scale=jobs[0].guidance_scale,
            generator=[torch.Generator().manual_seed(job.seed) for job in jobs],
        ).images
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(served, expected))
    # A job with a negative prompt never shares a call with one without.
    with_negative = jobs_of(family, negative_prompt="blurry")[0]
    assert with_negative.batch_key != jobs[0].batch_key


def test_lcm_takes_no_negative_prompt_and_runs_every_step():
    lcm = FAMILIES["lcm"]
    assert "negative_prompt" not in lcm.call_kwargs(None, jobs_of(lcm))
    assert lcm.rules.denoising_steps(4, 0.25) == 4
    with pytest.raises(JobError, match="params.negative_prompt does not apply to models of the lcm family"):
        jobs_of(lcm, negative_prompt="blurry")


def test_model_names_give_family_and_dtype_and_the_dtype_follows_the_family(tmp_path):
    listed = tmp_path / "model_names.txt"
    listed.write_text("a /x family=flux dtype=float16\nb /y\n")
    a, b = parse_model_names(str(listed))
    assert (a.family, a.dtype, b.family, b.dtype) == ("flux", "float16", None, None)
    listed.write_text("c /x family=dalle\n")
    with pytest.raises(ValueError, match="family must be one of"):
        parse_model_names(str(listed))
    cuda = torch.device("cuda", 0)
    assert [pick_dtype(cuda, None, family) for family in ("sd", "sdxl", "flux", "qwen-image")] == [torch.float16, torch.float16, torch.bfloat16, torch.bfloat16]
    assert pick_dtype(CPU, None, "flux") == torch.float32
    assert pick_dtype(cuda, "float16", "flux") == torch.float16


def test_a_source_folder_tells_its_family_before_it_loads(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "QwenImageEditPlusPipeline"}))
    assert family_of_source("m", str(tmp_path)) == "qwen-image-edit"
    assert family_of_source("tiny", None) == "sd"
    assert family_of_source("m", "sdxl-arch") == "sdxl"
    assert family_of_source("m", str(tmp_path / "missing")) is None


def test_a_model_of_another_family_than_model_names_says_is_refused_at_start(start_runner):
    runner = start_runner("--family", "flux")
    assert runner.close() != 0
    assert "model tiny should be of the flux family, but its StableDiffusionImg2ImgPipeline is of sd" in runner.log()
