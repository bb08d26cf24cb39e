"""Benchmark sources: full-size SD 1.5 and SDXL architectures with seeded random weights.

No production model uses them. `sd15-arch` and `sdxl-arch` (sources.ARCH_SOURCES)
are model sources (model_names.txt: `sd15 sd15-arch`) that models.load_pipeline
serves like any other, so the benchmarks measure the whole service.
They build the real networks at their real sizes from the configs below (the
published diffusers configs of runwayml/stable-diffusion-v1-5 and
stabilityai/stable-diffusion-xl-base-1.0), so every call costs exactly the
FLOPs, bytes and kernels the real models cost, but the weights are random:
THE IMAGES THEY MAKE ARE NOISE. They exist to measure and tune the GPU path
without downloading weights.

Nothing is downloaded. The tokenizer is the byte-level one of tiny.py (every
byte is a token, 77 tokens a prompt, as in CLIP); the embedding tables keep
CLIP's real vocabulary size (49408 rows), so the text encoders have their real
parameter counts.

Differences from the published pipelines, on purpose:
- scheduler: DDIM for sd15-arch (the published default is PNDM, which runs one
  extra UNet call per job); Euler for sdxl-arch (as published). Both run
  int(steps * strength) denoising steps.
- sdxl-arch's VAE has force_upcast=False, i.e. it runs in fp16 like the
  widely used fp16-fixed SDXL VAE (madebyollin/sdxl-vae-fp16-fix), instead of
  upcasting the VAE to fp32 for every encode and decode.

Build time: the weights are created directly on the target device (a
torch.device context) and cast once, so building on a GPU takes about a second
instead of the tens of seconds a CPU initialisation of 1-3.5 B parameters
takes. Weights are seeded (WEIGHT_SEED): the same device gives the same
weights, a CPU and a GPU give different ones (different random generators).
"""

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    DDIMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionXLImg2ImgPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from .sources import ARCH_SOURCES
from .tiny import build_tokenizer

WEIGHT_SEED = 0
CLIP_VOCAB_SIZE = 49408
MAX_TOKENS = 77

SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    center_input_sample=False,
    flip_sin_to_cos=True,
    freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    downsample_padding=1,
    mid_block_scale_factor=1,
    act_fn="silu",
    norm_num_groups=32,
    norm_eps=1e-5,
    cross_attention_dim=768,
    attention_head_dim=8,
)

SDXL_UNET = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    center_input_sample=False,
    flip_sin_to_cos=True,
    freq_shift=0,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(320, 640, 1280),
    layers_per_block=2,
    downsample_padding=1,
    mid_block_scale_factor=1,
    act_fn="silu",
    norm_num_groups=32,
    norm_eps=1e-5,
    cross_attention_dim=2048,
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)

VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
)
SD15_VAE = dict(VAE, scaling_factor=0.18215)
SDXL_VAE = dict(VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=False)

# CLIP ViT-L/14 text tower (SD 1.5's text encoder, SDXL's first one).
CLIP_L = dict(
    vocab_size=CLIP_VOCAB_SIZE,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=MAX_TOKENS,
    hidden_act="quick_gelu",
    projection_dim=768,
)
# OpenCLIP ViT-bigG/14 text tower (SDXL's second text encoder, with projection).
CLIP_BIGG = dict(
    vocab_size=CLIP_VOCAB_SIZE,
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    max_position_embeddings=MAX_TOKENS,
    hidden_act="gelu",
    projection_dim=1280,
)

# Parameter counts of the published checkpoints (the tests check the builds against them).
PARAMS = {
    "sd15-arch": {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
    "sdxl-arch": {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480, "text_encoder_2": 694_659_840},
}

# Scheduler settings shared by SD 1.5 and SDXL (their training noise schedule).
_SCHEDULE = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    steps_offset=1,
    timestep_spacing="leading",
)


def _clip(settings: dict, tokenizer, with_projection: bool):
    config = CLIPTextConfig(
        **settings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def build_components(source: str, tokenizer) -> dict:
    """The networks of a source, created on the current default device (use a torch.device context)."""
    if source == "sd15-arch":
        return {
            "unet": UNet2DConditionModel(**SD15_UNET),
            "vae": AutoencoderKL(**SD15_VAE),
            "text_encoder": _clip(CLIP_L, tokenizer, with_projection=False),
        }
    if source == "sdxl-arch":
        return {
            "unet": UNet2DConditionModel(**SDXL_UNET),
            "vae": AutoencoderKL(**SDXL_VAE),
            "text_encoder": _clip(CLIP_L, tokenizer, with_projection=False),
            "text_encoder_2": _clip(CLIP_BIGG, tokenizer, with_projection=True),
        }
    raise ValueError(f"unknown benchmark source {source!r} (one of {', '.join(ARCH_SOURCES)})")


def rng_devices(device: torch.device) -> list[int]:
    """The CUDA device indices whose generators torch.random.fork_rng must save for this device."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def _seed(device: torch.device) -> None:
    torch.manual_seed(WEIGHT_SEED)
    if device.type == "cuda":
        torch.cuda.manual_seed(WEIGHT_SEED)


def build_arch_pipeline(source: str, device: torch.device, dtype: torch.dtype):
    """A full-size SD 1.5 / SDXL img2img pipeline with seeded random weights, on device, in dtype."""
    tokenizer = build_tokenizer()
    with torch.random.fork_rng(devices=rng_devices(device)), torch.device(device):
        _seed(device)
        # Created in float32 (the init functions' precision), cast once per network.
        components = {name: module.to(dtype=dtype).eval() for name, module in build_components(source, tokenizer).items()}
    common = dict(tokenizer=tokenizer, feature_extractor=None, **components)
    if source == "sd15-arch":
        scheduler = DDIMScheduler(**_SCHEDULE, clip_sample=False, set_alpha_to_one=False)
        return StableDiffusionImg2ImgPipeline(scheduler=scheduler, safety_checker=None, requires_safety_checker=False, **common)
    scheduler = EulerDiscreteScheduler(**_SCHEDULE, interpolation_type="linear", use_karras_sigmas=False)
    return StableDiffusionXLImg2ImgPipeline(
        scheduler=scheduler,
        tokenizer_2=tokenizer,
        requires_aesthetics_score=False,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
        **common,
    )


def tiny_vae_like(vae, device: torch.device, dtype: torch.dtype):
    """A TAESD-architecture AutoencoderTiny with seeded random weights (the benchmark sources' tiny VAE)."""
    with torch.random.fork_rng(devices=rng_devices(device)), torch.device(device):
        torch.manual_seed(WEIGHT_SEED)
        tiny = AutoencoderTiny(latent_channels=vae.config.latent_channels).to(dtype=dtype).eval()
    return tiny
