"""The UNet families: Stable Diffusion 1.x/2.x, SDXL and latent consistency models."""

from ..previews import SD15_RGB, SDXL_RGB
from .base import Family


class StableDiffusion(Family):
    """The image's size is the call's; the text encoder reads CLIP's 77 tokens."""

    name = "sd"
    latent_rgb = SD15_RGB
    tensor_io = True
    sized = False

    def compute_size(self, width: int, height: int) -> tuple[int, int]:
        # As given: the pipeline's image processor floors odd sides to the VAE's grid itself.
        return width, height


class StableDiffusionXL(StableDiffusion):
    """As SD, but a call without any negative prompt passes none: SDXL models that force zeros
    for an empty prompt (force_zeros_for_empty_prompt) then guide against zeros, as diffusers does."""

    name = "sdxl"
    latent_rgb = SDXL_RGB
    tokenizers = {"tokenizer": "text_encoder", "tokenizer_2": "text_encoder_2"}

    def batch_key(self, job) -> tuple:
        return (*super().batch_key(job), bool(job.negative_prompt))

    def guidance_kwargs(self, rows: list) -> dict:
        kwargs = super().guidance_kwargs(rows)
        if not any(job.negative_prompt for job in rows):
            kwargs["negative_prompt"] = None
        return kwargs


class LatentConsistency(StableDiffusion):
    """Guidance is an embedding of the scale (one UNet call a step), so there is no negative prompt."""

    name = "lcm"

    def guidance_kwargs(self, rows: list) -> dict:
        return {"guidance_scale": rows[0].guidance_scale}


SD_FAMILIES = (StableDiffusion(), StableDiffusionXL(), LatentConsistency())
