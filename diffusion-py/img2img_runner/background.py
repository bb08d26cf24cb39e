"""Serve at once, compile in the background (a runner ready in seconds, not minutes).

Every module the tuning compiles (the whole UNet and VAE halves, or the
repeated blocks under regional compilation) gets a Switch as its forward. The
switch runs the module eagerly until its compiled forward is ready. The runner
warms up and measures its batch size eagerly (seconds), reports ready and
serves jobs eagerly, while a thread compiles: it loads the compile cache's
artifacts, then drives each compiled forward with the inputs its switch
recorded during the eager warm-up (one call per distinct shape class: batch 1
and batch > 1, which the dynamic batch dimension covers), saves what it
compiled, and marks itself done. The runner flips every switch to the
compiled forward between two batches, never inside a pipeline call.

Only the warm-up's gray images are recorded; recording stops before the first
job. A compilation that fails leaves the runner serving eagerly (and moves a
cache entry that was loaded aside), never stops it.
"""

import logging
import threading
import time

import torch

from . import compile_cache

log = logging.getLogger("img2img_runner")


def _tensors(values):
    """The tensors in values (a tensor, or a tuple, list or dict of them, nested), in call order."""
    if isinstance(values, dict):
        values = list(values.values())
    if isinstance(values, (tuple, list)):
        for value in values:
            yield from _tensors(value)
    elif torch.is_tensor(values):
        yield values


def call_batch(args, kwargs) -> int:
    """A call's batch size: the leading dimension of its first tensor (the hidden states or latents).

    Only tensors with that leading dimension are the batch's: a transformer block also takes
    inputs the batch does not change (FLUX.1's rotary embedding: one row a token).
    """
    first = next((value for value in _tensors((args, kwargs)) if value.dim() > 0), None)
    return 1 if first is None else first.shape[0]


def _mark_batch_dynamic(batch: int, *values) -> None:
    for value in values:
        if isinstance(value, dict):
            _mark_batch_dynamic(batch, *value.values())
        elif batch > 1 and torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == batch:
            torch._dynamo.maybe_mark_dynamic(value, 0)


def _batched(call) -> bool:
    """Whether a recorded call (args, kwargs) has a batch over 1."""
    return call_batch(*call) > 1


def _repeat_batch(values, times: int, batch: int):
    """values (a tuple, list or dict, nested) with every tensor of the batch (leading dimension
    `batch`) repeated `times` along dim 0, layout kept."""
    if isinstance(values, dict):
        return {key: _repeat_batch(value, times, batch) for key, value in values.items()}
    if isinstance(values, (tuple, list)):
        return type(values)(_repeat_batch(value, times, batch) for value in values)
    if torch.is_tensor(values) and values.dim() > 0 and values.shape[0] == batch:
        layout = torch.channels_last if values.dim() == 4 and values.is_contiguous(memory_format=torch.channels_last) and not values.is_contiguous() else torch.contiguous_format
        return torch.cat([values] * times).contiguous(memory_format=layout)
    return values


def _shape_class(args, kwargs) -> tuple:
    """Shapes of the tensor inputs with the batch dimension as '1' or 'N': one compiled graph each."""

    def shape(value):
        if isinstance(value, dict):
            return tuple(sorted((key, shape(item)) for key, item in value.items()))
        if torch.is_tensor(value):
            if value.dim() == 0:
                return ()
            return ("1" if value.shape[0] == 1 else "N", *value.shape[1:])
        return None

    return tuple(shape(value) for value in args), tuple(sorted((key, shape(value)) for key, value in kwargs.items()))


