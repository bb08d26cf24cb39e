"""The names of the built-in benchmark sources, apart from arch.py so that naming them costs no diffusers import."""

# Full-size architectures with random weights (arch.py): `sd15 sd15-arch` in model_names.txt.
ARCH_SOURCES = ("sd15-arch", "sdxl-arch", "flux-arch", "sd35-arch")
# The family each is of (families/).
ARCH_FAMILIES = {"sd15-arch": "sd", "sdxl-arch": "sdxl", "flux-arch": "flux", "sd35-arch": "sd3"}
