"""Live previews: a job with preview_every gets preview frames of its latents (a small WebP)
every that many steps, never at the last; its batch-mates without it get none; the families
without a projection to colours refuse the parameter."""

import io

import pytest
import torch
from PIL import Image

from img2img_runner.families import FAMILIES
from img2img_runner.jobs import JobError, parse_job
from img2img_runner.models import load_pipeline
from img2img_runner.params import LIMITS
from img2img_runner.previews import SD15_RGB, latent_pixels
from img2img_runner.protocol import TO_RUNNER, parse
from tests.helpers import job_header, png_bytes, run_one_batch, sample_image


@pytest.fixture(scope="module")
def tiny():
    return load_pipeline("tiny", device=torch.device("cpu"))


def job(job_id: str, image, **params):
    return parse_job(parse(job_header(job_id, **params), TO_RUNNER), png_bytes(image), "tiny")


def test_a_job_with_preview_every_gets_previews_its_batch_mates_do_not(tiny):
    image = sample_image(0, (64, 48))
    jobs = [job("seen", image, steps=7, strength=1.0, preview_every=2), job("plain", image, steps=7, strength=1.0)]
    frames = run_one_batch(tiny, jobs, max_batch=2)
    previews = [(header, payload) for header, payload in frames if header["type"] == "preview"]
    # Steps 2, 4 and 6 of 7: the last step is followed by the result itself.
    assert [(header["id"], header["step"], header["total"]) for header, _ in previews] == [("seen", 2, 7), ("seen", 4, 7), ("seen", 6, 7)]
    for _, payload in previews:
        picture = Image.open(io.BytesIO(payload))
        # The latents' own grid: an eighth of the size the job computes at.
        assert (picture.format, picture.size) == ("WEBP", (jobs[0].image.width // 8, jobs[0].image.height // 8))
    assert len({payload for _, payload in previews}) == 3  # the latents change from step to step
    assert [header["type"] for header, _ in frames if header.get("id") == "seen"][-1] == "result"


def test_the_projection_is_the_linear_map_of_each_channel():
    latents = torch.zeros(4, 1, 2)
    latents[0, 0, 0] = 1.0  # channel 0 alone in the left pixel: its row of factors, mapped from [-1, 1]
    pixels = [tuple(pixel) for pixel in latent_pixels(latents[None], SD15_RGB)[0].reshape(-1, 3).tolist()]
    assert pixels[0] == tuple(round((factor + 1) / 2 * 255) for factor in SD15_RGB[0])
    assert pixels[1] == (128, 128, 128)  # zero latents: mid grey


@pytest.mark.parametrize("family", ["flux", "sd3", "qwen-image", "z-image"])
def test_families_without_a_projection_refuse_preview_every(family):
    header = job_header("one", preview_every=5)
    neutral = {key: value for key, value in LIMITS.not_applied.items() if key not in FAMILIES[family].rules.applies and key != "preview_every"}
    header["params"].update(neutral)
    with pytest.raises(JobError, match=f"params.preview_every does not apply to models of the {family} family"):
        parse_job(parse(header, TO_RUNNER), png_bytes(sample_image(0, (64, 64))), "dit", FAMILIES[family])
