"""Persistent torch.compile artifacts, so a runner with a warm cache is ready in seconds.

What is kept: torch's portable compile caches ("mega-cache":
torch.compiler.save_cache_artifacts / load_cache_artifacts), i.e. the
AOTAutograd and Inductor FX-graph cache entries, the compiled Triton kernels,
Inductor's autotuning results and the dynamic-shape profile. Loading them
before the first compiled call turns the compilation into cache hits: Dynamo
still traces the Python code (seconds), but nothing is lowered, code-generated
or compiled by Triton again.

Where: a local directory (IMG2IMG_COMPILE_CACHE, or the `directory` argument),
one subdirectory per cache key:

    DIR/<key>/manifest.json        what the key was made of, the files and their sha256
    DIR/<key>/artifacts-<sha>.bin  torch.compiler.save_cache_artifacts() bytes (one or more)

The consumer mirrors DIR with the object store (consumer/compilecache.ts:
download `compile-cache/<prefix>/...` beside the spawn, upload what is new
after the ready frame); this module never talks to the network. While the
download runs, DIR holds DOWNLOAD_MARKER: load() waits for it to go, at most
IMG2IMG_COMPILE_CACHE_WAIT seconds, so a slow store delays the compile (in the
background thread, by default) rather than the ready frame.

The key is a hash of everything that makes compiled code valid or invalid:
torch, Triton, CUDA, cuDNN, Python and diffusers versions, the GPU's name and
compute capability, the pipeline class, the UNet, transformer and VAE configs
(the architecture: weights are graph inputs, not constants), the dtype, the tuning,
the image size and the batch plan. A different value of any of them is a
different key, so a stale entry is never loaded: it is a miss, and the log
says which fields differ from the entries present. An entry whose files do not
match their manifest (truncated, bit-rotted, half-uploaded), or that torch
refuses to load, is moved aside and the runner compiles from scratch. Nothing
here raises into the runner: every failure degrades to a cold compile.

Nothing here runs on the CPU path or for `tiny` (tuning.wants_tuning); the
functions are plain Python and unit-tested on CPU (tests/test_compile_cache.py).
"""

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from importlib.metadata import version

log = logging.getLogger("img2img_runner")

ENV_DIR = "IMG2IMG_COMPILE_CACHE"
ENV_WAIT = "IMG2IMG_COMPILE_CACHE_WAIT"  # seconds load() may wait for the consumer's download; unset: none
DOWNLOAD_MARKER = ".downloading"  # the consumer's: in DIR while its download fills it
FORMAT = 1  # bump when the layout or what a key covers changes
MANIFEST = "manifest.json"
# At most this many artifact files per key: each warm start that compiled
# something new appends one; past the limit the next save writes one file
# holding everything this process saw.
MAX_FILES = 4

# Tuning fields that leave the compiled code as it is (`compile` and `compile-first` share entries;
# CUDA graphs replay the same kernels).
KEY_IGNORES = ("name", "background", "cuda_graphs")

# Statuses of CompileCache.load()
OFF, MISS, HIT, CORRUPT = "off", "miss", "hit", "corrupt"


def _version(distribution: str) -> str | None:
    try:
        return version(distribution)
    except Exception:
        return None


def environment_fields(device) -> dict:
    """Software and hardware that compiled code depends on."""
    import torch  # not at the top: main() lists a cache without torch

    fields = {
        "torch": torch.__version__,
        "triton": _version("triton") or _version("pytorch-triton"),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": "%d.%d" % sys.version_info[:2],
        "diffusers": _version("diffusers"),
        "machine": platform.machine(),
    }
    if getattr(device, "type", device) == "cuda":
        fields["gpu"] = torch.cuda.get_device_name(device)
        fields["capability"] = "%d.%d" % torch.cuda.get_device_capability(device)
    else:
        fields["gpu"] = "cpu"
        fields["capability"] = None
    return fields


def _config(module) -> dict | None:
    config = getattr(module, "config", None)
    if config is None:
        return None
    # Private entries (_name_or_path, _diffusers_version, _use_default_values) say
    # where a model came from, not what it computes.
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


