"""The fast CUDA path for full-size pipelines: the UNet families (SD 1.5, SDXL and their kin)
and the diffusion-transformer (DiT) families (FLUX.1, SD3, Qwen-Image, Z-Image): the tunings
(TUNINGS) and apply_tuning, which sets one up on a loaded pipeline.

Measured on an H100 against the out-of-the-box pipeline (bench/gpu/;
bench/NOTES.md, the GPU sections), SD 1.5 img2img 512x512, 15 steps:

- what pays: torch.compile (Inductor, default mode) of the UNet and of the VAE
  encoder and decoder (1.7x at batch 16-32: fused GroupNorm / SiLU / residual
  adds, fewer launches), and batching (the runner's job); the runner's tensor
  I/O and threaded PNG encoding keep the CPU off the GPU's critical path;
- measured neutral, kept (the configuration the runner was measured with):
  fused QKV projections, cuDNN attention first, cudnn.benchmark,
  channels_last under the compiler (in eager mode channels_last was slower,
  so the `eager` tuning leaves it out);
- not the default: max-autotune (its first call compiled for over 400 s on
  the H200), CUDA graphs for exact mode (the `graphs` tuning: no gain at batch
  24 on the H200; `fastest`, whose steps are short, replays them: graphs.py),
  bf16 (+2% on the H200, but pixels up to 14 off fp16's: not exact),
  and the trades of the opt-in `fast`, `faster` and `fastest` tunings (feature
  caching, the tiny VAE, guidance in the first steps only: not exact,
  BENCHMARKS.md) and of `fp8` (FP8 linears in the transformer blocks with
  activation scales calibrated at start, fp8.py: not exact; SDXL 1.18x on the H100).
The UNet's batch dimension is compiled dynamic, so one compilation serves
batch sizes 1 to 31; a new image size compiles again on its first job. By
default the compilation runs in a background thread behind an eager warm-up
(warmup.py, background.py): the runner takes jobs in seconds and switches to
the compiled path when it is ready.

A DiT pipeline takes the same tunings, applied to what it has (apply_tuning):
the transformer's repeated blocks (REPEATED_BLOCKS) compiled one by one,
whatever the tuning's `regional` says (the glue around them, a few small
kernels a step, stays eager; so does the VAE); fused QKV projections only
where the fused attention keeps the model's function (FUSED_QKV_MODELS);
cuDNN attention first. The UNet-only trades (feature caching, the tiny VAE,
guidance in the first steps only) are left out, and the tuning recorded on
the pipeline says so. Measured on an H100: bench/NOTES.md, "GPU: the DiT
families".

Nothing here runs for the CPU path or for the `tiny` model: they stay exactly
as models.load_pipeline makes them.
"""

import dataclasses
import logging
import os
from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend

from . import deepcache, fp8, graphs
from .background import Switch
from .sources import ARCH_SOURCES

log = logging.getLogger("img2img_runner")


@dataclass(frozen=True)
class Tuning:
    name: str
    fuse_qkv: bool = False
    channels_last: bool = False
    compile_mode: str | None = None  # torch.compile mode for the UNet and VAE; None: eager
    cudnn_benchmark: bool = False  # let cuDNN time its convolution algorithms per shape
    cudnn_attention: bool = False  # SDPA tries cuDNN's attention first (then flash, efficient, math)
    inductor_layout_optimization: bool = True  # Inductor may switch convolutions to channels_last itself
    tiny_vae: bool = False  # benchmark only: swaps the KL VAE for a TAESD-sized AutoencoderTiny
    # Regional compilation: compile the repeated blocks (REGION_CLASSES) one by one instead of
    # the whole UNet and VAE; identical blocks share one compiled graph, so less is compiled.
    regional: bool = False
    # Report ready after an eager warm-up and compile in a background thread (background.py).
    background: bool = False
    # DeepCache interval (deepcache.py): every Nth denoising step runs the whole UNet; 0: off.
    feature_cache: int = 0
    # Shallow layers a cached step still runs (deepcache.py): 1 is DeepCache's shallowest branch.
    feature_cache_layers: int = 1
    compile_backend: str = "inductor"  # tests use "eager" (Dynamo alone) on CPU
    # Batch sizes every pipeline call is padded up to (Runner): CUDA graphs record one graph per size.
    buckets: tuple[int, ...] = ()
    # Share of a call's denoising steps that keep classifier-free guidance (guidance.py); 1: all of them.
    guidance_share: float = 1.0
    # The UNet's transformer-block linears as FP8 matrix products (fp8.py): Ada, Hopper or newer.
    fp8: bool = False
    # UNet calls replayed from CUDA graphs once the compiled path serves (graphs.py), every call
    # padded up to a batch bucket (graphs.graph_buckets of the max batch, when `buckets` is empty).
    cuda_graphs: bool = False
    # Jobs per pipeline call at most; 0: warmup.BATCH_CAP (the exact UNet gains nothing past it).
    batch_cap: int = 0

    def __post_init__(self):
        if not 0 < self.guidance_share <= 1:
            raise ValueError(f"guidance_share is a share of the steps in (0, 1], not {self.guidance_share}")


