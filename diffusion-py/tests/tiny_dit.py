"""Toy-sized SD3 and Flux pipelines of the real diffusers classes, with seeded random weights.

Built from configs in memory (nothing from the hub; the numbers follow diffusers' own
get_dummy_components), saved with save_pretrained and loaded back through
models.load_pipeline, so the tests take the real loading path. Unlike diffusers' dummies the
VAE has four blocks (vae_scale_factor 8, as the real models), so sizes on the families' 16-pixel
grid are valid and a 96x64 image is 12x8 latents.
"""

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxImg2ImgPipeline,
    FluxKontextPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Img2ImgPipeline,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel, T5TokenizerFast

from img2img_runner.tiny import MAX_TOKENS, build_tokenizer

WEIGHT_SEED = 0
CLIP_DIM = 32


def t5_tokenizer() -> T5TokenizerFast:
    """A Unigram T5 tokenizer built in memory: printable ASCII characters and ▁-prefixed letters."""
    pieces = [("▁", -2.0)] + [(chr(code), -3.0) for code in range(32, 127)] + [("▁" + chr(code), -2.5) for code in range(97, 123)]
    # T5's layout: <pad>=0, </s>=1, <unk>=2, then the pieces.
    return T5TokenizerFast(vocab=[("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), *pieces], extra_ids=0)


def _clip(tokenizer, with_projection: bool):
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=CLIP_DIM,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        projection_dim=CLIP_DIM,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def _t5(tokenizer, d_model: int) -> T5EncoderModel:
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=8,
        d_ff=37,
        num_layers=1,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return T5EncoderModel(config)


def _vae(latent_channels: int) -> AutoencoderKL:
    # Four blocks: three 2x downsamples, vae_scale_factor 8 as in SD3 and Flux.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(4, 4, 4, 4),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=1,
        sample_size=32,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )


def build_flux(kind: str = "dev"):
    """FLUX.1 at toy size: kind dev (guidance embedding), schnell (none) or kontext (FluxKontextPipeline)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(WEIGHT_SEED)
        tokenizer, tokenizer_2 = build_tokenizer(), t5_tokenizer()
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=16,  # 4 latent channels packed 2x2
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=CLIP_DIM,
            guidance_embeds=kind != "schnell",
            axes_dims_rope=[4, 4, 8],
        )
        components = {
            "text_encoder": _clip(tokenizer, with_projection=False),
            "text_encoder_2": _t5(tokenizer_2, d_model=32),
            "tokenizer": tokenizer,
            "tokenizer_2": tokenizer_2,
            "transformer": transformer,
            "vae": _vae(latent_channels=4),
        }
    if kind == "schnell":
        scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
    else:
        # FLUX.1 [dev]'s: the shift grows with the image's sequence length.
        scheduler = FlowMatchEulerDiscreteScheduler(
            shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096
        )
    if kind == "kontext":
        return FluxKontextPipeline(scheduler=scheduler, image_encoder=None, feature_extractor=None, **components)
    return FluxImg2ImgPipeline(scheduler=scheduler, **components)


def build_sd3(t5: bool = True) -> StableDiffusion3Img2ImgPipeline:
    """SD3 at toy size; t5=False: without the T5 encoder (text_encoder_3 None), as SD3 allows."""
    joint_dim = 64  # T5's width; the two CLIPs' hidden states (32 + 32) are padded to it
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(WEIGHT_SEED)
        tokenizer_3 = t5_tokenizer()
        components = {
            "text_encoder": _clip(build_tokenizer(), with_projection=True),
            "text_encoder_2": _clip(build_tokenizer(), with_projection=True),
            "text_encoder_3": _t5(tokenizer_3, d_model=joint_dim) if t5 else None,
            "tokenizer": build_tokenizer(),
            "tokenizer_2": build_tokenizer(),
            "tokenizer_3": tokenizer_3 if t5 else None,
            "transformer": SD3Transformer2DModel(
                sample_size=32,
                patch_size=2,
                in_channels=4,
                num_layers=1,
                attention_head_dim=8,
                num_attention_heads=4,
                joint_attention_dim=joint_dim,
                caption_projection_dim=32,
                pooled_projection_dim=2 * CLIP_DIM,
                out_channels=4,
                pos_embed_max_size=32,
            ),
            "vae": _vae(latent_channels=4),
        }
    return StableDiffusion3Img2ImgPipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), **components)


def hidden_states_shape(args, kwargs) -> tuple:
    """What instrument records of a FLUX or SD3 transformer call: its input latents' shape."""
    return tuple(kwargs["hidden_states"].shape)