def pipeline_fields(pipe, tuning, max_batch: int | None, size: tuple[int, int], buckets=None) -> dict:
    """What the compiled graphs of this pipeline depend on (not the weights' values)."""
    fields = {
        "pipeline": type(pipe).__name__,
        "unet": _config(getattr(pipe, "unet", None)),
        "vae": _config(getattr(pipe, "vae", None)),
        "vae_class": type(getattr(pipe, "vae", None)).__name__,
        "dtype": str(getattr(pipe, "dtype", None)).removeprefix("torch."),
        # What changes the compiled code: not the tuning's name, nor whether it compiles before or after the ready frame.
        "tuning": {k: v for k, v in dataclasses.asdict(tuning).items() if k not in KEY_IGNORES} if dataclasses.is_dataclass(tuning) else tuning,
        "size": list(size),
        # None: the runner measures the largest batch that fits (at most warmup.BATCH_CAP).
        "max_batch": max_batch,
        "buckets": list(buckets) if buckets else None,
    }
    transformer = getattr(pipe, "transformer", None)
    if transformer is not None:
        # A DiT's compiled blocks are the transformer's (width, heads, norms, block counts); a UNet
        # pipeline has no such field, so its keys stay what they were.
        fields["transformer"] = _config(transformer)
        fields["transformer_class"] = type(transformer).__name__
    return fields


def canonical(fields: dict) -> str:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)


def cache_key(fields: dict) -> str:
    """A short, filesystem- and object-key-safe name for these fields."""
    digest = hashlib.sha256(canonical({"format": FORMAT, **fields}).encode()).hexdigest()
    return f"v{FORMAT}-{digest[:32]}"


def differing_fields(ours: dict, theirs: dict) -> list[str]:
    """Top-level field names whose values differ (for the log line of a stale entry)."""
    names = sorted(set(ours) | set(theirs))
    return [name for name in names if canonical({"v": ours.get(name)}) != canonical({"v": theirs.get(name)})]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class CacheError(Exception):
    """An entry that cannot be used (missing or mismatching file, unreadable manifest)."""


@dataclass
class Backend:
    """The torch calls, replaceable in tests."""

    def load(self, data: bytes):
        import torch  # not at the top: main() lists a cache without torch

        return torch.compiler.load_cache_artifacts(data)

    def save(self):
        import torch  # not at the top: main() lists a cache without torch

        return torch.compiler.save_cache_artifacts()

    def compiled_anything(self) -> bool:
        """Whether this process compiled a graph (a cache miss) rather than only loading it."""
        from torch._dynamo.utils import counters  # not at the top: main() lists a cache without torch

        misses = counters["inductor"].get("fxgraph_cache_miss", 0) + counters["aot_autograd"].get("autograd_cache_miss", 0)
        bypasses = counters["inductor"].get("fxgraph_cache_bypass", 0) + counters["aot_autograd"].get("autograd_cache_bypass", 0)
        return misses + bypasses > 0


def _artifact_keys(info) -> set[tuple[str, str]]:
    """(type, key) pairs of a torch CacheInfo (None or unknown shapes give an empty set)."""
    artifacts = getattr(info, "artifacts", None) or {}
    return {(kind, key) for kind, keys in artifacts.items() for key in keys}


