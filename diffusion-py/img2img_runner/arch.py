"""Benchmark sources: full-size SD 1.5, SDXL, FLUX.1 [dev] and SD 3.5 Large architectures with seeded random weights.

No production model uses them. `sd15-arch`, `sdxl-arch`, `flux-arch` and
`sd35-arch` (sources.ARCH_SOURCES) are model sources (model_names.txt:
`sd15 sd15-arch`) that models.load_pipeline serves like any other, so the
benchmarks measure the whole service. They build the real networks at their
real sizes from the configs below (the published diffusers configs of
runwayml/stable-diffusion-v1-5, stabilityai/stable-diffusion-xl-base-1.0,
black-forest-labs/FLUX.1-dev and stabilityai/stable-diffusion-3.5-large), so
every call costs exactly the FLOPs, bytes and kernels the real models cost,
but the weights are random: THE IMAGES THEY MAKE ARE NOISE. They exist to
measure and tune the GPU path without downloading weights.

Nothing is downloaded. The CLIP tokenizer is the byte-level one of tiny.py
(every byte is a token, 77 tokens a prompt, as in CLIP); the T5 tokenizer is a
Unigram model of printable ASCII built in memory (the pipelines pad T5 prompts
to their max_sequence_length, so the sequence the transformer sees is the real
one). The embedding tables keep the real vocabulary sizes (CLIP 49408, T5
32128 rows), so the text encoders have their real parameter counts.

Differences from the published pipelines, on purpose:
- scheduler: DDIM for sd15-arch (the published default is PNDM, which runs one
  extra UNet call per job); Euler for sdxl-arch (as published). Both run
  int(steps * strength) denoising steps.
- sdxl-arch's VAE has force_upcast=False, i.e. it runs in fp16 like the
  widely used fp16-fixed SDXL VAE (madebyollin/sdxl-vae-fp16-fix), instead of
  upcasting the VAE to fp32 for every encode and decode.

- flux-arch and sd35-arch are served in the dtype asked for; their benchmarks
  run them in bf16, the dtype both were published and trained in.

Build time: the weights are created directly on the target device (a
torch.device context) and each network is cast as soon as it is built, so
building on a GPU takes seconds instead of the minutes a CPU initialisation
of 1-17 B parameters takes, and the float32 copy of only one network exists
at a time (FLUX.1's transformer: 48 GB in float32, 24 GB in bf16). Weights
are seeded (WEIGHT_SEED): the same device gives the same weights, a CPU and a
GPU give different ones (different random generators).
"""

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    DDIMScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxImg2ImgPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Img2ImgPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionXLImg2ImgPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel, T5TokenizerFast

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

# FLUX.1 [dev]'s transformer: 19 double-stream and 38 single-stream blocks, 24 heads of 128
# (3072 wide), the guidance embedding of the distilled guidance.
FLUX_TRANSFORMER = dict(
    patch_size=1,
    in_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)

# SD 3.5 Large's MMDiT: 38 joint blocks, 38 heads of 64 (2432 wide), RMS-normed queries and keys.
SD35_TRANSFORMER = dict(
    sample_size=128,
    patch_size=2,
    in_channels=16,
    num_layers=38,
    attention_head_dim=64,
    num_attention_heads=38,
    joint_attention_dim=4096,
    caption_projection_dim=2432,
    pooled_projection_dim=2048,
    out_channels=16,
    pos_embed_max_size=192,
    qk_norm="rms_norm",
)

# The 16-channel VAE of FLUX.1 and SD3 (no quant convs); only their latent scaling differs.
DIT_VAE = dict(VAE, latent_channels=16, sample_size=1024, use_quant_conv=False, use_post_quant_conv=False)
FLUX_VAE = dict(DIT_VAE, scaling_factor=0.3611, shift_factor=0.1159)
SD35_VAE = dict(DIT_VAE, scaling_factor=1.5305, shift_factor=0.0609)

# T5 v1.1 XXL's encoder (google/t5-v1_1-xxl): FLUX.1's text_encoder_2, SD3's text_encoder_3.
T5_VOCAB_SIZE = 32128
T5_XXL = dict(
    vocab_size=T5_VOCAB_SIZE,
    d_model=4096,
    d_kv=64,
    d_ff=10240,
    num_layers=24,
    num_heads=64,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu",
    dense_act_fn="gelu_new",
    is_gated_act=True,
    layer_norm_epsilon=1e-6,
    tie_word_embeddings=False,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)

