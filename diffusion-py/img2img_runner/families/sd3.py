"""Stable Diffusion 3: an MMDiT on flow matching, with classifier-free guidance."""

from .base import Family


class StableDiffusion3(Family):
    """Prompt, negative prompt (CFG above a guidance scale of 1), strength, steps, guidance.

    height and width are the rows' size: without them the pipeline resizes the image to the
    transformer's default sample size (1024x1024 for SD3) whatever its size. A model without its
    T5 encoder (text_encoder_3 None) is served as diffusers does: zeros in the T5 tokens' place.
    """

    name = "sd3"
    tokenizers = {"tokenizer": "text_encoder", "tokenizer_2": "text_encoder_2", "tokenizer_3": "text_encoder_3"}
    long_tokenizer = "tokenizer_3"


SD3_FAMILIES = (StableDiffusion3(),)
