"""Wire format shared with the TypeScript side (see test/vectors/frames.json).

A frame is: u32 BE header length, UTF-8 JSON header, u32 BE payload length,
payload bytes (possibly empty). Every header is an object with "v": 1 and a
string "type".
"""

import json
import struct

VERSION = 1
MAX_HEADER_BYTES = 1 << 20
MAX_PAYLOAD_BYTES = 256 << 20
_LEN = struct.Struct(">I")


class FrameError(Exception):
    """The byte stream is broken (truncated or oversized) and cannot be resynchronised."""


class BadHeader(Exception):
    """A complete frame whose header is not valid; the stream is still in sync."""


def encode_header(header: dict) -> bytes:
    if not isinstance(header, dict) or header.get("v") != VERSION or not isinstance(header.get("type"), str):
        raise ValueError(f"a frame header must be an object with v={VERSION} and a string type: {header!r}")
    # Compact, insertion-ordered, raw UTF-8 (ensure_ascii=False) so the bytes equal
    # JavaScript's JSON.stringify output for the same object; NaN/Infinity are not JSON.
    text = json.dumps(header, separators=(",", ":"), sort_keys=False, ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


def encode_frame(header: dict, payload: bytes = b"") -> bytes:
    header_bytes = encode_header(header)
    if len(header_bytes) > MAX_HEADER_BYTES:
        raise FrameError(f"frame header is {len(header_bytes)} bytes, over the {MAX_HEADER_BYTES}-byte cap")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise FrameError(f"frame payload is {len(payload)} bytes, over the {MAX_PAYLOAD_BYTES}-byte cap")
    return _LEN.pack(len(header_bytes)) + header_bytes + _LEN.pack(len(payload)) + bytes(payload)


def _read_exact(stream, size: int) -> bytes:
    """Read exactly size bytes; fewer only at EOF. Loops because pipes return short reads."""
    chunks = []
    remaining = size
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _read_length(stream, what: str, cap: int) -> int:
    raw = _read_exact(stream, _LEN.size)
    if len(raw) != _LEN.size:
        raise FrameError(f"truncated frame: stream ended inside the {what} length")
    (length,) = _LEN.unpack(raw)
    if length > cap:
        raise FrameError(f"frame {what} length {length} is over the {cap}-byte cap")
    return length


def _parse_header(header_bytes: bytes) -> dict:
    try:
        header = json.loads(header_bytes.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadHeader(f"frame header is not UTF-8 JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise BadHeader("frame header is not a JSON object")
    if header.get("v") != VERSION:
        raise BadHeader(f"frame header has v={header.get('v')!r}, expected {VERSION}")
    if not isinstance(header.get("type"), str):
        raise BadHeader("frame header has no string 'type'")
    return header


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def read_frame(stream) -> tuple[dict, bytes] | None:
    """Read one frame; None at a clean EOF (before the first byte of a frame).

    Raises FrameError if the stream is truncated or a length is over its cap, and
    BadHeader (after consuming the whole frame) if the header is not valid.
    """
    first = _read_exact(stream, _LEN.size)
    if not first:
        return None
    if len(first) != _LEN.size:
        raise FrameError("truncated frame: stream ended inside the header length")
    (header_length,) = _LEN.unpack(first)
    if header_length > MAX_HEADER_BYTES:
        raise FrameError(f"frame header length {header_length} is over the {MAX_HEADER_BYTES}-byte cap")
    header_bytes = _read_exact(stream, header_length)
    if len(header_bytes) != header_length:
        raise FrameError("truncated frame: stream ended inside the header")
    payload_length = _read_length(stream, what="payload", cap=MAX_PAYLOAD_BYTES)
    payload = _read_exact(stream, payload_length)
    if len(payload) != payload_length:
        raise FrameError("truncated frame: stream ended inside the payload")
    # Parsed last so a bad header still leaves the stream at the next frame.
    return _parse_header(header_bytes), payload
