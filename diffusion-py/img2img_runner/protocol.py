"""The runner protocol: one dataclass per message, mirroring common/protocol.ts.

The names are the TypeScript schemas' (JobFrame, ..., TO_RUNNER for ToRunner,
FROM_RUNNER for FromRunner); each one is a frame's header. Field order is the JSON key order on the wire (header() writes "v", "type",
then the fields in declaration order), so the frames stay byte-identical to
JavaScript's JSON.stringify of the same object. The payload (the job's image,
the result's PNG) travels beside the header and is not part of these types.

    message = parse(header, TO_RUNNER)   # dict -> JobFrame | CancelFrame | ...
    writer.send(ReadyFrame(...))         # header() -> dict, encode_frame does the bytes

parse() checks types and shapes only (a ProtocolError answers bad_params);
the parameter limits are the runner's business (jobs.py, common/params.json).
"""

import math
from dataclasses import dataclass, fields, is_dataclass
from typing import ClassVar

from .frames import VERSION

# Error codes and whether the parent should retry the job elsewhere or later.
RETRYABLE = {"bad_image": False, "bad_params": False, "canceled": False, "oom": True, "internal": True}


class ProtocolError(Exception):
    """A header of the wrong type or shape; answered with a bad_params error for `id` (None if unknown)."""

    def __init__(self, message: str, id: str | None = None):
        super().__init__(message)
        self.id = id


class Message:
    """Any frame header; TYPE is its "type"."""

    TYPE: ClassVar[str]

    def header(self) -> dict:
        return {"v": VERSION, "type": self.TYPE, **_plain(self)}


# ---------------------------------------------------------------- to the runner


@dataclass(frozen=True)
class JobParams:
    prompt: str
    negative_prompt: str | None
    strength: float
    steps: int
    guidance_scale: float
    seed: int
    # A preview frame every this many steps; 0: none.
    preview_every: int


@dataclass(frozen=True)
class JobFrame(Message):
    """Payload: the input image. priority: high, normal or low (the job's Kafka topic)."""

    TYPE = "job"
    id: str
    priority: str
    params: JobParams


@dataclass(frozen=True)
class CancelFrame(Message):
    TYPE = "cancel"
    id: str


@dataclass(frozen=True)
class PingFrame(Message):
    TYPE = "ping"


@dataclass(frozen=True)
class ShutdownFrame(Message):
    TYPE = "shutdown"


# ---------------------------------------------------------------- from the runner


@dataclass(frozen=True)
class ReadyFrame(Message):
    TYPE = "ready"
    model: str
    device: str
    dtype: str
    max_batch: int
    load_seconds: float


@dataclass(frozen=True)
class StartedFrame(Message):
    TYPE = "started"
    id: str
    batch_size: int


@dataclass(frozen=True)
class ProgressFrame(Message):
    TYPE = "progress"
    id: str
    step: int
    total: int


@dataclass(frozen=True)
class Timings:
    decode_s: float
    compute_s: float
    encode_s: float


@dataclass(frozen=True)
class PreviewFrame(Message):
    """Payload: a small WebP of the job's latents after `step` of `total` steps (their projection to colours)."""

    TYPE = "preview"
    id: str
    step: int
    total: int


@dataclass(frozen=True)
class ResultFrame(Message):
    """Payload: the output PNG."""

    TYPE = "result"
    id: str
    width: int
    height: int
    batch_size: int
    timings: Timings
    peak_memory_bytes: int
    # What the user should know about how the job ran (a prompt longer than a text encoder reads).
    notes: list[str]


@dataclass(frozen=True)
class ErrorFrame(Message):
    TYPE = "error"
    id: str | None
    code: str
    retryable: bool
    message: str

    @classmethod
    def of(cls, id: str | None, code: str, message: str) -> "ErrorFrame":
        return cls(id=id, code=code, retryable=RETRYABLE[code], message=message)


@dataclass(frozen=True)
class PongFrame(Message):
    TYPE = "pong"


@dataclass(frozen=True)
class CompiledFrame(Message):
    """The background compile ended (background.py): the compiled path serves from the next batch
    (ok), or the runner stays eager (not ok); the compile cache holds what it saved."""

    TYPE = "compiled"
    ok: bool
    seconds: float


TO_RUNNER = {cls.TYPE: cls for cls in (JobFrame, CancelFrame, PingFrame, ShutdownFrame)}
FROM_RUNNER = {cls.TYPE: cls for cls in (ReadyFrame, StartedFrame, ProgressFrame, PreviewFrame, ResultFrame, ErrorFrame, PongFrame, CompiledFrame)}
ALL = TO_RUNNER | FROM_RUNNER


def parse(header: dict, accept: dict = ALL) -> Message:
    """A header dict (as read_frame returns it) as its message type; ProtocolError if it is not one of `accept`."""
    if header.get("v") != VERSION:
        raise ProtocolError(f"frame header has v={header.get('v')!r}, expected {VERSION}")
    kind = header.get("type")
    cls = accept.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown frame type {kind!r}")
    try:
        return _parse_fields(cls, header, kind)
    except ProtocolError as exc:
        # The id, when it is a usable one, lets the parent fail that one job.
        job_id = header.get("id")
        raise ProtocolError(str(exc), job_id if isinstance(job_id, str) and job_id else None) from None


def _plain(obj) -> dict:
    # Not dataclasses.asdict: it deep-copies every value, and progress frames are sent per step per job.
    return {f.name: _plain(value) if is_dataclass(value := getattr(obj, f.name)) else value for f in fields(obj)}


def _parse_fields(cls, data: dict, prefix: str):
    return cls(**{f.name: _check(f.type, f.name, data.get(f.name), f"{prefix}.{f.name}") for f in fields(cls)})


def _check(kind, name: str, value, where: str):
    if is_dataclass(kind):
        if not isinstance(value, dict):
            raise ProtocolError(f"{where} must be an object")
        # Nested fields are named from their object: "params.steps", as the API's messages do.
        return _parse_fields(kind, value, name)
    if kind is str or kind == str | None:
        if value is None and kind != str:
            return None
        # Ids key the parent's bookkeeping: an empty one is as good as none.
        if not isinstance(value, str) or (name == "id" and not value):
            what = "a non-empty string" if name == "id" else "a string"
            raise ProtocolError(f"{where} must be {what}{' or null' if kind != str else ''}")
        return value
    if kind == list[str]:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ProtocolError(f"{where} must be a list of strings")
        return value
    # bool is an int in Python; JSON has true/false apart from numbers.
    if kind is bool:
        if not isinstance(value, bool):
            raise ProtocolError(f"{where} must be a boolean, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolError(f"{where} must be an integer, got {value!r}")
        return value
    if kind is float:
        # An int is kept as it came (JavaScript sends 1.0 as 1): the header then serialises back to the same bytes.
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ProtocolError(f"{where} must be a number, got {value!r}")
        return value
    raise TypeError(f"no check for field type {kind!r}")