# Parameter counts of the published checkpoints (the tests check the builds against them).
PARAMS = {
    "sd15-arch": {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
    "sdxl-arch": {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480, "text_encoder_2": 694_659_840},
    # FLUX.1-dev's safetensors hold 23,802,816,640 bytes of bf16 transformer and 9,524,621,312 of T5.
    "flux-arch": {"transformer": 11_901_408_320, "text_encoder_2": 4_762_310_656, "vae": 83_819_683, "text_encoder": 123_060_480},
    # SD 3.5 Large: the "8.1B" MMDiT, CLIP-L and OpenCLIP bigG with their projections, T5 XXL.
    "sd35-arch": {
        "transformer": 8_056_627_520,
        "text_encoder_3": 4_762_310_656,
        "vae": 83_819_683,
        "text_encoder": 123_650_304,
        "text_encoder_2": 694_659_840,
    },
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


def t5_tokenizer() -> T5TokenizerFast:
    """A Unigram T5 tokenizer built in memory: printable ASCII characters and ▁-prefixed letters.

    T5's layout: <pad>=0, </s>=1, <unk>=2, then the pieces; every id is far below T5's 32128 rows.
    """
    pieces = [("▁", -2.0)] + [(chr(code), -3.0) for code in range(32, 127)] + [("▁" + chr(code), -2.5) for code in range(97, 123)]
    return T5TokenizerFast(vocab=[("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), *pieces], extra_ids=0)


def _factories(source: str, tokenizer) -> dict:
    """Each network of a source as a function that builds it, largest first."""
    clip_l = lambda: _clip(CLIP_L, tokenizer, with_projection=False)  # noqa: E731
    if source == "sd15-arch":
        return {"unet": lambda: UNet2DConditionModel(**SD15_UNET), "vae": lambda: AutoencoderKL(**SD15_VAE), "text_encoder": clip_l}
    if source == "sdxl-arch":
        return {
            "unet": lambda: UNet2DConditionModel(**SDXL_UNET),
            "vae": lambda: AutoencoderKL(**SDXL_VAE),
            "text_encoder": clip_l,
            "text_encoder_2": lambda: _clip(CLIP_BIGG, tokenizer, with_projection=True),
        }
    if source == "flux-arch":
        return {
            "transformer": lambda: FluxTransformer2DModel(**FLUX_TRANSFORMER),
            "text_encoder_2": lambda: T5EncoderModel(T5Config(**T5_XXL)),
            "vae": lambda: AutoencoderKL(**FLUX_VAE),
            "text_encoder": clip_l,
        }
    if source == "sd35-arch":
        return {
            "transformer": lambda: SD3Transformer2DModel(**SD35_TRANSFORMER),
            "text_encoder_3": lambda: T5EncoderModel(T5Config(**T5_XXL)),
            "vae": lambda: AutoencoderKL(**SD35_VAE),
            "text_encoder": lambda: _clip(CLIP_L, tokenizer, with_projection=True),
            "text_encoder_2": lambda: _clip(CLIP_BIGG, tokenizer, with_projection=True),
        }
    raise ValueError(f"unknown benchmark source {source!r} (one of {', '.join(ARCH_SOURCES)})")


def build_components(source: str, tokenizer, dtype: torch.dtype | None = None) -> dict:
    """The networks of a source, created on the current default device (use a torch.device context).

    With a dtype each network is cast (and set to eval) as soon as it is built: created in
    float32, the init functions' precision, one network at a time.
    """
    components = {}
    for name, build in _factories(source, tokenizer).items():
        module = build()
        components[name] = module if dtype is None else module.to(dtype=dtype).eval()
    return components


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
    """A full-size img2img pipeline of a benchmark source with seeded random weights, on device, in dtype."""
    tokenizer = build_tokenizer()
    with torch.random.fork_rng(devices=rng_devices(device)), torch.device(device):
        _seed(device)
        components = build_components(source, tokenizer, dtype)
    common = dict(tokenizer=tokenizer, feature_extractor=None, **components)
    if source == "flux-arch":
        # FLUX.1 [dev]'s schedule: the shift grows with the image's token count (1024x1024: 1.15).
        scheduler = FlowMatchEulerDiscreteScheduler(
            shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096
        )
        return FluxImg2ImgPipeline(scheduler=scheduler, tokenizer_2=t5_tokenizer(), image_encoder=None, **common)
    if source == "sd35-arch":
        return StableDiffusion3Img2ImgPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), tokenizer_2=tokenizer, tokenizer_3=t5_tokenizer(), image_encoder=None, **common
        )
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