EXACT = dict(fuse_qkv=True, channels_last=True, compile_mode="default", cudnn_benchmark=True, cudnn_attention=True)

FAST = dict(EXACT, regional=True, background=True, feature_cache=3, feature_cache_layers=1, tiny_vae=True)
FASTER = dict(FAST, feature_cache=5)

TUNINGS = {
    # The pipeline as diffusers builds it (fp16, SDPA): the baseline.
    "off": Tuning("off"),
    # No compiler: starts in seconds. NCHW: in eager mode channels_last made the
    # UNet step 12% and the VAE 25% slower on the H100 (bench/gpu, sd15-ref).
    "eager": Tuning("eager", fuse_qkv=True, cudnn_benchmark=True, cudnn_attention=True),
    # The default on CUDA: the best measured settings, ready after an eager warm-up, compiled behind it.
    "compile": Tuning("compile", **EXACT, background=True),
    # The same, compiled before the ready frame (benchmarks measure a cold compile with it).
    "compile-first": Tuning("compile-first", **EXACT),
    # The same settings, compiling the repeated blocks instead of whole networks (a shorter cold compile).
    "regional": Tuning("regional", **EXACT, regional=True, background=True),
    # Inductor also benchmarks Triton matmul templates against cuBLAS: minutes more of compilation.
    "autotune": Tuning("autotune", **{**EXACT, "compile_mode": "max-autotune-no-cudagraphs"}, background=True),
    # CUDA graphs (Inductor's reduce-overhead) over padded batch buckets: launch overhead gone, one
    # graph per bucket recorded in the warm-up. Compiled first: a capture must not race eager work.
    # H200: 0.99x the compiled throughput at batch 24 (launches were not the limit there).
    "graphs": Tuning("graphs", **{**EXACT, "compile_mode": "reduce-overhead"}, buckets=(1, 2, 4, 8, 16, 24)),
    # Opt-in per model (model_names.txt `tuning=fast`): not exact. Deep features reused for two
    # steps of three (DeepCache's shallowest branch), and a TAESD-sized tiny VAE; bench/gpu
    # measures the speed-up and the deviation (BENCHMARKS.md).
    "fast": Tuning("fast", **FAST),
    # The same trade pushed further: one full step in five (3 of 15 denoising steps).
    "faster": Tuning("faster", **FASTER),
    # And guidance in the first third of the steps only (guidance.py): the last ten of 15 run the
    # conditional branch alone, on half the UNet rows (in the last third only, it gained nothing).
    # Its UNet calls replay CUDA graphs: most of its steps run few kernels on half the rows, and the
    # GPU waited on the CPU's launches for a fifth of a call.
    # Its batches go to 48: with most steps cheap, a larger batch still pays (H100: 33.8 against
    # 31.3 img/s at 48 and 24 without graphs; 37.0 against 33.9 with them).
    "fastest": Tuning("fastest", **FASTER, guidance_share=1 / 3, cuda_graphs=True, batch_cap=48),
    # Opt-in, not exact: the exact settings with the UNet's transformer-block linears in FP8 (fp8.py),
    # their activation scales calibrated by one eager call before the warm-up (warmup.calibrate_fp8);
    # refused on a GPU without FP8 matrix products.
    "fp8": Tuning("fp8", **EXACT, regional=True, background=True, fp8=True),
}
DEFAULT_TUNING = "compile"


def tuning_of(pipe) -> Tuning:
    """The Tuning apply_tuning gave this pipeline; TUNINGS["off"] for one it never tuned."""
    return getattr(pipe, "_img2img_tuning", None) or TUNINGS["off"]


def is_dit(pipe) -> bool:
    """A diffusion-transformer pipeline: a `transformer` network where the SD families have their UNet."""
    return getattr(pipe, "unet", None) is None and isinstance(getattr(pipe, "transformer", None), torch.nn.Module)


def wants_tuning(model: str, device: torch.device, pipe) -> bool:
    """Full-size UNet and DiT pipelines on CUDA are tuned; the tiny model and the CPU path never are."""
    return device.type == "cuda" and model != "tiny" and hasattr(pipe, "vae") and (hasattr(pipe, "unet") or is_dit(pipe))


