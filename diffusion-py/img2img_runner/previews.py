"""Previews of a running job: its latents projected to colours by a fixed linear map (no VAE
call), at the latents' own resolution (an eighth of the image's side), as a small WebP. The
projection runs on the latents' device for every due row at once; the copy to the host and the
encoding happen off the thread that drives the GPU (Runner), so a preview never holds up a step.

The maps are ComfyUI's latent_rgb_factors (comfy/latent_formats.py): least-squares fits of
the VAE's decoded colours on the 4 latent channels of SD 1.x/2.x and SDXL. They apply to the
latents as the pipelines keep them (scaled by the VAE's scaling factor).
"""

import io
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

# Rows: latent channels; columns: R, G, B.
SD15_RGB = ((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721), (-0.2120, -0.2616, -0.7177))
SDXL_RGB = ((0.3920, 0.4054, 0.4549), (-0.2634, -0.0196, 0.0653), (0.0568, 0.1687, -0.0755), (-0.3112, -0.2359, -0.2076))
WEBP_QUALITY = 70
# libwebp's fastest method: a preview is 64x64 pixels, sent once and thrown away.
WEBP_METHOD = 0


def latent_pixels(latents: torch.Tensor, factors) -> torch.Tensor:
    """Rows of latents (n, C, h, w) as RGB pixels (n, h, w, 3), uint8 on the latents' device."""
    rgb = torch.einsum("nchw,cr->nhwr", latents.float(), torch.tensor(factors, dtype=torch.float32, device=latents.device))
    return ((rgb + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8)


def copy_to_host(pixels: torch.Tensor) -> Callable[[], np.ndarray]:
    """Starts the pixels' copy to the host without waiting for the GPU; the returned call waits
    for it (off the thread that drives the GPU) and gives the array."""
    if pixels.device.type != "cuda":
        array = pixels.numpy()
        return lambda: array
    host = torch.empty(pixels.shape, dtype=pixels.dtype, pin_memory=True)
    host.copy_(pixels, non_blocking=True)
    copied = torch.cuda.Event()
    copied.record()

    def wait() -> np.ndarray:
        copied.synchronize()
        return host.numpy()

    return wait


def webp(pixels: np.ndarray) -> bytes:
    """One preview's pixels (h, w, 3) as WebP."""
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="WEBP", quality=WEBP_QUALITY, method=WEBP_METHOD)
    return buffer.getvalue()