class Switch:
    """A module's forward: eager until switched to its compiled forward."""

    def __init__(self, module, mode: str, backend: str = "inductor"):
        self.eager = module.forward
        self.mode = mode
        self.backend = backend
        self.compiled = None
        self.active = self.eager
        self.recording = False
        self.recorded: dict[tuple, tuple] = {}
        module.forward = self

    def __call__(self, *args, **kwargs):
        if self.recording:
            self.recorded.setdefault(_shape_class(args, kwargs), (args, kwargs))
        return self.active(*args, **kwargs)

    def compile(self) -> None:
        """Build the compiled forward (compilation itself happens at its first call)."""
        if self.compiled is None:
            compiled = torch.compile(self.eager, mode=self.mode, backend=self.backend, fullgraph=False)

            def forward(*args, **kwargs):
                # One graph serves every batch size > 1.
                _mark_batch_dynamic(call_batch(args, kwargs), *args, *kwargs.values())
                return compiled(*args, **kwargs)

            self.compiled = forward

    def use_compiled(self) -> None:
        self.compile()
        self.active = self.compiled

    def replay(self, largest: int = 1) -> int:
        """Run the compiled forward on the recorded inputs (compiling it); return how many calls.

        A batch > 1 call is also run at the size the largest batch gives this module (a
        size the first compilation's guards exclude recompiles here, not in a job). The
        warm-up runs 1 image, then 2: a module that saw a batch of 1 (the VAE) got its
        first batch > 1 from the 2-image call; one that never did (the guided UNet: two
        rows an image) got it from the 1-image call.
        """
        self.compile()
        calls = 0
        saw_single = any(not _batched(call) for call in self.recorded.values())
        times = -(-largest // 2) if saw_single else largest
        for args, kwargs in self.recorded.values():
            self.compiled(*args, **kwargs)
            calls += 1
            batch = call_batch(args, kwargs)
            if times > 1 and batch > 1:
                self.compiled(*_repeat_batch(args, times, batch), **_repeat_batch(kwargs, times, batch))
                calls += 1
        return calls


def _trace_fx_once() -> None:
    """Run, on this (the serving) thread, the one FX symbolic trace Inductor makes per process.

    torch.fx's Tracer patches torch.nn.Module.__call__ process-wide while it traces;
    Inductor traces a dummy module once (torch._inductor.loop_body, cached), and an
    eager call on the serving thread at that moment went into the tracer and failed
    ("module is not installed as a submodule", seen on the H200). Done here, the
    compile thread never traces with FX.
    """
    try:  # Inductor: seconds to import, and a private module other torch versions may lack
        from torch._inductor.loop_body import InterpreterShim

        InterpreterShim._dummy_gm()
    except Exception:  # another torch: nothing to warm
        log.warning("could not pre-trace Inductor's FX dummy module", exc_info=True)


def switches_of(pipe) -> list[Switch]:
    return getattr(pipe, "_img2img_switches", [])


class BackgroundCompile:
    """The compile thread, and the flip to compiled forwards when the runner asks between batches."""

    def __init__(self, pipe, device: torch.device, cache, max_batch: int = 1, cudnn_benchmark: bool = False):
        _trace_fx_once()
        self.switches = switches_of(pipe)
        self.graphs = getattr(pipe, "_img2img_graphs", None)  # graphs.GraphedForward: captures once switched
        self.cudnn_benchmark = cudnn_benchmark
        self.max_batch = max_batch
        self.device = device
        self.cache = cache  # compile_cache.CompileCache or None
        self.done = threading.Event()
        self.failed = False
        self.switched = False
        self.seconds = None
        self._notify = None
        self._notify_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="background-compile", daemon=True)

    def start(self) -> "BackgroundCompile":
        for switch in self.switches:
            switch.recording = False
        self._thread.start()
        return self

    def _compile_all(self) -> int:
        calls = 0
        with torch.inference_mode():
            for switch in self.switches:
                calls += switch.replay(self.max_batch)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return calls

    def _run(self) -> None:
        started = time.perf_counter()
        if self.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True  # left off by apply_tuning(defer_compile=True): the compiled path's setting
        try:
            if self.cache is not None:
                self.cache.load()
            try:
                calls = self._compile_all()
            except Exception:
                if self.cache is None or self.cache.status != compile_cache.HIT:
                    raise
                log.exception("background compile failed with the cached artifacts: moving them aside, compiling from scratch")
                self.cache.quarantine("the background compile failed with these artifacts loaded")
                compile_cache.compile_from_scratch()
                for switch in self.switches:
                    switch.compiled = None
                self.cache = None
                calls = self._compile_all()
            self.seconds = time.perf_counter() - started
            log.info("background compile took %.1fs (%d recorded calls); compiler: %s", self.seconds, calls, compile_cache.compile_stats())
            if self.cache is not None:
                self.cache.save(compile_seconds=self.seconds)
        except Exception:
            self.failed = True
            log.exception("background compile failed: serving eagerly")
        finally:
            for switch in self.switches:
                switch.recorded.clear()  # the warm-up's tensors are not needed any more
            if self.seconds is None:
                self.seconds = time.perf_counter() - started
            with self._notify_lock:
                self.done.set()
                notify = self._notify
            if notify is not None:
                notify(not self.failed, self.seconds)

    def notify(self, callback) -> None:
        """callback(ok, seconds) once the compile has ended (at once if it has): the runner's
        `compiled` frame, after which the consumer uploads the compile cache's new entry."""
        with self._notify_lock:
            self._notify = callback
            ended = self.done.is_set()
        if ended:
            callback(not self.failed, self.seconds)

    def switch_if_ready(self) -> bool:
        """Called by the runner between batches: flip to the compiled forwards once they are built."""
        if self.switched or self.failed or not self.done.is_set():
            return False
        for switch in self.switches:
            switch.active = switch.compiled
        if self.graphs is not None:
            self.graphs.enable()
        self.switched = True
        log.info("compiled path in service (background compile %.1fs)", self.seconds)
        return True

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)
