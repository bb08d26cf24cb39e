"""Serve at once, compile behind (background.py), on CPU with the tiny pipeline and Dynamo alone (backend "eager")."""

import io

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from img2img_runner import background as background_module
from img2img_runner.frames import encode_frame, read_frame
from img2img_runner.models import load_pipeline
from img2img_runner.runner import FrameWriter, Runner
from img2img_runner.tuning import Tuning, apply_tuning
from img2img_runner.warmup import warm_up_background
from tests.helpers import call_tiny, job_header, on_each_call, png_bytes, sample_image

CPU = torch.device("cpu")
# Dynamo traces and guards as under Inductor, but runs the captured graphs eagerly: same bytes, seconds to compile.
DEFERRED = Tuning("test-deferred", compile_mode="default", compile_backend="eager", background=True)


def call(pipe, batch=2, steps=4):
    return call_tiny(pipe, batch=batch, steps=steps)


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def test_serves_eagerly_then_switches_to_the_compiled_forwards_between_calls(fresh_dynamo):
    pipe = load_pipeline("tiny", device=CPU)
    # The stock UNet forward, as full-size models have (tiny's runs sample by sample: a loop Dynamo unrolls per batch size).
    del pipe.unet.forward
    before = call(pipe)
    apply_tuning(pipe, DEFERRED, defer_compile=True)
    switches = background_module.switches_of(pipe)
    assert len(switches) == 3  # the UNet, the VAE's encoder and decoder
    batch, compile_thread = warm_up_background(pipe, CPU, max_batch=2)
    assert batch == 2
    assert all(not switch.recording for switch in switches)  # no job's tensors are ever kept
    assert compile_thread.wait(timeout=300) and not compile_thread.failed
    ended = []
    compile_thread.notify(lambda ok, seconds: ended.append((ok, seconds)))  # after the end: at once
    assert len(ended) == 1 and ended[0][0] is True and ended[0][1] > 0
    # Built, but not in service until the runner asks between two calls.
    assert all(switch.active is switch.eager for switch in switches)
    assert all(not switch.recorded for switch in switches)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > 0
    assert np.array_equal(call(pipe), before)
    assert counters["stats"]["unique_graphs"] == graphs  # eager calls compile nothing
    assert compile_thread.switch_if_ready()
    assert all(switch.active is switch.compiled for switch in switches)
    assert not compile_thread.switch_if_ready()  # once
    # The recorded warm-up covered what jobs at the native size need: no compilation while serving.
    assert np.array_equal(call(pipe, batch=2), before)
    call(pipe, batch=1)
    call(pipe, batch=3)
    assert counters["stats"]["unique_graphs"] == graphs


def test_a_failed_background_compile_keeps_serving_eagerly(monkeypatch, fresh_dynamo):
    pipe = load_pipeline("tiny", device=CPU)
    before = call(pipe)
    apply_tuning(pipe, DEFERRED, defer_compile=True)

    def broken(self):
        raise RuntimeError("the compiler fell over")

    monkeypatch.setattr(background_module.Switch, "replay", broken)
    _batch, compile_thread = warm_up_background(pipe, CPU, max_batch=2)
    ended = []
    compile_thread.notify(lambda ok, seconds: ended.append(ok))
    assert compile_thread.wait(timeout=60) and compile_thread.failed
    assert ended == [False]  # the runner's `compiled` frame says it stays eager
    assert not compile_thread.switch_if_ready()
    assert np.array_equal(call(pipe), before)


def test_compiled_at_once_without_defer(fresh_dynamo):
    pipe = load_pipeline("tiny", device=CPU)
    apply_tuning(pipe, DEFERRED)
    assert all(switch.active is switch.compiled for switch in background_module.switches_of(pipe))


class FakeBackground:
    """Ready after the first batch: the runner must switch before the second, never during one."""

    def __init__(self, log):
        self.log = log
        self.asked = 0

    def switch_if_ready(self):
        self.asked += 1
        self.log.append(f"asked-{self.asked}")
        return self.asked == 2


def test_the_runner_switches_between_batches():
    pipe = load_pipeline("tiny", device=CPU)
    log = []
    on_each_call(pipe, lambda kwargs: log.append("batch"))
    stream = io.BytesIO()
    for index in range(3):
        stream.write(encode_frame(job_header(f"job-{index}", seed=index, steps=4), png_bytes(sample_image(index))))
    stream.seek(0)
    out = io.BytesIO()
    fake = FakeBackground(log)
    runner = Runner(pipe, "tiny", CPU, max_batch=1, writer=FrameWriter(out), background=fake)
    # Jobs are decoded off the reader thread: wait for all three before serving, so batches follow each other.
    assert runner.serve(stream) == 0
    out.seek(0)
    results = []
    while (frame := read_frame(out)) is not None:
        results += [frame[0]["id"]] if frame[0]["type"] == "result" else []
    assert sorted(results) == ["job-0", "job-1", "job-2"]
    # Asked before each batch until it switched, then never again.
    assert log[:4] == ["asked-1", "batch", "asked-2", "batch"] and log.count("batch") == 3 and fake.asked == 2


