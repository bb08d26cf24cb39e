"""FP8 (e4m3) matrix products for the `fp8` tuning: the linear layers of the UNet's transformer
blocks (attention projections, feed-forward, SDXL's linear proj_in/out) as torch._scaled_mm.

Weights are scaled per tensor once, at load. Activations are scaled per tensor too: by their
absolute maximum on every call (dynamic), or by a scale fixed once from the maxima a calibration
call saw (static, `calibrate`). A dynamic scale costs a reduction over the activation before
every product, as much time as FP8 saves at SDXL's shapes (H100: bench/gpu, BENCHMARKS.md); a
static one is a multiply that torch.compile fuses into the kernel producing the activation, and
an activation beyond its calibrated range saturates at e4m3's largest value. Cross-attention's
key and value projections read the 77-token text context: too few rows for FP8 to pay, so they
stay. Convolutions stay in the pipeline's dtype: Hopper has no FP8 convolution in torch. Not
exact: the runner's outputs move (bench/gpu measures how far, BENCHMARKS.md).
"""

import contextlib

import torch

E4M3 = torch.float8_e4m3fn
E4M3_MAX = torch.finfo(E4M3).max
# The blocks whose linear layers take FP8.
FP8_BLOCKS = ("Transformer2DModel",)
# Projections of a cross-attention's context (the text encoder's tokens), left in 16 bits.
CONTEXT_PROJECTIONS = ("to_k", "to_v", "to_kv")
# A self-attention whose projections were fused keeps the unfused ones, no longer called (a
# cross-attention fuses its context projections only, and still calls to_q).
UNFUSED_PROJECTIONS = ("to_q", "to_k", "to_v")
# A static scale covers this multiple of the largest activation calibration saw: inputs a little
# beyond it keep their values, at the cost of one bit of e4m3's range at the bottom.
HEADROOM = 2.0


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
        # The activation's static scale (None: dynamic), and the largest |input| seen while calibrating.
        self.register_buffer("input_scale", None)
        self.calibrating = False
        self.register_buffer("input_amax", torch.zeros((), device=weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).contiguous()
        if self.input_scale is not None:
            scale = self.input_scale
        else:
            scale = _per_tensor_scale(rows)
            if self.calibrating:
                torch.maximum(self.input_amax, scale * E4M3_MAX, out=self.input_amax)
        rows_fp8 = (rows.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)
        out = torch._scaled_mm(rows_fp8, self.weight_fp8.t(), scale_a=scale, scale_b=self.weight_scale, bias=self.bias, out_dtype=x.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)


def fp8_linears(unet) -> list[tuple[torch.nn.Module, str, torch.nn.Linear]]:
    """(parent, attribute, linear) for each linear layer quantize_linears replaces: inside FP8_BLOCKS,
    both sides multiples of 16 (FP8 GEMMs need it); a cross-attention's context projections and the
    unused originals of fused projections left out."""
    found = []
    for block in unet.modules():
        if type(block).__name__ not in FP8_BLOCKS:
            continue
        for parent in block.modules():
            cross = getattr(parent, "is_cross_attention", False)
            fused = getattr(parent, "fused_projections", False)
            for attribute, child in parent.named_children():
                if (cross and attribute in CONTEXT_PROJECTIONS) or (fused and not cross and attribute in UNFUSED_PROJECTIONS):
                    continue
                if type(child) is torch.nn.Linear and child.in_features % 16 == 0 and child.out_features % 16 == 0:
                    found.append((parent, attribute, child))
    return found


def quantize_linears(unet) -> int:
    """Replace fp8_linears(unet) with Fp8Linear in place; return how many. Call fp8_refusal first on a GPU."""
    chosen = fp8_linears(unet)
    for parent, attribute, linear in chosen:
        setattr(parent, attribute, Fp8Linear(linear))
    return len(chosen)


def fp8_layers(module) -> list[Fp8Linear]:
    return [layer for layer in module.modules() if isinstance(layer, Fp8Linear)]


def calibrate(unet, run, headroom: float = HEADROOM) -> int:
    """Fix every Fp8Linear's activation scale from the inputs it sees during run() (eager, even
    where its blocks are compiled); return how many layers got one. A layer run() never reached
    stays dynamic."""
    layers = fp8_layers(unet)
    for layer in layers:
        layer.input_scale, layer.calibrating = None, True
        layer.input_amax.zero_()
    stance = torch.compiler.set_stance("force_eager") if hasattr(torch.compiler, "set_stance") else contextlib.nullcontext()
    try:
        with stance:
            run()
    finally:
        for layer in layers:
            layer.calibrating = False
    fixed = 0
    for layer in layers:
        if layer.input_amax > 0:
            layer.input_scale = (layer.input_amax.float() * headroom / E4M3_MAX).reshape(())
            fixed += 1
    return fixed


def use_dynamic_scales(unet) -> None:
    """Back to a scale per call on every Fp8Linear (undoes calibrate)."""
    for layer in fp8_layers(unet):
        layer.input_scale = None
