"""Tiny random-weight Qwen-Image, Qwen-Image-Edit and Z-Image pipelines, built offline.

The real diffusers classes (transformer, VAE, scheduler, pipeline) and the real transformers
text encoders (Qwen2.5-VL with its vision tower, Qwen3) with toy configs: the config numbers
are those of diffusers' own tests (tests/pipelines/qwenimage/test_qwenimage_img2img.py,
test_qwenimage_edit.py, tests/pipelines/z_image/test_z_image_img2img.py), except that both
VAEs downsample three times (vae_scale_factor 8 and a 16-pixel grid, as the real ones), the edit
processor sees a few thousand pixels, and the vocabulary is the byte-level one below instead of
Qwen's 151k tokens. Tokenizers are built in memory: a
byte-level BPE without merges (every byte one token) plus the special tokens the pipelines'
prompt templates use, so nothing comes from the hub.
"""

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLQwenImage,
    FlowMatchEulerDiscreteScheduler,
    QwenImageEditPipeline,
    QwenImageEditPlusPipeline,
    QwenImageImg2ImgPipeline,
    QwenImageTransformer2DModel,
    ZImageImg2ImgPipeline,
    ZImageTransformer2DModel,
)
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2TokenizerFast,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen3Config,
    Qwen3Model,
)

from img2img_runner.tiny import _bytes_to_unicode

WEIGHT_SEED = 0
TEXT_DIM = 16
EOS = "<|endoftext|>"
# The tokens Qwen's chat templates and Qwen2-VL's processor use (pipeline_qwenimage*.py prompt_template_encode).
SPECIAL = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
# Qwen3's chat template, reduced to what ZImage*Pipeline._encode_prompt renders (one user turn, generation prompt).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined and not enable_thinking %}"
    "<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


def build_tokenizer() -> Qwen2TokenizerFast:
    """Qwen2's byte-level BPE with no merges: any text encodes, one token a byte."""
    chars = list(_bytes_to_unicode().values())
    vocab = {char: index for index, char in enumerate(chars)}
    for token in (EOS, *SPECIAL):
        vocab[token] = len(vocab)
    tokenizer = Qwen2TokenizerFast(vocab=vocab, merges=[], chat_template=CHAT_TEMPLATE, model_max_length=32768)
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL)})
    return tokenizer


def _qwen_vl_encoder(tokenizer) -> Qwen2_5_VLForConditionalGeneration:
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": TEXT_DIM,
            "intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0,
            "vocab_size": len(tokenizer),
            "bos_token_id": None,
            "eos_token_id": ids(EOS),
            "pad_token_id": ids(EOS),
        },
        vision_config={"depth": 2, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": TEXT_DIM},
        hidden_size=TEXT_DIM,
        vocab_size=len(tokenizer),
        bos_token_id=None,
        eos_token_id=ids(EOS),
        pad_token_id=ids(EOS),
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def _qwen_transformer() -> QwenImageTransformer2DModel:
    return QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=TEXT_DIM,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )


def _qwen_vae() -> AutoencoderKLQwenImage:
    z_dim = 4
    # Three downsamples, as Qwen-Image's VAE: vae_scale_factor 8, sides on a 16-pixel grid.
    return AutoencoderKLQwenImage(
        base_dim=z_dim * 4,
        z_dim=z_dim,
        dim_mult=[1, 1, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * z_dim,
        latents_std=[1.0] * z_dim,
    )


def _processor(tokenizer) -> Qwen2VLProcessor:
    """The edit pipelines' processor: needs torchvision (transformers 5 builds its video processor with it)."""
    from transformers import Qwen2VLVideoProcessor

    # Few pixels for the text encoder's view of the reference (the real one allows 12.8 megapixels).
    image_processor = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=56 * 56 * 2, patch_size=14, merge_size=2, temporal_patch_size=2)
    return Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor())


def build_qwen_image(edit: str | None = None, processor: bool = True):
    """QwenImageImg2ImgPipeline; edit="edit" or "edit-plus": QwenImageEditPipeline or
    QwenImageEditPlusPipeline, with processor=False without its processor (None)."""
    tokenizer = build_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(WEIGHT_SEED)
        transformer = _qwen_transformer()
        vae = _qwen_vae()
        text_encoder = _qwen_vl_encoder(tokenizer)
    parts = dict(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(), text_encoder=text_encoder, tokenizer=tokenizer)
    if edit is None:
        return QwenImageImg2ImgPipeline(**parts)
    cls = {"edit": QwenImageEditPipeline, "edit-plus": QwenImageEditPlusPipeline}[edit]
    return cls(**parts, processor=_processor(tokenizer) if processor else None)


def build_z_image() -> ZImageImg2ImgPipeline:
    tokenizer = build_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(WEIGHT_SEED)
        transformer = ZImageTransformer2DModel(
            all_patch_size=(2,),
            all_f_patch_size=(1,),
            in_channels=16,
            dim=32,
            n_layers=2,
            n_refiner_layers=1,
            n_heads=2,
            n_kv_heads=2,
            norm_eps=1e-5,
            qk_norm=True,
            cap_feat_dim=TEXT_DIM,
            rope_theta=256.0,
            t_scale=1000.0,
            axes_dims=[8, 4, 4],
            axes_lens=[1024, 32, 32],  # the first axis holds the caption: room for 512 tokens
        )
        # Three downsamples (vae_scale_factor 8, as Z-Image's FLUX VAE): sides on a 16-pixel grid.
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D"] * 4,
            up_block_types=["UpDecoderBlock2D"] * 4,
            block_out_channels=[16, 16, 32, 32],
            layers_per_block=1,
            latent_channels=16,
            norm_num_groups=16,
            sample_size=32,
            scaling_factor=0.3611,
            shift_factor=0.1159,
        )
        text_encoder = Qwen3Model(
            Qwen3Config(
                hidden_size=TEXT_DIM,
                intermediate_size=16,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_key_value_heads=2,
                vocab_size=len(tokenizer),
                max_position_embeddings=1024,
                bos_token_id=None,
                eos_token_id=tokenizer.convert_tokens_to_ids(EOS),
                pad_token_id=tokenizer.convert_tokens_to_ids(EOS),
            )
        )
    return ZImageImg2ImgPipeline(
        transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(), text_encoder=text_encoder, tokenizer=tokenizer
    )


def rows_and_latents(args, kwargs) -> tuple:
    """What instrument records of a transformer call: how many rows it computed and one row's latent shape."""
    if "hidden_states" in kwargs:  # Qwen-Image: packed latents (rows, tokens, channels)
        latents = kwargs["hidden_states"]
        return latents.shape[0], tuple(latents.shape[1:])
    latents = args[0]  # Z-Image: a list of (channels, frames, height, width) latents, one a row
    return len(latents), tuple(latents[0].shape)
