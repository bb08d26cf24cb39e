"""Z-Image: a single-stream DiT on flow matching with a Qwen3 text encoder.

guidance_scale is classifier-free guidance as the other families have it (Imagen's w: uncond +
w * (cond - uncond), 1 is the conditional prediction alone). ZImage*Pipeline writes its CFG as
cond + g * (cond - uncond), that is g = w - 1, and runs it (two transformer rows a job) whenever
g > 0: the call passes g = max(0, w - 1), so 1 or less is one transformer row a job and no
negative prompt. (Z-Image's own examples give g: their guidance_scale=4 is 5 here; Turbo's 0 is
1 or less.)
"""

from .base import Family


def pipeline_guidance(guidance_scale: float) -> float:
    """The pipeline's guidance_scale for the service's: 0 (CFG off) at 1 or less."""
    return max(0.0, guidance_scale - 1.0)


class ZImage(Family):
    """Prompt, negative prompt (with CFG only), strength, steps, guidance_scale.

    height and width are the rows' size (the pipeline takes the preprocessed image's otherwise,
    the same here: the rows are on the family's grid already). The base batch key holds
    guidance_scale, so a call's rows agree on running CFG.
    """

    name = "z-image"
    long_tokenizer = "tokenizer"

    def prompt_length(self, pipe, attribute: str, text: str) -> int:
        # The pipeline encodes the prompt inside its chat template, and the template's tokens count.
        chat = pipe.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True, enable_thinking=True
        )
        return len(pipe.tokenizer(chat).input_ids)

    def guidance_kwargs(self, rows: list) -> dict:
        guidance = pipeline_guidance(rows[0].guidance_scale)
        # With CFG off no negative prompt is encoded at all.
        return {**super().guidance_kwargs(rows), "guidance_scale": guidance} if guidance > 0 else {"guidance_scale": 0.0, "negative_prompt": None}


ZIMAGE_FAMILIES = (ZImage(),)
