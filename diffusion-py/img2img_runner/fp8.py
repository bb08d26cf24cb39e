"""FP8 (e4m3) matrix products for the `fp8` tuning: the linear layers of the UNet's transformer
blocks (attention projections, feed-forward, SDXL's linear proj_in/out) as torch._scaled_mm.

Weights are scaled per tensor once, at load; activations are scaled per tensor on every call
(their absolute maximum), in plain tensor code that torch.compile traces and fuses into the
kernels around it. Convolutions stay in the pipeline's dtype: Hopper has no FP8 convolution
in torch. Not exact: the runner's outputs move (bench/gpu measures how far, BENCHMARKS.md).
"""

import torch

E4M3 = torch.float8_e4m3fn
E4M3_MAX = torch.finfo(E4M3).max
# The blocks whose linear layers take FP8.
FP8_BLOCKS = ("Transformer2DModel",)


def fp8_refusal(device: torch.device) -> str | None:
    """Why this device cannot run FP8 matrix products, or None when it can."""
    if not hasattr(torch, "_scaled_mm"):
        return f"torch {torch.__version__} has no torch._scaled_mm"
    if device.type != "cuda":
        return f"FP8 matrix products need a CUDA GPU, this is {device.type}"
    capability = torch.cuda.get_device_capability(device)
    if capability < (8, 9):
        name = torch.cuda.get_device_name(device)
        return f"FP8 matrix products need compute capability 8.9 or more (Ada, Hopper, Blackwell); {name} has {capability[0]}.{capability[1]}"
    return None


def _per_tensor_scale(values: torch.Tensor) -> torch.Tensor:
    return (values.abs().amax().float() / E4M3_MAX).clamp(min=1e-12)


class Fp8Linear(torch.nn.Module):
    """A Linear whose product runs in FP8: the weight stored as e4m3 with its scale, the input cast per call."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        scale = _per_tensor_scale(weight)
        # (out, in) row-major: its transpose is the column-major second operand _scaled_mm wants.
        self.register_buffer("weight_fp8", (weight.float() / scale).to(E4M3))
        self.register_buffer("weight_scale", scale)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).contiguous()
        scale = _per_tensor_scale(rows)
        rows_fp8 = (rows.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)
        out = torch._scaled_mm(rows_fp8, self.weight_fp8.t(), scale_a=scale, scale_b=self.weight_scale, bias=self.bias, out_dtype=x.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)


def fp8_linears(unet) -> list[tuple[torch.nn.Module, str, torch.nn.Linear]]:
    """(parent, attribute, linear) for each linear layer quantize_linears replaces: inside FP8_BLOCKS,
    both sides multiples of 16 (FP8 GEMMs need it)."""
    found = []
    for block in unet.modules():
        if type(block).__name__ not in FP8_BLOCKS:
            continue
        for parent in block.modules():
            for attribute, child in parent.named_children():
                if type(child) is torch.nn.Linear and child.in_features % 16 == 0 and child.out_features % 16 == 0:
                    found.append((parent, attribute, child))
    return found


def quantize_linears(unet) -> int:
    """Replace fp8_linears(unet) with Fp8Linear in place; return how many. Call fp8_refusal first on a GPU."""
    chosen = fp8_linears(unet)
    for parent, attribute, linear in chosen:
        setattr(parent, attribute, Fp8Linear(linear))
    return len(chosen)
