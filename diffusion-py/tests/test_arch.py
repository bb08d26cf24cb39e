"""The benchmark models sd15-arch / sdxl-arch, built on the meta device (no memory, no weights)."""

import pytest
import torch

from img2img_runner.arch import CLIP_VOCAB_SIZE, PARAMS, build_arch_pipeline, build_components
from img2img_runner.models import load_pipeline
from img2img_runner.sources import ARCH_SOURCES
from img2img_runner.tiny import build_tokenizer


def count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def test_model_sources_agree():
    assert tuple(PARAMS) == ARCH_SOURCES


@pytest.mark.parametrize("source", ARCH_SOURCES)
def test_parameter_counts_are_the_published_ones(source):
    with torch.device("meta"):
        components = build_components(source, build_tokenizer())
    assert {name: count(module) for name, module in components.items()} == PARAMS[source]
    for name, module in components.items():
        if name.startswith("text_encoder"):
            assert module.get_input_embeddings().num_embeddings == CLIP_VOCAB_SIZE


@pytest.mark.parametrize(
    ("source", "pipeline", "scheduler", "sample_size"),
    [
        ("sd15-arch", "StableDiffusionImg2ImgPipeline", "DDIMScheduler", 64),
        ("sdxl-arch", "StableDiffusionXLImg2ImgPipeline", "EulerDiscreteScheduler", 128),
    ],
)
def test_pipeline_assembles_in_the_asked_dtype(source, pipeline, scheduler, sample_size):
    pipe = build_arch_pipeline(source, torch.device("meta"), torch.float16)
    assert type(pipe).__name__ == pipeline
    assert type(pipe.scheduler).__name__ == scheduler
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == sample_size * 8
    assert pipe.unet.dtype == pipe.vae.dtype == pipe.text_encoder.dtype == torch.float16
    assert pipe.unet.device.type == "meta"


def test_sdxl_vae_runs_in_half_precision():
    # force_upcast=False: the VAE stays fp16 (as the fp16-fixed SDXL VAE), see arch.py.
    pipe = build_arch_pipeline("sdxl-arch", torch.device("meta"), torch.float16)
    assert pipe.vae.config.force_upcast is False


def test_prompt_tokenizes_to_clip_length():
    tokens = build_tokenizer()("a photo of a cat", padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert tokens.shape == (1, 77)
    assert int(tokens.max()) < CLIP_VOCAB_SIZE


def test_unknown_benchmark_source_is_refused():
    with pytest.raises(ValueError, match="unknown benchmark source"):
        build_components("sd3-arch", build_tokenizer())


def test_load_pipeline_dispatches_arch_sources(monkeypatch):
    built = {}

    def fake_build(source, device, dtype):
        built.update(source=source, device=device, dtype=dtype)
        return build_arch_pipeline(source, torch.device("meta"), dtype)

    monkeypatch.setattr("img2img_runner.arch.build_arch_pipeline", fake_build)
    monkeypatch.setattr("diffusers.DiffusionPipeline.to", lambda self, *args, **kwargs: self)
    load_pipeline(name="sd15", source="sd15-arch", device=torch.device("cpu"), dtype=torch.float16)
    assert built == {"source": "sd15-arch", "device": torch.device("cpu"), "dtype": torch.float16}
