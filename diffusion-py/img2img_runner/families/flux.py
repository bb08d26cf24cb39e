"""FLUX.1: an MMDiT on flow matching whose guidance is distilled (one transformer call a step).

dev embeds the guidance scale in the transformer (guidance_embeds); schnell has no guidance at
all; Kontext edits: the input is a reference image the transformer attends to, not a start.
Neither takes a negative prompt: true CFG (true_cfg_scale > 1 with a negative prompt) would
double each step's work, and the families' rules have no field for it, so no call passes one.
"""

from ..params import LIMITS
from .base import Family


def _embeds_guidance(pipe) -> bool:
    transformer = getattr(pipe, "transformer", None)
    return bool(getattr(getattr(transformer, "config", None), "guidance_embeds", False))


def _of_classes(pipe, names) -> bool:
    return any(cls.__name__ in names for cls in type(pipe).__mro__)


# CLIP gives FLUX.1 its pooled vector, T5 the sequence the transformer attends to.
FLUX_TOKENIZERS = {"tokenizer": "text_encoder", "tokenizer_2": "text_encoder_2"}


class Flux(Family):
    """FLUX.1 [dev] img2img: prompt, strength, steps, guidance_scale (the embedded guidance)."""

    name = "flux"
    tokenizers = FLUX_TOKENIZERS
    long_tokenizer = "tokenizer_2"

    def serves(self, pipe) -> bool:
        # A transformer without the guidance embedding is schnell's: guidance would do nothing.
        return super().serves(pipe) and _embeds_guidance(pipe)

    def guidance_kwargs(self, rows: list) -> dict:
        return {"guidance_scale": rows[0].guidance_scale}


class FluxSchnell(Flux):
    """FLUX.1 [schnell]: the flux pipelines with a transformer that has no guidance embedding.

    Its rules list no pipeline classes of their own (the class is flux's): it serves flux's
    classes when the transformer has no guidance embedding.
    """

    name = "flux-schnell"

    def serves(self, pipe) -> bool:
        return _of_classes(pipe, LIMITS.families["flux"].pipelines) and not _embeds_guidance(pipe)

    def guidance_kwargs(self, rows: list) -> dict:
        return {}  # no embedding to take a scale


class FluxKontext(Family):
    """FLUX.1 Kontext [dev]: the image is the edit's reference; every step runs (no strength).

    The pipeline first rescales height x width to max_area pixels (1024x1024 by default) at the
    same aspect, and with _auto_resize it also snaps the reference to one of Kontext's preferred
    resolutions: max_area = the rows' pixels and _auto_resize off keep the compute size the one
    passed, so the output has the input's aspect and only the family's grid rounding.
    """

    name = "flux-kontext"
    tokenizers = FLUX_TOKENIZERS
    long_tokenizer = "tokenizer_2"

    def serves(self, pipe) -> bool:
        # guidance_scale applies to the family: a transformer without the embedding would ignore it.
        return super().serves(pipe) and _embeds_guidance(pipe)

    def guidance_kwargs(self, rows: list) -> dict:
        return {"guidance_scale": rows[0].guidance_scale}

    def call_kwargs(self, pipe, rows: list) -> dict:
        width, height = rows[0].image.size
        return {**super().call_kwargs(pipe, rows), "max_area": width * height, "_auto_resize": False}


FLUX_FAMILIES = (Flux(), FluxSchnell(), FluxKontext())
