"""The base of every family: rules from common/params.json, sizes on the family's grid, batch keys."""

from ..params import LIMITS, FamilyRules


class UnsupportedModel(Exception):
    """A pipeline no family serves: the runner refuses it at start."""


class Family:
    """One family's pipeline call. Subclasses name their rules (`name`) and build the call."""

    name = ""
    # The runner may hand the batch to the pipeline as one tensor (Stable Diffusion's image processor).
    tensor_io = False
    # The call names its height and width (the DiT pipelines compute at 1024x1024 unless told)
    # and how many prompt tokens its text encoder reads.
    sized = True
    # The pipeline's tokenizers a prompt goes through, each with its text encoder's attribute.
    tokenizers = {"tokenizer": "text_encoder"}
    # The tokenizer that reads the family's prompt_tokens (its max_sequence_length); the others
    # (CLIP) read their own model_max_length.
    long_tokenizer: str | None = None
    # The projection of the family's latents to colours for previews (previews.py); None: no previews.
    latent_rgb = None

    @property
    def rules(self) -> FamilyRules:
        return LIMITS.families[self.name]

    def serves(self, pipe) -> bool:
        # The class or one it derives from (a wrapped pipeline is still of its family).
        return any(cls.__name__ in self.rules.pipelines for cls in type(pipe).__mro__)

    def compute_size(self, width: int, height: int) -> tuple[int, int]:
        """Each side to the nearest multiple of the family's grid (at least one): the size the pipeline computes at."""
        grid = self.rules.multiple
        return max(grid, round(width / grid) * grid), max(grid, round(height / grid) * grid)

    def batch_key(self, job) -> tuple:
        """Jobs with equal keys can share one pipeline call."""
        return (job.image.width, job.image.height, job.steps, job.strength, job.guidance_scale)

    def call_kwargs(self, pipe, rows: list) -> dict:
        """The pipeline call's arguments for these rows, all but the image, generators, output type and callbacks."""
        head = rows[0]
        kwargs = {"prompt": [job.prompt for job in rows], "num_inference_steps": head.steps, **self.guidance_kwargs(rows)}
        if "strength" in self.rules.applies:
            kwargs["strength"] = head.strength
        if self.sized:
            kwargs.update(height=head.image.height, width=head.image.width, max_sequence_length=self.rules.prompt_tokens)
        return kwargs

    def guidance_kwargs(self, rows: list) -> dict:
        """Classifier-free guidance: the scale, and a negative prompt a row (None and "" are the same unconditional prompt)."""
        return {"negative_prompt": [job.negative_prompt or "" for job in rows], "guidance_scale": rows[0].guidance_scale}

    def image_kwargs(self, images) -> dict:
        """How the input images enter the call (an img2img init image, or an edit's reference)."""
        return {"image": images}

    def prompt_length(self, pipe, attribute: str, text: str) -> int:
        """The tokens `text` is to this tokenizer as the pipeline encodes it, special tokens included."""
        return len(getattr(pipe, attribute)(text).input_ids)

    def prompt_limit(self, pipe, attribute: str) -> int:
        return self.rules.prompt_tokens if attribute == self.long_tokenizer else getattr(pipe, attribute).model_max_length

    def prompt_notes(self, pipe, job) -> list[str]:
        """One note for each prompt a text encoder reads only the start of (the pipelines cut the
        rest off without a word): the user sees in the job what the model did not read."""
        notes = []
        # Every family encodes a negative prompt only for classifier-free guidance (a scale above 1).
        negative = job.negative_prompt if job.guidance_scale > 1 else None
        for field, text in (("prompt", job.prompt), ("negative_prompt", negative)):
            for attribute, encoder in self.tokenizers.items():
                tokenizer = getattr(pipe, attribute, None)
                # A model without that encoder (SD3 without T5) reads nothing through it.
                if not text or tokenizer is None or getattr(pipe, encoder, None) is None:
                    continue
                count, limit = self.prompt_length(pipe, attribute, text), self.prompt_limit(pipe, attribute)
                note = f"{field}: {count} tokens for {type(tokenizer).__name__}, which reads {limit}: the rest was left out"
                if count > limit and note not in notes:
                    notes.append(note)
        return notes