def test_the_fast_tuning_compiles_its_blocks_behind_feature_caching(fresh_dynamo):
    # `fast` as the runner applies it (regional blocks, feature caching, tiny VAE, background), Dynamo alone.
    import dataclasses

    from img2img_runner.tuning import TUNINGS

    pipe = load_pipeline("tiny", device=CPU)
    del pipe.unet.forward  # the stock UNet forward, as full-size models have
    pipe._img2img_source = "sd15-arch"  # a benchmark source: its tiny VAE has random weights
    tuning = dataclasses.replace(TUNINGS["fast"], compile_backend="eager", fuse_qkv=False, cudnn_attention=False, cudnn_benchmark=False)
    with torch._dynamo.config.patch(recompile_limit=64):
        apply_tuning(pipe, tuning, defer_compile=True)
        assert type(pipe.vae).__name__ == "AutoencoderTiny"
        _batch, compile_thread = warm_up_background(pipe, CPU, max_batch=2)
        assert compile_thread.wait(timeout=300) and not compile_thread.failed
        eager = call(pipe)
        graphs = counters["stats"]["unique_graphs"]
        assert graphs > 0
        assert compile_thread.switch_if_ready()
        assert np.array_equal(call(pipe), eager)
        call(pipe, batch=1)
        call(pipe, batch=3)
        assert counters["stats"]["unique_graphs"] == graphs


def test_the_largest_batch_is_compiled_in_the_background_too(fresh_dynamo):
    # The first compilation's guards bound the batch (here convolution backend choices cap it
    # below 32 UNet rows): the compile thread runs the largest batch too, so no job compiles.
    pipe = load_pipeline("tiny", device=CPU)
    del pipe.unet.forward
    apply_tuning(pipe, DEFERRED, defer_compile=True)
    _batch, compile_thread = warm_up_background(pipe, CPU, max_batch=16)
    assert compile_thread.wait(timeout=300) and compile_thread.switch_if_ready()
    graphs = counters["stats"]["unique_graphs"]
    call(pipe, batch=16, steps=2)
    assert counters["stats"]["unique_graphs"] == graphs


def test_cudnn_benchmark_is_left_off_for_the_eager_warm_up_and_switched_on_by_the_compile_thread(fresh_dynamo):
    # A process-wide flag: benchmarking each new convolution shape of the eager warm-up would delay the
    # ready frame; the compiled path gets it as measured. (On CPU the flag only records the setting.)
    import dataclasses

    original = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    try:
        pipe = load_pipeline("tiny", device=CPU)
        apply_tuning(pipe, dataclasses.replace(DEFERRED, cudnn_benchmark=True), defer_compile=True)
        assert torch.backends.cudnn.benchmark is False
        during_warm_up = []
        on_each_call(pipe, lambda kwargs: during_warm_up.append(torch.backends.cudnn.benchmark))
        _batch, compile_thread = warm_up_background(pipe, CPU, max_batch=2)
        assert compile_thread.wait(timeout=300) and not compile_thread.failed
        assert during_warm_up and not any(during_warm_up)  # the warm-up's calls, all before the thread started
        assert torch.backends.cudnn.benchmark is True
    finally:
        torch.backends.cudnn.benchmark = original


def test_a_shutdown_during_the_background_compile_leaves_at_once(monkeypatch):
    # Interpreter teardown under a compile thread still in Inductor crashed the runner (SIGSEGV) on an H200.
    import logging
    import threading
    import types

    from img2img_runner import cli as entry

    exits = []
    monkeypatch.setattr(entry.os, "_exit", exits.append)
    monkeypatch.setattr(entry.logging, "shutdown", lambda: exits.append("logs flushed"))
    log = logging.getLogger("img2img_runner")
    compiling = types.SimpleNamespace(done=threading.Event())
    entry._leave(0, compiling, log)
    assert exits == ["logs flushed", 0]
    compiling.done.set()
    assert entry._leave(3, compiling, log) == 3
    assert entry._leave(0, None, log) == 0
    assert exits == ["logs flushed", 0]
