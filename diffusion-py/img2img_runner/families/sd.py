"""The UNet families: Stable Diffusion 1.x/2.x, SDXL and latent consistency models."""

from .base import Family


class StableDiffusion(Family):
    name = "sd"
    tensor_io = True

    def compute_size(self, width: int, height: int) -> tuple[int, int]:
        # As given: the pipeline's image processor floors odd sides to the VAE's grid itself.
        return width, height

    def call_kwargs(self, pipe, rows: list) -> dict:
        head = rows[0]
        return {
            "prompt": [job.prompt for job in rows],
            # None and "" give the same unconditional embedding; a list must be all strings.
            "negative_prompt": [job.negative_prompt or "" for job in rows],
            "strength": head.strength,
            "num_inference_steps": head.steps,
            "guidance_scale": head.guidance_scale,
        }


class StableDiffusionXL(StableDiffusion):
    """As SD, but a call without any negative prompt passes none: SDXL models that force zeros
    for an empty prompt (force_zeros_for_empty_prompt) then guide against zeros, as diffusers does."""

    name = "sdxl"

    def batch_key(self, job) -> tuple:
        return (*super().batch_key(job), bool(job.negative_prompt))

    def call_kwargs(self, pipe, rows: list) -> dict:
        kwargs = super().call_kwargs(pipe, rows)
        if not any(job.negative_prompt for job in rows):
            kwargs["negative_prompt"] = None
        return kwargs


class LatentConsistency(StableDiffusion):
    """Guidance is an embedding of the scale (one UNet call a step), so there is no negative prompt."""

    name = "lcm"

    def call_kwargs(self, pipe, rows: list) -> dict:
        kwargs = super().call_kwargs(pipe, rows)
        del kwargs["negative_prompt"]
        return kwargs


SD_FAMILIES = (StableDiffusion(), StableDiffusionXL(), LatentConsistency())
