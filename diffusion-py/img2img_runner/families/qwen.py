"""Qwen-Image: an MMDiT on flow matching with a Qwen2.5-VL text encoder and true CFG.

guidance_scale is the pipelines' true_cfg_scale: above 1 each step runs the transformer twice
(prompt, then negative prompt; the pipelines combine them and rescale to the conditional
prediction's norm); at 1 or less once, and no negative prompt is passed. The pipelines' own
guidance_scale is for guidance-distilled transformers (guidance_embeds), which these families'
rules do not describe: such a transformer is refused, and no call passes it.
"""

import importlib.util

from .base import Family, UnsupportedModel

# What diffusers' docs pass for "no negative prompt" with true CFG (its docstring: "even an empty
# negative prompt like " " should enable classifier-free guidance"; its examples: negative_prompt=" ").
NO_NEGATIVE_PROMPT = " "


def _refuse_distilled(pipe, family: str) -> None:
    config = getattr(getattr(pipe, "transformer", None), "config", None)
    if getattr(config, "guidance_embeds", False):
        raise UnsupportedModel(
            f"{type(pipe).__name__} has a guidance-distilled transformer (guidance_embeds): the {family} family's "
            "guidance_scale is true CFG, which such a model does not take"
        )


class QwenImage(Family):
    """Qwen-Image img2img: prompt, negative prompt (true CFG only), strength, steps, guidance_scale.

    height and width are the rows' size: without them the pipeline computes at 1024x1024 whatever
    the image's size. The base batch key holds guidance_scale, so a call's rows agree on running
    true CFG; whether a row gave a negative prompt does not change the call (" " stands in).
    """

    name = "qwen-image"
    long_tokenizer = "tokenizer"

    def prompt_length(self, pipe, attribute: str, text: str) -> int:
        # The pipeline wraps the prompt in its template and drops the template's system part.
        template, dropped = pipe.prompt_template_encode, pipe.prompt_template_encode_start_idx
        return len(pipe.tokenizer(template.format(text)).input_ids) - dropped

    def prompt_limit(self, pipe, attribute: str) -> int:
        return min(self.rules.prompt_tokens, pipe.tokenizer_max_length)

    def serves(self, pipe) -> bool:
        if not super().serves(pipe):
            return False
        _refuse_distilled(pipe, self.name)
        return True

    def guidance_kwargs(self, rows: list) -> dict:
        head = rows[0]
        kwargs = {"true_cfg_scale": head.guidance_scale}
        if head.guidance_scale > 1:
            # One string per row: a single one would be encoded once, for a batch of one.
            kwargs["negative_prompt"] = [job.negative_prompt or NO_NEGATIVE_PROMPT for job in rows]
        return kwargs


def edit_processor_unavailable() -> str | None:
    """Why the edit pipelines cannot run here, or None: their Qwen2VLProcessor."""
    if importlib.util.find_spec("torchvision") is not None:
        return None
    return (
        "its Qwen2VLProcessor cannot be built without torchvision (transformers 5 requires the processor's "
        "Qwen2VLVideoProcessor, which needs torchvision, even for images), and torchvision is not installed"
    )


class QwenImageEdit(QwenImage):
    """Qwen-Image-Edit (and Edit Plus, 2509 and later): the input image is the reference, not a start.

    No strength (every step runs from noise); guidance as qwen-image. height and width are the
    rows' size, so the output keeps the input's aspect (without them the pipeline computes at about
    a megapixel); the reference itself is always scaled to about a megapixel (the pipelines' own
    choice, what the model was trained on) for the VAE, and smaller for the text encoder's view.

    Never batched: QwenImageEditPlusPipeline refuses more than one prompt a call (a list of images
    is one prompt's several references), and the batch key cannot see which pipeline serves.
    """

    name = "qwen-image-edit"

    def serves(self, pipe) -> bool:
        if not super().serves(pipe):
            return False
        reason = edit_processor_unavailable()
        if reason is None and getattr(pipe, "processor", None) is None:
            reason = "it has no processor (what shows the reference image to the text encoder)"
        if reason is not None:
            raise UnsupportedModel(f"{type(pipe).__name__} cannot be served: {reason}")
        return True

    def batch_key(self, job) -> tuple:
        return (*super().batch_key(job), job.id)


QWEN_FAMILIES = (QwenImage(), QwenImageEdit())