# Blocks compiled one by one under the `regional` tuning. In SD 1.5's UNet the 16
# Transformer2DModel and 22 ResnetBlock2D instances come in about 4 and 14
# distinct shapes; the VAE's encoder and decoder repeat ResnetBlock2D too.
# The glue between them (conv_in/out, down/upsamplers, skip concatenations,
# time embedding) stays eager. A tiny VAE's two halves (plain convolutions
# and ReLUs, no repeated block worth sharing) are compiled whole.
REGION_CLASSES = ("Transformer2DModel", "ResnetBlock2D", "EncoderTiny", "DecoderTiny")
# Distinct shapes per compiled code object (ResnetBlock2D: UNet and VAE together)
# before Dynamo would give up and run a block eagerly.
REGION_RECOMPILE_LIMIT = 128


# Transformers whose fused QKV projection computes the same function: FLUX.1's attention
# processors read the fused weights and then apply its RMS norms. SD3's fused processor
# (FusedJointAttnProcessor2_0) skips the query/key RMS norms SD 3.5 has; Qwen-Image's and
# Z-Image's processors never read fused weights (fusing would only add a copy of them).
FUSED_QKV_MODELS = ("FluxTransformer2DModel",)


def repeated_blocks(transformer) -> list:
    """The transformer's repeated blocks: the classes it declares in `_repeated_blocks` (diffusers'
    regional compilation), else the classes of its block stacks (its own ModuleLists: SD3 declares none)."""
    names = getattr(transformer, "_repeated_blocks", None)
    if not names:
        names = {type(block).__name__ for child in transformer.children() if isinstance(child, torch.nn.ModuleList) for block in child}
    return [module for module in transformer.modules() if type(module).__name__ in names]


def compile_targets(pipe, tuning: Tuning) -> list:
    """The modules whose forwards are compiled: the UNet and the VAE halves, or their repeated blocks;
    a DiT's repeated blocks."""
    if is_dit(pipe):
        return repeated_blocks(pipe.transformer)
    if not tuning.regional:
        targets = [pipe.unet]
        if hasattr(pipe.vae, "encoder"):
            targets += [pipe.vae.encoder, pipe.vae.decoder]
        return targets
    return [module for root in (pipe.unet, pipe.vae) for module in root.modules() if type(module).__name__ in REGION_CLASSES]


def _regional_dynamo_config(static_shapes: bool = True) -> None:
    """Dynamo's settings for compiled blocks. static_shapes (the UNet's blocks): only the marked
    batch dimension is dynamic, so a block of another width compiles its own static graph instead
    of turning channels dynamic. A DiT's blocks of a class all have one width, and a new token
    count (another image size, Qwen-Image's prompt lengths) should make that dimension dynamic
    once rather than compile a graph per count: Dynamo's automatic dynamic shapes are on."""
    import torch._dynamo.config as dynamo_config  # Dynamo: seconds to import, for the compiled path only

    dynamo_config.automatic_dynamic_shapes = not static_shapes
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), REGION_RECOMPILE_LIMIT))


# A model folder's tiny VAE (TAESD weights for its latent space, e.g. madebyollin/taesd for SD 1.5).
TINY_VAE_FOLDER = "vae_tiny"


def tiny_vae_for(pipe, source: str | None):
    """The tiny VAE of the `fast` tuning, or None: the model's own (SOURCE/vae_tiny), random for the benchmark models.

    A random tiny VAE on a real model would turn its images into noise, so a model
    without TAESD weights keeps its full VAE.
    """
    if source in ARCH_SOURCES:
        from .arch import tiny_vae_like  # arch imports diffusers: seconds, for the fast tunings only

        return tiny_vae_like(pipe.vae, pipe.device, pipe.dtype)
    folder = os.path.join(source, TINY_VAE_FOLDER) if source else None
    if folder is None or not os.path.isfile(os.path.join(folder, "config.json")):
        log.warning("no %s/ in the model's folder (%s): keeping the full VAE", TINY_VAE_FOLDER, source)
        return None
    from diffusers import AutoencoderTiny  # seconds to import, for the fast tunings only

    return AutoencoderTiny.from_pretrained(folder, torch_dtype=pipe.dtype, local_files_only=True).to(pipe.device).eval()


def prefer_cudnn_attention() -> bool:
    """SDPA priority: cuDNN first, then the default order; shapes cuDNN refuses (the VAE's) fall through."""
    if not hasattr(torch._C, "_set_sdp_priority_order"):
        return False
    torch.backends.cuda.enable_cudnn_sdp(True)
    first = [int(SDPBackend.CUDNN_ATTENTION), int(SDPBackend.FLASH_ATTENTION), int(SDPBackend.EFFICIENT_ATTENTION)]
    rest = [backend for backend in torch._C._get_sdp_priority_order() if backend not in first]
    torch._C._set_sdp_priority_order(first + rest)
    return True


