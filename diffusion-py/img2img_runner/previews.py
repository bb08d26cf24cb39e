"""Previews of a running job: its latents projected to colours by a fixed linear map (no VAE
call), at the latents' own resolution (an eighth of the image's side), as a small WebP.

The maps are ComfyUI's latent_rgb_factors (comfy/latent_formats.py): least-squares fits of
the VAE's decoded colours on the 4 latent channels of SD 1.x/2.x and SDXL. They apply to the
latents as the pipelines keep them (scaled by the VAE's scaling factor).
"""

import io

import torch
from PIL import Image

# Rows: latent channels; columns: R, G, B.
SD15_RGB = ((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721), (-0.2120, -0.2616, -0.7177))
SDXL_RGB = ((0.3920, 0.4054, 0.4549), (-0.2634, -0.0196, 0.0653), (0.0568, 0.1687, -0.0755), (-0.3112, -0.2359, -0.2076))
WEBP_QUALITY = 70


def latent_rgb(latents: torch.Tensor, factors) -> Image.Image:
    """One job's latents (C, h, w) as an RGB image of h x w pixels."""
    rgb = torch.einsum("chw,cr->hwr", latents.float(), torch.tensor(factors, dtype=torch.float32, device=latents.device))
    pixels = ((rgb + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
    return Image.fromarray(pixels, mode="RGB")


def preview_webp(latents: torch.Tensor, factors) -> bytes:
    buffer = io.BytesIO()
    latent_rgb(latents, factors).save(buffer, format="WEBP", quality=WEBP_QUALITY)
    return buffer.getvalue()
