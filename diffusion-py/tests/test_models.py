import pathlib

import pytest
import torch

from img2img_runner.models import ModelEntry, load_pipeline, parse_model_names, pick_device, pick_dtype
from tests.helpers import png_bytes, sample_image

REPO_MODEL_NAMES = pathlib.Path(__file__).resolve().parents[2] / "model_names.txt"


def write(tmp_path, text: str) -> str:
    path = tmp_path / "model_names.txt"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_good_lines_and_comments(tmp_path):
    path = write(
        tmp_path,
        "# models served\n\ntiny\nsd15 /models/sd15   # local folder\n  sd-turbo_v2.1 stabilityai/sd-turbo\n",
    )
    assert parse_model_names(path) == [
        ModelEntry(name="tiny", source=None),
        ModelEntry(name="sd15", source="/models/sd15"),
        ModelEntry(name="sd-turbo_v2.1", source="stabilityai/sd-turbo"),
    ]


@pytest.mark.parametrize("bad", ["Tiny", "-tiny", "ti ny x y", "a" * 65, "caf\u00e9", "sd/15"])
def test_bad_line_names_the_line(tmp_path, bad):
    path = write(tmp_path, f"tiny\n# comment\n{bad}\n")
    with pytest.raises(ValueError) as error:
        parse_model_names(path)
    assert f"{path}:3:" in str(error.value)


def test_tuning_field_picks_a_known_tuning(tmp_path):
    path = write(tmp_path, "tiny\nsd15 sd15-arch tuning=fast verify=spot:0.1\nsdxl sdxl-arch tuning=compile-first\n")
    assert parse_model_names(path) == [
        ModelEntry(name="tiny", source=None),
        ModelEntry(name="sd15", source="sd15-arch", tuning="fast"),
        ModelEntry(name="sdxl", source="sdxl-arch", tuning="compile-first"),
    ]
    with pytest.raises(ValueError, match=r":1: .*tuning must be one of"):
        parse_model_names(write(tmp_path, "sd15 sd15-arch tuning=ludicrous\n"))


def test_duplicate_name_is_an_error(tmp_path):
    path = write(tmp_path, "tiny\ntiny other\n")
    with pytest.raises(ValueError, match=r":2: .*listed twice"):
        parse_model_names(path)


@pytest.mark.skipif(not REPO_MODEL_NAMES.exists(), reason="no model_names.txt at the repo root")
def test_repo_model_names_file_parses():
    names = [entry.name for entry in parse_model_names(str(REPO_MODEL_NAMES))]
    assert "tiny" in names


def test_cpu_defaults_to_float32():
    assert pick_dtype(torch.device("cpu")) == torch.float32
    assert pick_dtype(torch.device("cpu"), "bfloat16") == torch.bfloat16
    with pytest.raises(ValueError):
        pick_dtype(torch.device("cpu"), "int8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu_is_refused():
    assert pick_device() == torch.device("cpu")
    with pytest.raises(ValueError, match="cuda"):
        pick_device("cuda")


def test_unknown_model_without_source_is_refused():
    with pytest.raises(ValueError, match="no source"):
        load_pipeline(name="sd15", source=None, device=torch.device("cpu"))


def test_missing_hub_model_fails_offline():
    # conftest sets HF_HUB_OFFLINE=1 and load_pipeline passes local_files_only=True.
    with pytest.raises(OSError):
        load_pipeline(name="nope", source="img2img-tests/does-not-exist", device=torch.device("cpu"))


def test_a_missing_folder_or_one_without_a_pipeline_is_named_as_such(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"model folder {tmp_path}/gone does not exist"):
        load_pipeline(name="gone", source=str(tmp_path / "gone"), device=torch.device("cpu"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no model_index.json: it is not a diffusers pipeline folder"):
        load_pipeline(name="empty", source=str(tmp_path / "empty"), device=torch.device("cpu"))


def test_local_diffusers_folder_loads_and_runs(tmp_path):
    saved = load_pipeline(name="tiny", device=torch.device("cpu"))
    saved.save_pretrained(tmp_path / "tiny-saved")
    pipe = load_pipeline(name="saved", source=str(tmp_path / "tiny-saved"), device=torch.device("cpu"))
    assert type(pipe).__name__ == "StableDiffusionImg2ImgPipeline"
    with torch.inference_mode():
        image = pipe(
            prompt=["a cat"],
            image=[sample_image(0)],
            strength=0.6,
            num_inference_steps=4,
            guidance_scale=7.5,
            generator=[torch.Generator().manual_seed(0)],
        ).images[0]
    assert image.size == (64, 64)
    assert png_bytes(image)


def test_the_tuning_list_the_consumer_checks_is_this_one():
    # common/tunings.json: the names model_names.txt may give (common/models.ts refuses the others).
    import json

    from img2img_runner.tuning import TUNINGS

    listed = json.loads((REPO_MODEL_NAMES.parent / "common" / "tunings.json").read_text(encoding="utf-8"))["tunings"]
    assert sorted(listed) == sorted(TUNINGS)
