"""UNet calls replayed from CUDA graphs (graphs.py, the `fastest` tuning): selection and signatures
on CPU; the replayed pipeline against the same pipeline without graphs on a GPU."""

import dataclasses

import numpy as np
import pytest
import torch

from img2img_runner import cli, compile_cache, deepcache, graphs, guidance
from img2img_runner.models import load_pipeline
from img2img_runner.tuning import TUNINGS, for_dit
from tests.helpers import call_tiny


def test_buckets_are_powers_of_two_then_the_max_batch():
    assert graphs.graph_buckets(24) == (1, 2, 4, 8, 16, 24)
    assert graphs.graph_buckets(16) == (1, 2, 4, 8, 16)
    assert graphs.graph_buckets(1) == (1,)


def test_fastest_replays_graphs_over_buckets_and_the_flag_turns_them_off():
    fastest = TUNINGS["fastest"]
    assert fastest.cuda_graphs and not TUNINGS["compile"].cuda_graphs
    assert cli._buckets(fastest, 24) == (1, 2, 4, 8, 16, 24)
    assert cli._buckets(TUNINGS["faster"], 24) == ()
    assert cli._buckets(TUNINGS["graphs"], 24) == TUNINGS["graphs"].buckets
    assert cli._parse_args(["--model", "sd15", "--no-cuda-graphs"]).no_cuda_graphs
    assert not cli._parse_args(["--model", "sd15"]).no_cuda_graphs
    # A transformer takes no UNet graphs.
    assert not for_dit(fastest).cuda_graphs


def test_graphs_leave_the_compile_cache_key_alone():
    # The same compiled code serves a runner with and without graphs: one cache entry.
    fastest = TUNINGS["fastest"]
    fields = [compile_cache.pipeline_fields(object(), tuning, 24, (512, 512)) for tuning in (fastest, dataclasses.replace(fastest, cuda_graphs=False))]
    assert fields[0] == fields[1]


def test_a_signature_tells_shapes_values_and_the_cache_role_apart():
    sample, text = torch.zeros(4, 4, 8, 8), torch.zeros(4, 77, 32)
    base = graphs.signature((sample, torch.tensor(10)), {"encoder_hidden_states": text, "return_dict": False})
    # Another timestep's value is the same graph: tensors are copied in.
    assert graphs.signature((sample + 1, torch.tensor(9)), {"encoder_hidden_states": text, "return_dict": False}) == base
    assert graphs.signature((torch.zeros(2, 4, 8, 8), torch.tensor(10)), {"encoder_hidden_states": text[:2], "return_dict": False}) != base
    assert graphs.signature((sample.half(), torch.tensor(10)), {"encoder_hidden_states": text, "return_dict": False}) != base
    assert graphs.signature((sample.to(memory_format=torch.channels_last), torch.tensor(10)), {"encoder_hidden_states": text, "return_dict": False}) != base
    assert graphs.signature((sample, torch.tensor(10)), {"encoder_hidden_states": text, "return_dict": True}) != base
    cache = deepcache.DeepCache(3, 1, 2)
    full = graphs.signature((sample,), {}, cache)
    cache.skip = True
    cached = graphs.signature((sample,), {}, cache)
    cache.layers = 2
    assert len({full, cached, graphs.signature((sample,), {}, cache)}) == 3


def test_until_enabled_calls_run_as_before():
    module = torch.nn.Linear(3, 2)
    expected = module(torch.ones(1, 3))
    graphed = graphs.install(module)
    with torch.inference_mode():
        assert torch.equal(module(torch.ones(1, 3)), expected)
    assert graphed.graphs == {} and graphed.captures == 0


def stock_pipeline(device):
    pipe = load_pipeline("tiny", device=device)
    # The tiny model runs its UNet sample by sample (an instance forward); graphs wrap the stock forward.
    del pipe.unet.forward
    return pipe


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_replayed_calls_match_the_same_pipeline_without_graphs():
    """Feature caching and the guidance cut, as `fastest` runs them: every step's role and the cached
    feature handed from a full step's graph to the cached steps' graphs, over two batch sizes."""
    pipe = stock_pipeline(torch.device("cuda"))
    graphed = graphs.install(pipe.unet)
    graphed.cache = deepcache.install(pipe.unet, pipe.scheduler, interval=5)
    options = guidance.call_kwargs(pipe, 1 / 3)

    def calls():
        return [call_tiny(pipe, batch=batch, steps=15, strength=1.0, **options) for batch in (2, 4, 2)]

    plain = calls()
    graphed.enable()
    first = calls()  # captures
    again = calls()  # replays
    assert graphed.captures == 6  # UNet rows 2, 4 and 8 (guided 2 and 4 jobs, unguided 2 and 4) x (full, cached)
    for expected, captured, replayed in zip(plain, first, again):
        assert np.array_equal(expected, captured)
        assert np.array_equal(expected, replayed)
