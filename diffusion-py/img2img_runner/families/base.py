"""The base of every family: rules from common/params.json, sizes on the family's grid, batch keys."""

from ..params import LIMITS, FamilyRules


class UnsupportedModel(Exception):
    """A pipeline no family serves: the runner refuses it at start."""


class Family:
    """One family's pipeline call. Subclasses name their rules (`name`) and build the call."""

    name = ""
    # The runner may hand the batch to the pipeline as one tensor (Stable Diffusion's image processor).
    tensor_io = False

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
        raise NotImplementedError

    def image_kwargs(self, images) -> dict:
        """How the input images enter the call (an img2img init image, or an edit's reference)."""
        return {"image": images}