def for_dit(tuning: Tuning) -> Tuning:
    """The part of a tuning a DiT pipeline takes: the UNet-only trades left out."""
    unet_only = {"feature_cache": 0, "tiny_vae": False, "guidance_share": 1.0, "fp8": False, "cuda_graphs": False}
    dropped = [name for name, off in unet_only.items() if getattr(tuning, name) != off]
    if not dropped:
        return tuning
    log.warning("tuning %s: %s apply to UNet models only: left out for this transformer", tuning.name, ", ".join(dropped))
    return dataclasses.replace(tuning, **unet_only)


def _fuse_qkv(pipe, vae: bool) -> None:
    if not is_dit(pipe):
        # Also sets FusedAttnProcessor2_0 (SDPA) on the UNet and the KL VAE.
        pipe.fuse_qkv_projections(vae=vae)
    elif type(pipe.transformer).__name__ in FUSED_QKV_MODELS:
        pipe.transformer.fuse_qkv_projections()


def refusal(tuning: Tuning, pipe) -> str | None:
    """Why this pipeline's device cannot run the tuning (FP8 needs Ada, Hopper or newer), or None."""
    takes_fp8 = tuning.fp8 and not is_dit(pipe)  # a transformer leaves FP8 out (for_dit)
    return fp8.fp8_refusal(pipe.device) if takes_fp8 else None


def apply_tuning(pipe, tuning: Tuning, defer_compile: bool = False):
    """Apply a Tuning to a loaded pipeline in place (weights stay as they are).

    Compiled modules get a background.Switch as their forward: compiled at once
    (their first call compiles), or, with defer_compile, eager until
    warmup.warm_up_background's thread has compiled them. cudnn_benchmark and
    cudnn_attention are process-wide switches: the runner serves one pipeline a process.
    A DiT pipeline takes what applies to it (module doc).
    """
    dit = is_dit(pipe)
    if dit:
        tuning = for_dit(tuning)
    refused = refusal(tuning, pipe)
    if refused:
        raise RuntimeError(f"tuning {tuning.name}: {refused}")
    # Deferred: the compile thread switches it on (background.py); the eager warm-up skips seconds of benchmarking.
    if tuning.cudnn_benchmark and not defer_compile:
        torch.backends.cudnn.benchmark = True
    if tuning.cudnn_attention and not prefer_cudnn_attention():
        log.warning("this torch cannot set the SDPA priority order: cuDNN attention not preferred")
    tiny_vae = tiny_vae_for(pipe, getattr(pipe, "_img2img_source", None)) if tuning.tiny_vae else None
    if tiny_vae is not None:
        pipe.vae = tiny_vae
        pipe.register_modules(vae=tiny_vae)
    if tuning.fuse_qkv:
        _fuse_qkv(pipe, vae=tiny_vae is None)
    # A DiT's VAE stays eager, where channels_last was the slower layout (module doc).
    if tuning.channels_last and not dit:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if tuning.fp8:
        log.info("fp8: %d linear layers of the UNet's transformer blocks run in FP8", fp8.quantize_linears(pipe.unet))
    switches = []
    if tuning.compile_mode:
        import torch._inductor.config as inductor_config  # Inductor: seconds to import, for the compiled path only

        # 1x1 convolutions (the attention blocks' proj_in/out, the VAE's shortcuts) as matmuls.
        inductor_config.conv_1x1_as_mm = True
        inductor_config.layout_optimization = tuning.inductor_layout_optimization
        if tuning.regional or dit:
            _regional_dynamo_config(static_shapes=not dit)
        switches = [Switch(module, tuning.compile_mode, tuning.compile_backend) for module in compile_targets(pipe, tuning)]
        log.info("compiling %d modules%s", len(switches), " in the background" if defer_compile else "")
        if not defer_compile:
            for switch in switches:
                switch.use_compiled()
    # Inside feature caching's wrapper: a graph is chosen after the cache has decided the step's role.
    graphed = graphs.install(pipe.unet) if tuning.cuda_graphs else None
    if tuning.feature_cache:
        # Outside the compiled forwards: the step counter must not be traced.
        cache = deepcache.install(pipe.unet, pipe.scheduler, tuning.feature_cache, tuning.feature_cache_layers)
        if graphed is not None:
            graphed.cache = cache
    if graphed is not None and switches and not defer_compile:
        graphed.enable()
    pipe._img2img_graphs = graphed  # enabled by the background compile's switch (background.py)
    pipe._img2img_switches = switches
    # Read by the warm-ups: the tuning is part of the compile cache's key.
    pipe._img2img_tuning = tuning
    return pipe

