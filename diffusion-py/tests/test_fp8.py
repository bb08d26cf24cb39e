"""The fp8 tuning's CPU-checkable parts: which layers it takes, the FP8 product against the exact one,
and its refusal where FP8 matrix products cannot run."""

import dataclasses

import pytest
import torch

from img2img_runner import fp8
from img2img_runner.fp8 import Fp8Linear, fp8_linears, fp8_refusal, quantize_linears
from img2img_runner.models import load_pipeline
from img2img_runner.tuning import TUNINGS, apply_tuning, for_dit, refusal


@pytest.fixture()
def tiny():
    return load_pipeline("tiny", device=torch.device("cpu"))


def test_the_fp8_tuning_is_the_regional_exact_one_with_fp8_linears():
    assert dataclasses.replace(TUNINGS["fp8"], name="regional", fp8=False) == TUNINGS["regional"]
    assert [name for name, tuning in TUNINGS.items() if tuning.fp8] == ["fp8"]
    # A transformer model takes the exact part only.
    assert not for_dit(TUNINGS["fp8"]).fp8


def test_an_fp8_linear_stays_within_e4m3_precision_of_the_exact_product():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32)
    x = torch.randn(2, 5, 64)
    exact = linear(x)
    out = Fp8Linear(linear)(x)
    assert out.shape == exact.shape and out.dtype == exact.dtype
    # e4m3 keeps 3 mantissa bits (relative step 1/8): the products' errors mostly cancel in the sums.
    relative = (out - exact).norm() / exact.norm()
    assert 0 < relative < 0.08
    # The weight is stored in 8 bits with its scale, and the bias is the Linear's own.
    layer = Fp8Linear(linear)
    assert layer.weight_fp8.dtype == fp8.E4M3 and layer.weight_scale.numel() == 1
    assert torch.equal(layer.bias, linear.bias.detach())


def test_an_fp8_linear_without_bias_and_with_a_zero_input():
    linear = torch.nn.Linear(32, 16, bias=False)
    layer = Fp8Linear(linear)
    assert layer.bias is None
    assert torch.equal(layer(torch.zeros(3, 32)), torch.zeros(3, 16))


def test_quantize_linears_takes_the_transformer_blocks_linears_only(tiny):
    unet = tiny.unet
    chosen = fp8_linears(unet)
    assert chosen and all(type(linear) is torch.nn.Linear for _, _, linear in chosen)
    # The time embedding's linears sit outside the transformer blocks: they stay.
    outside = [m for m in unet.time_embedding.modules() if isinstance(m, torch.nn.Linear)]
    assert outside and not any(linear is m for _, _, linear in chosen for m in outside)
    count = quantize_linears(unet)
    assert count == len(chosen)
    assert sum(isinstance(m, Fp8Linear) for m in unet.modules()) == count
    assert not fp8_linears(unet)


def test_the_quantized_unet_stays_near_the_exact_one(tiny):
    torch.manual_seed(1)
    unet = tiny.unet
    config = unet.config
    sample = torch.randn(1, config.in_channels, 8, 8)
    text = torch.randn(1, 7, config.cross_attention_dim)
    with torch.no_grad():
        exact = unet(sample, 10, encoder_hidden_states=text).sample
        quantize_linears(unet)
        out = unet(sample, 10, encoder_hidden_states=text).sample
    relative = ((out - exact).norm() / exact.norm()).item()
    assert 0 < relative < 0.1


def test_the_tuning_is_refused_with_a_reason_where_fp8_cannot_run(tiny, monkeypatch):
    assert "CUDA GPU" in fp8_refusal(torch.device("cpu"))
    assert refusal(TUNINGS["fp8"], tiny) == fp8_refusal(torch.device("cpu"))
    assert refusal(TUNINGS["compile"], tiny) is None
    with pytest.raises(RuntimeError, match="tuning fp8: FP8 matrix products need a CUDA GPU, this is cpu"):
        apply_tuning(tiny, TUNINGS["fp8"])
    # Refused before anything changed: the pipeline is as it was loaded.
    assert not any(isinstance(m, Fp8Linear) for m in tiny.unet.modules())
    assert not hasattr(tiny, "_img2img_tuning") and type(tiny.unet.attn_processors[next(iter(tiny.unet.attn_processors))]).__name__ == "AttnProcessor2_0"
    # A GPU older than Ada.
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100")
    assert fp8_refusal(torch.device("cuda", 0)) == "FP8 matrix products need compute capability 8.9 or more (Ada, Hopper, Blackwell); NVIDIA A100 has 8.0"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert fp8_refusal(torch.device("cuda", 0)) is None
    # A torch without the FP8 product.
    monkeypatch.delattr(torch, "_scaled_mm")
    assert fp8_refusal(torch.device("cuda", 0)).endswith("has no torch._scaled_mm")


def test_a_cross_attentions_context_projections_stay_in_16_bits(tiny):
    chosen = {(type(parent).__name__, attribute, getattr(parent, "is_cross_attention", False)) for parent, attribute, _ in fp8_linears(tiny.unet)}
    assert ("Attention", "to_q", True) in chosen and ("Attention", "to_k", False) in chosen
    assert not any(cross and attribute in fp8.CONTEXT_PROJECTIONS for _, attribute, cross in chosen)


def test_calibration_fixes_each_layers_scale_from_the_largest_input_it_saw():
    torch.manual_seed(2)
    layer = Fp8Linear(torch.nn.Linear(32, 16))
    unused = Fp8Linear(torch.nn.Linear(32, 16))
    model = torch.nn.ModuleList([layer, unused])
    small, large = torch.randn(4, 32), 3 * torch.randn(4, 32)
    assert fp8.calibrate(model, lambda: [layer(small), layer(large)], headroom=2.0) == 1
    assert layer.input_scale.item() == pytest.approx(2.0 * max(small.abs().max(), large.abs().max()).item() / fp8.E4M3_MAX)
    assert unused.input_scale is None  # never reached: stays dynamic
    # Static scaling stays near the exact product; beyond the calibrated range values saturate.
    exact = torch.nn.functional.linear(large, layer.weight_fp8.float() * layer.weight_scale, layer.bias)
    assert ((layer(large) - exact).norm() / exact.norm()) < 0.08
    huge = torch.full((1, 32), 1e4)
    assert torch.isfinite(layer(huge)).all()
    fp8.use_dynamic_scales(model)
    assert layer.input_scale is None


def test_the_runner_calibrates_the_tiny_unet_in_one_call(tiny):
    from img2img_runner.warmup import calibrate_fp8

    quantize_linears(tiny.unet)
    fixed = calibrate_fp8(tiny, torch.device("cpu"), (64, 64))
    assert fixed == len(fp8.fp8_layers(tiny.unet)) > 0
    assert all(layer.input_scale > 0 and not layer.calibrating for layer in fp8.fp8_layers(tiny.unet))


def test_fused_projections_take_fp8_and_their_unused_originals_do_not(tiny):
    tiny.fuse_qkv_projections()
    chosen = {(attribute, parent.is_cross_attention) for parent, attribute, _ in fp8_linears(tiny.unet) if hasattr(parent, "is_cross_attention")}
    # Self-attention: the fused to_qkv; cross-attention: to_q (its fused to_kv reads the text context).
    assert chosen == {("to_qkv", False), ("to_q", True)}
