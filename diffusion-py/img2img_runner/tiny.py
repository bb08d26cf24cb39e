"""A toy-sized Stable Diffusion img2img pipeline with seeded random weights.

It has the real SD architecture (CLIP text encoder, UNet with cross attention,
KL VAE with 8x downscaling, DDIM scheduler) so the runner, batching, progress
and cancel paths are exercised for real, but it is built from configs in well
under a second and never downloads anything.

Its UNet runs one sample at a time so that a job's output bytes never depend
on its batch-mates: CPU kernels (oneDNN conv, MKL gemm) pick different code
paths, hence different float rounding, for different batch sizes. The text
encoder is row-wise (77 tokens per prompt) and models.load_pipeline turns on
VAE slicing (one image per decode), so the loaded toy pipeline is
batch-invariant and tests can compare a batched job with the same job run
alone, byte for byte.
"""

import functools

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionImg2ImgPipeline, UNet2DConditionModel
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

WEIGHT_SEED = 0
TEXT_DIM = 32
MAX_TOKENS = 77
BOS = "<|startoftext|>"
EOS = "<|endoftext|>"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode char table (byte-level BPE alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table = {}
    extra = 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            # Bytes without a printable glyph are shifted past 255, as in CLIP.
            table[byte] = chr(256 + extra)
            extra += 1
    return table


def build_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer with no merges: every byte is one token, so any text encodes."""
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + [BOS, EOS]
    vocab = {token: index for index, token in enumerate(tokens)}
    # Built in memory (vocab dict + empty merges), equivalent to vocab.json and a
    # merges.txt holding only the "#version: 0.2" header.
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=MAX_TOKENS)


def _text_encoder(vocab_size: int, bos_id: int, eos_id: int) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TEXT_DIM,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )
    return CLIPTextModel(config)


def _per_sample(forward):
    """Wrap a UNet forward so each sample of the batch is computed on its own (see module doc)."""

    @functools.wraps(forward)
    def run(sample, timestep, encoder_hidden_states, *args, return_dict=True, **kwargs):
        per_step = torch.is_tensor(timestep) and timestep.numel() > 1
        outputs = []
        for index in range(sample.shape[0]):
            outputs.append(
                forward(
                    sample[index : index + 1],
                    timestep[index : index + 1] if per_step else timestep,
                    encoder_hidden_states[index : index + 1],
                    *args,
                    return_dict=False,
                    **kwargs,
                )[0]
            )
        stacked = torch.cat(outputs)
        return UNet2DConditionOutput(sample=stacked) if return_dict else (stacked,)

    return run


def _unet() -> UNet2DConditionModel:
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        # Attention only at the lower resolution: a 512x512 job stays about a second on CPU.
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    # An instance attribute, so the model class (and save_pretrained) stay stock.
    unet.forward = _per_sample(unet.forward)
    return unet


def _vae() -> AutoencoderKL:
    # Four blocks -> three 2x downsamples -> vae_scale_factor 8, as in SD.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )


def _scheduler() -> DDIMScheduler:
    # SD v1 noise schedule; DDIM has order 1 so one callback per denoising step.
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def build_tiny_pipeline() -> StableDiffusionImg2ImgPipeline:
    tokenizer = build_tokenizer()
    # fork_rng keeps the caller's global RNG untouched while weights are seeded.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(WEIGHT_SEED)
        text_encoder = _text_encoder(
            vocab_size=len(tokenizer), bos_id=tokenizer.bos_token_id, eos_id=tokenizer.eos_token_id
        )
        unet = _unet()
        vae = _vae()
    return StableDiffusionImg2ImgPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
