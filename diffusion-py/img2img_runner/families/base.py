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