@dataclass
class CompileCache:
    """One cache entry: DIR/<key>/. load() before the first compiled call, save() once warm."""

    root: str
    fields: dict
    backend: Backend = field(default_factory=lambda: Backend())  # looked up at call time (tests replace it)
    key: str = ""
    status: str = OFF
    loaded_files: list[str] = field(default_factory=list)
    loaded_keys: set = field(default_factory=set)
    load_seconds: float = 0.0

    def __post_init__(self):
        self.key = self.key or cache_key(self.fields)

    @property
    def directory(self) -> str:
        return os.path.join(self.root, self.key)

    # ------------------------------------------------------------ reading

    def read_manifest(self) -> dict:
        path = os.path.join(self.directory, MANIFEST)
        try:
            with open(path, encoding="utf-8") as handle:
                manifest = json.load(handle)
        except (OSError, ValueError) as exc:
            raise CacheError(f"unreadable manifest {path}: {exc}") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("key") != self.key:
            raise CacheError(f"manifest {path} is for another format or key")
        if canonical(manifest.get("fields", {})) != canonical(self.fields):
            raise CacheError(f"manifest {path} fields differ: {differing_fields(self.fields, manifest.get('fields', {}))}")
        files = manifest.get("files")
        if not isinstance(files, list) or not files:
            raise CacheError(f"manifest {path} lists no files")
        return manifest

    def read_files(self, manifest: dict) -> list[tuple[str, bytes]]:
        """Every artifact file, checked against its size and sha256."""
        out = []
        for entry in manifest["files"]:
            name = entry.get("name", "") if isinstance(entry, dict) else ""
            if not name or os.path.basename(name) != name:
                raise CacheError(f"bad file entry {entry!r}")
            path = os.path.join(self.directory, name)
            try:
                with open(path, "rb") as handle:
                    data = handle.read()
            except OSError as exc:
                raise CacheError(f"missing artifact file {path}: {exc}") from exc
            if len(data) != entry.get("bytes") or _sha256(data) != entry.get("sha256"):
                raise CacheError(f"artifact file {path} does not match its manifest (size {len(data)}, expected {entry.get('bytes')})")
            out.append((name, data))
        return out

    def other_entries(self) -> list[dict]:
        """Manifests of the other keys under root (a stale cache: other torch, GPU, tuning...)."""
        found = []
        try:
            names = sorted(os.listdir(self.root))
        except OSError:
            return found
        for name in names:
            if name == self.key:
                continue
            try:
                with open(os.path.join(self.root, name, MANIFEST), encoding="utf-8") as handle:
                    manifest = json.load(handle)
                if isinstance(manifest, dict) and isinstance(manifest.get("fields"), dict):
                    found.append(manifest)
            except (OSError, ValueError):
                continue
        return found

    def wait_for_download(self) -> float:
        """Wait while the consumer's download fills root, at most ENV_WAIT seconds; return the seconds waited."""
        marker = os.path.join(self.root, DOWNLOAD_MARKER)
        try:
            bound = float(os.environ.get(ENV_WAIT) or 0)
        except ValueError:
            bound = 0.0
        started = time.perf_counter()
        while os.path.exists(marker) and time.perf_counter() - started < bound:
            time.sleep(0.05)
        waited = time.perf_counter() - started
        if os.path.exists(marker) and bound:
            log.warning("compile cache %s: the download still runs after %.0fs: going on with what %s holds", self.key, waited, self.root)
        elif waited >= 0.05:
            log.info("compile cache %s: waited %.1fs for the download", self.key, waited)
        return waited

    def load(self) -> str:
        """Load this key's artifacts into torch's caches (after the download); return hit, miss or corrupt. Never raises."""
        self.wait_for_download()
        started = time.perf_counter()
        try:
            self.status = self._load()
        except Exception as exc:  # noqa: BLE001 - a cache must never stop the runner
            log.warning("compile cache %s: cannot load (%s): compiling from scratch", self.key, exc)
            self.quarantine(str(exc))
            self.status = CORRUPT
        self.load_seconds = time.perf_counter() - started
        return self.status

    def _load(self) -> str:
        if not os.path.exists(os.path.join(self.directory, MANIFEST)):
            stale = self.other_entries()
            if stale:
                reasons = sorted({", ".join(differing_fields(self.fields, item["fields"])) for item in stale})
                log.info("compile cache %s: miss; %d entries for other keys (differing: %s): compiling", self.key, len(stale), "; ".join(reasons))
            else:
                log.info("compile cache %s: miss (nothing in %s): compiling", self.key, self.root)
            return MISS
        manifest = self.read_manifest()
        files = self.read_files(manifest)
        for name, data in files:
            info = self.backend.load(data)
            if info is None:
                raise CacheError(f"torch refused the artifacts in {name}")
            self.loaded_keys |= _artifact_keys(info)
            self.loaded_files.append(name)
        size = sum(len(data) for _name, data in files)
        log.info("compile cache %s: hit, %d file(s), %.1f MiB loaded", self.key, len(files), size / 2**20)
        return HIT

    def quarantine(self, reason: str) -> None:
        """Move a bad entry aside (kept for inspection, never loaded again); the next save writes a fresh one."""
        if not os.path.isdir(self.directory):
            return
        target = f"{self.directory}.bad-{int(time.time())}-{os.getpid()}"
        try:
            os.replace(self.directory, target)
            with open(os.path.join(target, "REASON"), "w", encoding="utf-8") as handle:
                handle.write(reason + "\n")
            log.warning("compile cache %s: moved aside to %s", self.key, target)
        except OSError:
            shutil.rmtree(self.directory, ignore_errors=True)

    # ------------------------------------------------------------ writing

    def save(self, compile_seconds: float | None = None) -> bool:
        """Write what this process compiled; True if files were written (the consumer then uploads). Never raises."""
        try:
            return self._save(compile_seconds)
        except Exception as exc:  # noqa: BLE001
            log.warning("compile cache %s: cannot save (%s)", self.key, exc)
            return False

    def _save(self, compile_seconds: float | None) -> bool:
        if self.status == HIT and not self.backend.compiled_anything():
            return False  # everything came from the cache: nothing new to share
        result = self.backend.save()
        if result is None:
            log.info("compile cache %s: torch produced no artifacts to save", self.key)
            return False
        data, info = result
        os.makedirs(self.directory, exist_ok=True)
        name = f"artifacts-{_sha256(data)[:16]}.bin"
        _write_atomic(os.path.join(self.directory, name), data)
        files = [{"name": name, "bytes": len(data), "sha256": _sha256(data)}]
        if self.status == HIT:
            previous = self.read_manifest()["files"]
            # torch re-records cache hits in some versions: then the new bytes hold everything.
            superset = self.loaded_keys and self.loaded_keys <= _artifact_keys(info)
            if not superset and len(previous) < MAX_FILES:
                files = [entry for entry in previous if entry["name"] != name] + files
        manifest = {
            "format": FORMAT,
            "key": self.key,
            "fields": self.fields,
            "files": files,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "compile_seconds": compile_seconds and round(compile_seconds, 1),
        }
        _write_atomic(os.path.join(self.directory, MANIFEST), json.dumps(manifest, indent=1, default=str).encode())
        # Only files this process loaded and replaced: another runner sharing the directory may
        # have written files its own manifest names.
        for stale in set(self.loaded_files) - {entry["name"] for entry in files}:
            try:
                os.remove(os.path.join(self.directory, stale))
            except OSError:
                pass
        log.info("compile cache %s: saved %s (%.1f MiB) in %s", self.key, name, len(data) / 2**20, self.directory)
        return True


