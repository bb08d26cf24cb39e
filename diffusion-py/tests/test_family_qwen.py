"""The Qwen-Image families (img2img, edit) on toy pipelines of the real diffusers classes.

The edit pipelines need a Qwen2VLProcessor, which transformers 5.23 builds only with torchvision
(for its video processor): without torchvision the edit family is refused at start, and the
tests that serve it are skipped.
"""

import io
from functools import partial
import json

import pytest
import torch
from diffusers import QwenImageEditPipeline, QwenImageEditPlusPipeline, QwenImageImg2ImgPipeline, QwenImagePipeline
from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit, pipeline_qwenimage_edit_plus
from PIL import Image

from img2img_runner.families import FAMILIES, UnsupportedModel, family_of
from img2img_runner.families.qwen import edit_processor_unavailable
from img2img_runner.jobs import JobError
from img2img_runner.runner import warm_up
from tests.families import COMPUTE, INPUT, OTHER, answered_at_input_size, instrument, pixels, result, saved_and_loaded, serve
from tests.families import make_job as family_job
from tests.tiny_qwen_zimage import build_qwen_image, build_tokenizer, rows_and_latents

# Jobs of one full-strength step pair, as these toy pipelines run fastest.
make_job = partial(family_job, strength=1.0, steps=2)

