"""FP8 matmuls for the benchmarks (bench/gpu sd15-fp8*): not part of any tuning.

On the H200 with torch 2.11 and torchao 0.18 the eager UNet got slower (separate
scaling and cast kernels) and Dynamo could not trace torchao's FP8 tensors, so
nothing compiled (bench/NOTES.md).
"""

import logging

import torch

log = logging.getLogger("img2img_runner")

# The blocks whose linear layers FP8 takes: attention projections and feed-forward.
FP8_BLOCKS = ("Transformer2DModel",)


def fp8_linears(unet) -> list:
    """The linear layers quantize_fp8 converts: inside FP8_BLOCKS, both sides multiples of 16 (FP8 GEMMs need it)."""
    return [
        module
        for block in unet.modules()
        if type(block).__name__ in FP8_BLOCKS
        for module in block.modules()
        if isinstance(module, torch.nn.Linear) and module.in_features % 16 == 0 and module.out_features % 16 == 0
    ]


def fp8_convolutions(unet) -> list:
    """The resnet blocks' convolutions with both channel counts multiples of 16 (quantize_fp8's convolutions)."""
    return [
        module
        for block in unet.modules()
        if type(block).__name__ == "ResnetBlock2D"
        for module in block.modules()
        if isinstance(module, torch.nn.Conv2d) and module.in_channels % 16 == 0 and module.out_channels % 16 == 0
    ]


def quantize_fp8(unet, convolutions: bool = False) -> int:
    """FP8 weights and dynamically scaled FP8 activations for fp8_linears(unet); return how many were converted.

    With convolutions, fp8_convolutions(unet) instead. Needs torchao and a GPU of compute
    capability 8.9 or more (Ada, Hopper); elsewhere it logs why and leaves the UNet as it
    is, so the caller goes on in the pipeline's dtype.
    """
    device = unet.device
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 9):
        log.warning("fp8: needs a CUDA GPU of compute capability 8.9 or more, this is %s: not quantized", device)
        return 0
    try:  # torchao is optional (not in requirements.txt): imported only once the GPU qualifies
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, PerTensor, quantize_
    except ImportError as exc:
        log.warning("fp8: torchao is not importable (%s): not quantized", exc)
        return 0
    modules = fp8_convolutions(unet) if convolutions else fp8_linears(unet)
    chosen = {id(module) for module in modules}
    # torchao scales per row only bf16 weights (and convolutions only per tensor).
    granularity = PerRow() if unet.dtype == torch.bfloat16 and not convolutions else PerTensor()
    quantize_(unet, Float8DynamicActivationFloat8WeightConfig(granularity=granularity), filter_fn=lambda module, _name: id(module) in chosen)
    log.info("fp8: %d %s quantized (%s)", len(chosen), "convolutions" if convolutions else "linear layers", type(granularity).__name__)
    return len(chosen)

