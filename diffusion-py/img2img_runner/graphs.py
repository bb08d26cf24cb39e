"""UNet calls replayed from CUDA graphs (the `fastest` tuning): the GPU no longer waits on the CPU.

A `fastest` call runs most of its steps on half the rows, and a cached step
(deepcache.py) runs only the UNet's shallowest layers: a few milliseconds of
kernels behind the eager glue's and the compiled blocks' launches, so the GPU
waits on Python for a fifth of a call's wall time. A CUDA graph records every
kernel of one UNet call once and replays them with one launch.

One graph per call signature: the shapes, dtypes and strides of the tensor
inputs, the other arguments' values, and the step's feature-caching role
(full or cached, how many layers). The runner pads every call up to a batch
bucket (graph_buckets) so a few graphs serve every batch. A graph is captured
on the first call of its signature, after a warm-up call on a side stream (the
compiler's guards, cuDNN's algorithm search), and replayed from then on: the
inputs are copied into the graph's own tensors, the outputs copied out.

A graph replays kernels, not Python: what a call leaves behind on the Python
side must be put back by hand. Feature caching keeps the feature of a full
step for the cached steps that follow; the full step's graph writes it into
the same tensor at every replay, and the cached steps' graphs read it from
there, so a replay of a full step sets the cache's feature to that tensor.

All graphs share one memory pool: they run one at a time, on one stream, and
every tensor a graph hands on (its outputs, its cached feature) stays owned
by it. Capture happens only once the compiled path is in service (enable());
a capture that fails (out of memory, an operation a graph cannot hold) turns
graphs off and the call runs as before.
"""

import logging

import torch
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

log = logging.getLogger("img2img_runner")

# Graphs kept at most: a signature past them runs without a graph (a call whose arguments
# change at every step would otherwise capture without end).
MAX_GRAPHS = 64


def graph_buckets(max_batch: int) -> tuple[int, ...]:
    """The batch sizes a call is padded up to: powers of two below max_batch, and max_batch."""
    sizes = []
    size = 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    return (*sizes, max_batch)


def _meta(leaf):
    if torch.is_tensor(leaf):
        return ("tensor", tuple(leaf.shape), leaf.dtype, leaf.stride(), leaf.device)
    try:
        hash(leaf)
    except TypeError:
        return ("value", repr(leaf))
    return ("value", leaf)


def signature(args, kwargs, cache=None) -> tuple:
    """What one graph serves: the inputs' tree and metadata, and the feature cache's role for this call."""
    leaves, spec = tree_flatten((args, kwargs))
    role = None if cache is None or not cache.enabled else (cache.skip, cache.layers)
    return (str(spec), tuple(_meta(leaf) for leaf in leaves), role)


class _Graph:
    def __init__(self, graph, inputs: list, outputs, feature):
        self.graph = graph
        self.inputs = inputs  # the leaves the graph reads: its own tensors, or the values it was captured with
        self.outputs = outputs
        self.feature = feature  # the cache's feature after the captured call: this graph's own tensor, or None


class GraphedForward:
    """A module's forward, replayed from CUDA graphs once enabled (module doc)."""

    def __init__(self, module):
        self.inner = module.forward
        module.forward = self
        self.enabled = False
        self.failed = False
        self.cache = None  # deepcache.DeepCache of the module, set by the tuning after installing it
        self.graphs: dict[tuple, _Graph] = {}
        self.pool = None
        self.captures = 0

    def enable(self) -> None:
        """Capture and replay from now on (the compiled path is in service): graphs of an earlier path are dropped."""
        self.graphs.clear()
        self.enabled = not self.failed

    def __call__(self, *args, **kwargs):
        if not self.enabled or torch.is_grad_enabled():
            return self.inner(*args, **kwargs)
        key = signature(args, kwargs, self.cache)
        graph = self.graphs.get(key)
        if graph is None:
            if len(self.graphs) >= MAX_GRAPHS:
                return self.inner(*args, **kwargs)
            graph = self._capture(key, args, kwargs)
            if graph is None:
                return self.inner(*args, **kwargs)
        return self._replay(graph, args, kwargs)

    def _capture(self, key, args, kwargs):
        leaves, spec = tree_flatten((args, kwargs))
        inputs = [torch.empty_like(leaf).copy_(leaf) if torch.is_tensor(leaf) else leaf for leaf in leaves]
        static_args, static_kwargs = tree_unflatten(inputs, spec)
        try:
            # Warm-up on a side stream (torch's recipe): compiler guards and cuDNN's search run here, not in the capture.
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.inner(*static_args, **static_kwargs)
            torch.cuda.current_stream().wait_stream(side)
            if self.pool is None:
                self.pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            # thread_local: the preview and encoder threads may touch CUDA while this thread captures.
            with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
                outputs = self.inner(*static_args, **static_kwargs)
        except Exception:
            log.exception("CUDA graph capture failed: UNet calls run without graphs from now on")
            self.failed = True
            self.enabled = False
            self.graphs.clear()
            return None
        feature = self.cache.feature if self.cache is not None and self.cache.enabled and not self.cache.skip else None
        captured = _Graph(graph, inputs, outputs, feature)
        self.graphs[key] = captured
        self.captures += 1
        log.info("CUDA graph %d captured (%d kept)", self.captures, len(self.graphs))
        return captured

    def _replay(self, graph: _Graph, args, kwargs):
        leaves, _ = tree_flatten((args, kwargs))
        for static, leaf in zip(graph.inputs, leaves):
            if torch.is_tensor(static) and static.data_ptr() != leaf.data_ptr():
                static.copy_(leaf, non_blocking=True)
        graph.graph.replay()
        if graph.feature is not None:
            self.cache.feature = graph.feature
        # A copy: the caller may keep or change what it gets, and the next replay rewrites the graph's own.
        return tree_map(lambda value: value.clone() if torch.is_tensor(value) else value, graph.outputs)


def install(module) -> GraphedForward:
    return GraphedForward(module)