def cache_root(directory: str | None = None) -> str | None:
    """The configured cache directory: the argument, else IMG2IMG_COMPILE_CACHE, else None (no cache)."""
    return directory or os.environ.get(ENV_DIR) or None


def open_cache(pipe, device, tuning, max_batch: int | None, size: tuple[int, int], buckets=None, directory: str | None = None):
    """A CompileCache for this pipeline, or None when no directory is configured. Never raises."""
    root = cache_root(directory)
    if root is None:
        return None
    try:
        fields = {**environment_fields(device), **pipeline_fields(pipe, tuning, max_batch, size, buckets)}
        return CompileCache(root=root, fields=fields)
    except Exception as exc:  # noqa: BLE001
        log.warning("compile cache disabled: cannot compute its key (%s)", exc)
        return None


def compile_stats() -> dict:
    """Graphs compiled and cache hits/misses of this process so far (for the log and the benchmarks)."""
    from torch._dynamo.utils import counters  # not at the top: main() lists a cache without torch

    return {
        "unique_graphs": counters["stats"].get("unique_graphs", 0),
        "fxgraph_hit": counters["inductor"].get("fxgraph_cache_hit", 0),
        "fxgraph_miss": counters["inductor"].get("fxgraph_cache_miss", 0),
        "aot_hit": counters["aot_autograd"].get("autograd_cache_hit", 0),
        "aot_miss": counters["aot_autograd"].get("autograd_cache_miss", 0),
    }


def compile_from_scratch() -> None:
    """After a compilation failed with loaded artifacts: forget what Dynamo traced and turn torch's compile caches off."""
    import torch  # not at the top: main() lists a cache without torch
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    inductor_config.force_disable_caches = True


def main(argv=None) -> int:
    """python -m img2img_runner.compile_cache DIR: list the entries of a cache directory and check their files."""
    parser = argparse.ArgumentParser(prog="python -m img2img_runner.compile_cache", description=main.__doc__)
    parser.add_argument("directory", nargs="?", default=cache_root())
    args = parser.parse_args(argv)
    if not args.directory or not os.path.isdir(args.directory):
        print(f"no cache directory {args.directory!r}")
        return 1
    bad = 0
    for name in sorted(os.listdir(args.directory)):
        path = os.path.join(args.directory, name, MANIFEST)
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
        entry = CompileCache(root=args.directory, fields=manifest.get("fields", {}), key=name)
        try:
            files = entry.read_files(entry.read_manifest())
            state = f"ok, {len(files)} file(s), {sum(len(d) for _n, d in files) / 2**20:.1f} MiB"
        except CacheError as exc:
            state, bad = f"BAD: {exc}", bad + 1
        fields = manifest.get("fields", {})
        print(f"{name}: {fields.get('gpu')} torch {fields.get('torch')} {fields.get('dtype')} compile {fields.get('tuning', {}).get('compile_mode')}{' regional' if fields.get('tuning', {}).get('regional') else ''}: {state}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
