"""Model families: what each one's pipeline call takes, and how a job's parameters map onto it.

The rules a user sees (which fields apply, their defaults and ranges, how many denoising steps
run, the multiple sides are computed at, the prompt's token limit, the weights' dtype) are
common/params.json's `families`, which the API reads too (params.FamilyRules). A module here
holds what only code can say: the pipeline call of each family. family_of(pipe) picks a loaded
pipeline's family and refuses a pipeline no family serves, so that a model the runner cannot
serve right fails at start, never at its first job.
"""

from .base import Family, UnsupportedModel
from .flux import FLUX_FAMILIES
from .qwen import QWEN_FAMILIES
from .sd import SD_FAMILIES
from .sd3 import SD3_FAMILIES
from .zimage import ZIMAGE_FAMILIES

FAMILIES: dict[str, Family] = {family.name: family for family in (*SD_FAMILIES, *SD3_FAMILIES, *FLUX_FAMILIES, *QWEN_FAMILIES, *ZIMAGE_FAMILIES)}


def family_of(pipe) -> Family:
    """The family that serves this pipeline; UnsupportedModel names the class when none does."""
    declared = getattr(pipe, "_img2img_family", None)  # stand-ins say which family they mimic
    if declared is not None:
        return FAMILIES[declared]
    cls = type(pipe).__name__
    for family in FAMILIES.values():
        if family.serves(pipe):
            return family
    served = sorted({name for family in FAMILIES.values() for name in family.rules.pipelines})
    raise UnsupportedModel(f"{cls} is not a pipeline this runner serves (it serves {', '.join(served)})")


__all__ = ["FAMILIES", "Family", "UnsupportedModel", "family_of"]