# The 8x VAE's latents packed 2x2: one token per 16x16 pixels, 4 channels x 4.
LATENTS = ((COMPUTE[0] // 16) * (COMPUTE[1] // 16), 16)
QWEN = FAMILIES["qwen-image"]
EDIT = FAMILIES["qwen-image-edit"]
needs_torchvision = pytest.mark.skipif(edit_processor_unavailable() is not None, reason="the edit pipelines' processor needs torchvision")


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    # Saved as Qwen/Qwen-Image's folder is (QwenImagePipeline): the runner loads it for img2img.
    built = build_qwen_image()
    loaded = saved_and_loaded(QwenImagePipeline(**built.components), tmp_path_factory.mktemp("qwen-image"))
    return instrument(loaded, rows_and_latents)


def output(pipe, family=QWEN, **params) -> bytes:
    pipe.calls.clear()
    pipe.forwards.clear()
    job = make_job(family, "one", INPUT, **params)
    return result(serve(pipe, [job])["one"])[1]


def test_family_of_qwen_image_and_warm_up(pipe):
    assert isinstance(pipe, QwenImageImg2ImgPipeline)
    assert family_of(pipe) is QWEN
    warm_up(pipe, torch.device("cpu"))


def test_batch_of_two_computes_on_the_grid_and_answers_at_the_input_size(pipe):
    pipe.calls.clear()
    pipe.forwards.clear()
    jobs = [
        make_job(QWEN, "a", INPUT, seed=1, steps=4, strength=0.5),
        make_job(QWEN, "b", OTHER, seed=2, steps=4, strength=0.5, prompt="a long prompt, of a dog", negative_prompt="blurry"),
    ]
    assert jobs[0].batch_key == jobs[1].batch_key and jobs[0].image.size == COMPUTE
    frames = serve(pipe, jobs)
    answered_at_input_size(frames, jobs)
    for job in jobs:
        # flow: 4 - int(4 * 0.5) = 2 denoising steps, numbered 1..2, as the rules say.
        progress = [h for h, _ in frames[job.id] if h["type"] == "progress"]
        assert [h["step"] for h in progress] == [1, 2] and {h["total"] for h in progress} == {job.denoising_steps} == {2}
    (call,) = pipe.calls
    assert (call["width"], call["height"]) == COMPUTE
    assert call["true_cfg_scale"] == 4.0 and call["negative_prompt"] == [" ", "blurry"] and "guidance_scale" not in call
    assert call["max_sequence_length"] == 1024 and call["strength"] == 0.5 and call["num_inference_steps"] == 4
    # True CFG: two transformer calls a step, each on both rows at 96x64 (not 1024x1024's 4096 tokens).
    assert pipe.forwards == [(2, LATENTS)] * 4
    # A job's output does not depend on its batch-mate (prompts of other lengths, a negative prompt).
    assert pixels(result(frames["a"])[1]) == pytest.approx(pixels(output(pipe, seed=1, steps=4, strength=0.5)), abs=2)


def test_guidance_of_one_or_less_is_one_transformer_call_a_step_without_negative_prompt(pipe):
    plain = output(pipe, guidance_scale=1.0, negative_prompt="blurry")
    assert "negative_prompt" not in pipe.calls[0] and pipe.calls[0]["true_cfg_scale"] == 1.0
    assert pipe.forwards == [(1, LATENTS)] * 2
    # The negative prompt only acts through CFG: without it, it changes nothing.
    assert output(pipe, guidance_scale=1.0) == plain
    assert output(pipe, guidance_scale=0.5) == plain
    guided = output(pipe, guidance_scale=1.5)
    assert pipe.forwards == [(1, LATENTS)] * 4 and guided != plain


def test_each_parameter_changes_the_output(pipe):
    base = {"prompt": "a cat", "negative_prompt": None, "strength": 1.0, "steps": 2, "guidance_scale": 4.0, "seed": 1}
    reference = output(pipe, **base)
    assert output(pipe, **base) == reference  # deterministic
    changes = {"prompt": "a dog", "negative_prompt": "blurry", "strength": 0.5, "steps": 3, "guidance_scale": 2.0, "seed": 2}
    for key, value in changes.items():
        assert output(pipe, **{**base, key: value}) != reference, key


def test_edit_rules_refuse_strength():
    with pytest.raises(JobError) as refused:
        make_job(EDIT, "edit", INPUT, strength=0.5)
    assert refused.value.code == "bad_params" and "params.strength" in str(refused.value)
    assert make_job(EDIT, "edit", INPUT).denoising_steps == 2  # all steps run


def _crafted_edit_folder(folder, cls) -> str:
    """A Qwen-Image-Edit folder as the hub has it (processor included), written without torchvision:
    the pipeline saved with no processor, then its processor folder by hand."""
    cls(**build_qwen_image("edit", processor=False).components).save_pretrained(str(folder))
    index = json.loads((folder / "model_index.json").read_text())
    index["processor"] = ["transformers", "Qwen2VLProcessor"]
    (folder / "model_index.json").write_text(json.dumps(index))
    (folder / "processor").mkdir()
    build_tokenizer().save_pretrained(str(folder / "processor"))
    patches = {"merge_size": 2, "patch_size": 14, "temporal_patch_size": 2}
    config = {
        "processor_class": "Qwen2VLProcessor",
        "image_processor": {"image_processor_type": "Qwen2VLImageProcessor", **patches},
        "video_processor": {"video_processor_type": "Qwen2VLVideoProcessor", **patches},
    }
    (folder / "processor" / "processor_config.json").write_text(json.dumps(config))
    return str(folder)


@pytest.mark.skipif(edit_processor_unavailable() is None, reason="torchvision is installed: the edit models load")
def test_edit_models_are_refused_at_start_without_torchvision(tmp_path):
    from img2img_runner.models import load_pipeline

    for cls in (QwenImageEditPipeline, QwenImageEditPlusPipeline):
        # A real edit folder does not load: transformers wants torchvision for the processor.
        with pytest.raises(ImportError, match="[Tt]orchvision"):
            load_pipeline("edit", source=_crafted_edit_folder(tmp_path / cls.__name__, cls), device=torch.device("cpu"))
        # One built without its processor is refused by the family, with the reason.
        with pytest.raises(UnsupportedModel, match="torchvision"):
            family_of(cls(**build_qwen_image("edit", processor=False).components))


@pytest.fixture(scope="module")
def edit_pipes(tmp_path_factory):
    if edit_processor_unavailable() is not None:
        pytest.skip("the edit pipelines' processor needs torchvision")
    folder = tmp_path_factory.mktemp("qwen-edit")
    return {kind: instrument(saved_and_loaded(build_qwen_image(kind), folder / kind), rows_and_latents) for kind in ("edit", "edit-plus")}


@pytest.fixture
def small_reference(monkeypatch):
    """The pipelines scale the reference to about a megapixel for the VAE (seconds a call on this
    CPU): a few thousand pixels in the tests. What the family passes is unchanged."""
    original = pipeline_qwenimage_edit.calculate_dimensions
    monkeypatch.setattr(pipeline_qwenimage_edit, "calculate_dimensions", lambda area, ratio: original(128 * 128, ratio))
    monkeypatch.setattr(pipeline_qwenimage_edit_plus, "VAE_IMAGE_SIZE", 128 * 128)


@needs_torchvision
def test_edit_models_serve_jobs_one_a_call_at_the_input_size(edit_pipes, small_reference):
    for kind, edit in edit_pipes.items():
        assert family_of(edit) is EDIT, kind
        warm_up(edit, torch.device("cpu"))
        edit.calls.clear()
        edit.forwards.clear()
        jobs = [make_job(EDIT, "a", INPUT, seed=1, steps=2), make_job(EDIT, "b", OTHER, seed=2, steps=2)]
        # Never batched (Edit Plus takes one prompt a call): two calls.
        assert jobs[0].batch_key != jobs[1].batch_key
        for job in jobs:
            frames = serve(edit, [job])[job.id]
            header, payload = result(frames)
            assert Image.open(io.BytesIO(payload)).size == (100, 70) == (header["width"], header["height"])
            progress = [h for h, _ in frames if h["type"] == "progress"]
            assert {h["total"] for h in progress} == {job.denoising_steps} == {2} and [h["step"] for h in progress] == [1, 2]
        call = edit.calls[0]
        assert "strength" not in call and (call["width"], call["height"]) == COMPUTE and call["negative_prompt"] == [" "]
        # One row a call; the output's 24 latent tokens come with the reference's; two calls a step (true CFG).
        assert len(edit.forwards) == 2 * 2 * 2 and all(rows == 1 and tokens > LATENTS[0] for rows, (tokens, _) in edit.forwards)


@needs_torchvision
def test_edit_parameters_change_the_output(edit_pipes, small_reference):
    edit = edit_pipes["edit-plus"]
    base = {"prompt": "a cat", "negative_prompt": None, "steps": 2, "guidance_scale": 4.0, "seed": 1}
    reference = output(edit, EDIT, **base)
    for key, value in {"prompt": "a dog", "negative_prompt": "blurry", "steps": 3, "guidance_scale": 2.0, "seed": 2}.items():
        assert output(edit, EDIT, **{**base, key: value}) != reference, key
    output(edit, EDIT, **{**base, "guidance_scale": 1.0})
    assert "negative_prompt" not in edit.calls[0] and len(edit.forwards) == 2
