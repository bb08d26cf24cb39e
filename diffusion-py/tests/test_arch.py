"""The benchmark models sd15-arch, sdxl-arch, flux-arch and sd35-arch, built on the meta device (no memory, no weights)."""

import pytest
import torch

from transformers import T5EncoderModel

from img2img_runner.arch import CLIP_VOCAB_SIZE, PARAMS, T5_VOCAB_SIZE, build_arch_pipeline, build_components, t5_tokenizer
from img2img_runner.families import family_of
from img2img_runner.models import family_of_source, load_pipeline
from img2img_runner.sources import ARCH_FAMILIES, ARCH_SOURCES
from img2img_runner.tiny import build_tokenizer


def count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def test_model_sources_agree():
    assert tuple(PARAMS) == ARCH_SOURCES == tuple(ARCH_FAMILIES)


@pytest.mark.parametrize("source", ARCH_SOURCES)
def test_parameter_counts_are_the_published_ones(source):
    with torch.device("meta"):
        components = build_components(source, build_tokenizer())
    assert {name: count(module) for name, module in components.items()} == PARAMS[source]
    for name, module in components.items():
        if name.startswith("text_encoder"):
            vocabulary = T5_VOCAB_SIZE if isinstance(module, T5EncoderModel) else CLIP_VOCAB_SIZE
            assert module.get_input_embeddings().num_embeddings == vocabulary


def test_dit_architectures_are_the_published_ones():
    with torch.device("meta"):
        flux = build_components("flux-arch", build_tokenizer())["transformer"]
        sd35 = build_components("sd35-arch", build_tokenizer())["transformer"]
    assert (len(flux.transformer_blocks), len(flux.single_transformer_blocks), flux.inner_dim) == (19, 38, 3072)
    assert flux.config.guidance_embeds
    assert (len(sd35.transformer_blocks), sd35.inner_dim, sd35.config.qk_norm) == (38, 2432, "rms_norm")


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


@pytest.mark.parametrize(("source", "pipeline"), [("flux-arch", "FluxImg2ImgPipeline"), ("sd35-arch", "StableDiffusion3Img2ImgPipeline")])
def test_dit_pipeline_assembles_in_bf16_and_is_of_its_family(source, pipeline):
    pipe = build_arch_pipeline(source, torch.device("meta"), torch.bfloat16)
    assert type(pipe).__name__ == pipeline
    assert type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert {module.dtype for module in pipe.components.values() if isinstance(module, torch.nn.Module)} == {torch.bfloat16}
    assert pipe.transformer.device.type == "meta"
    # 1024x1024 when the call names no size, as the published pipelines.
    assert pipe.default_sample_size * pipe.vae_scale_factor == 1024
    # The family the runner serves it as, and the one the API and the dtype choice read before loading.
    assert family_of(pipe).name == ARCH_FAMILIES[source] == family_of_source("m", source)


def test_flux_arch_schedule_is_flux_dev_s():
    config = build_arch_pipeline("flux-arch", torch.device("meta"), torch.bfloat16).scheduler.config
    assert config.use_dynamic_shifting and (config.base_shift, config.max_shift) == (0.5, 1.15)
    assert (config.base_image_seq_len, config.max_image_seq_len) == (256, 4096)


def test_t5_prompt_pads_to_the_pipelines_length():
    tokens = t5_tokenizer()("a photo of a cat", padding="max_length", max_length=512, truncation=True, return_tensors="pt").input_ids
    assert tokens.shape == (1, 512)
    assert int(tokens.max()) < T5_VOCAB_SIZE


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
