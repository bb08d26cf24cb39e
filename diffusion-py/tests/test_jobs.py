"""Job values against the shared limits (common/params.json), and reading that file."""

import json
import os
import subprocess
import sys

import pytest

from img2img_runner.jobs import LIMITS, JobError, parse_job
from img2img_runner.params import DEFAULT_PATH, load_limits
from img2img_runner.protocol import TO_RUNNER, parse
from tests.helpers import PACKAGE_DIR, job_header, png_bytes, sample_image

IMAGE = png_bytes(sample_image(0))


def job_with(**params):
    header = job_header("job-1")
    header["params"].update(params)
    return parse(header, TO_RUNNER)


def test_limits_are_the_shared_file():
    shared = json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))
    assert (LIMITS.steps.minimum, LIMITS.steps.maximum) == (shared["steps"]["minimum"], shared["steps"]["maximum"])
    assert LIMITS.guidance_scale.maximum == shared["guidance_scale"]["maximum"]
    assert LIMITS.seed.maximum == shared["seed"]["maximum"]
    assert LIMITS.model_defaults == shared["model_defaults"]


@pytest.mark.parametrize(
    ("params", "text"),
    [
        ({"steps": LIMITS.steps.maximum + 1}, "params.steps must be an integer in"),
        ({"steps": 0}, "params.steps must be an integer in"),
        ({"guidance_scale": LIMITS.guidance_scale.maximum + 0.5}, "params.guidance_scale must be in"),
        ({"strength": 1.5}, "params.strength must be in (0.0, 1.0]"),
        ({"seed": LIMITS.seed.maximum + 1}, "params.seed must be an integer in"),
        ({"seed": -1}, "params.seed must be an integer in"),
        ({"steps": 3, "strength": 0.3}, "steps*strength must give at least one step"),
    ],
)
def test_values_outside_the_limits_are_bad_params(params, text):
    with pytest.raises(JobError) as error:
        parse_job(job_with(**params), IMAGE)
    assert error.value.code == "bad_params"
    assert text in str(error.value)


def test_values_at_the_limits_are_accepted():
    job = parse_job(job_with(steps=LIMITS.steps.maximum, guidance_scale=LIMITS.guidance_scale.maximum, seed=LIMITS.seed.maximum, strength=1), IMAGE)
    assert (job.steps, job.seed) == (LIMITS.steps.maximum, LIMITS.seed.maximum)
    assert isinstance(job.strength, float) and isinstance(job.guidance_scale, float)
    assert job.payload == IMAGE and job.size == (64, 64)


def test_garbage_payload_is_bad_image():
    with pytest.raises(JobError) as error:
        parse_job(job_with(), b"not an image")
    assert error.value.code == "bad_image"


def test_params_file_can_be_named_by_environment(tmp_path):
    shared = json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))
    shared["steps"]["maximum"] = 12
    path = tmp_path / "params.json"
    path.write_text(json.dumps(shared), encoding="utf-8")
    assert load_limits(path).steps.maximum == 12
    code = "from img2img_runner.jobs import LIMITS; print(LIMITS.steps.maximum)"
    env = os.environ | {"IMG2IMG_PARAMS_FILE": str(path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE_DIR, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "12"


def test_unreadable_params_file_names_the_file(tmp_path):
    with pytest.raises(RuntimeError, match="missing.json"):
        load_limits(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"steps": {}}', encoding="utf-8")
    with pytest.raises(RuntimeError, match="broken.json"):
        load_limits(broken)


SIZES_PATH = DEFAULT_PATH.parents[1] / "test" / "vectors" / "image-sizes.json"


@pytest.mark.parametrize("case", json.loads(SIZES_PATH.read_text(encoding="utf-8"))["cases"], ids=lambda case: f"{case['model']}-{case['width']}x{case['height']}")
def test_image_sizes_agree_with_the_api(case):
    """The same vectors as test/unit/api-limits.test.ts: the API refuses what the runner would."""
    payload = png_bytes(sample_image(0, (case["width"], case["height"])))
    if case["compute"] is None:
        with pytest.raises(JobError) as error:
            parse_job(job_with(), payload, case["model"])
        assert error.value.code == "bad_image"
    else:
        job = parse_job(job_with(), payload, case["model"])
        assert list(job.image.size) == case["compute"]
        assert job.size == (case["width"], case["height"])


def test_image_limits_are_per_model():
    shared = json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))
    assert LIMITS.image_for("tiny").max_pixels == shared["model_defaults"]["tiny"]["image"]["max_pixels"]
    assert LIMITS.image_for("unlisted") == LIMITS.image_for(None)
    assert LIMITS.image_for(None).max_pixels == shared["image"]["max_pixels"]


def test_an_image_over_the_limit_is_refused_from_its_header():
    """A header declaring more pixels than the model takes is refused before any pixel is decoded."""
    header_only = png_bytes(sample_image(0, (2048, 8)))
    cut = header_only[:100]  # the IHDR chunk is whole; the pixel data is gone
    with pytest.raises(JobError, match="2048x8; too narrow"):
        parse_job(job_with(), cut, "tiny")


def test_zero_strength_is_bad_params():
    with pytest.raises(JobError, match=r"params.strength must be in \(0.0, 1.0\]"):
        parse_job(job_with(strength=0), IMAGE)


def test_unknown_model_image_key_fails_at_load(tmp_path):
    shared = json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))
    shared["model_defaults"]["tiny"]["image"]["max_pixel"] = 5
    path = tmp_path / "params.json"
    path.write_text(json.dumps(shared), encoding="utf-8")
    with pytest.raises(RuntimeError, match="max_pixel"):
        load_limits(path)
