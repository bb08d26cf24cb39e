import io
import json
import pathlib
import struct

import pytest

from img2img_runner.frames import MAX_HEADER_BYTES, MAX_PAYLOAD_BYTES, BadHeader, FrameError, encode_frame, read_frame

VECTORS_PATH = pathlib.Path(__file__).resolve().parents[2] / "test" / "vectors" / "frames.json"
VECTORS = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))


def test_vector_file_covers_the_required_cases():
    names = {vector["name"] for vector in VECTORS}
    assert {"ping", "job_unicode_prompt", "result_nested_timings"} <= names
    job = next(vector for vector in VECTORS if vector["name"] == "job_unicode_prompt")
    assert job["header"]["params"]["prompt"] == "chat 猫 ☕"
    assert job["payload_hex"]


@pytest.mark.parametrize("vector", VECTORS, ids=[vector["name"] for vector in VECTORS])
def test_encode_gives_the_vector_bytes(vector):
    payload = bytes.fromhex(vector["payload_hex"])
    assert encode_frame(vector["header"], payload).hex() == vector["frame_hex"]


@pytest.mark.parametrize("vector", VECTORS, ids=[vector["name"] for vector in VECTORS])
def test_decode_gives_the_vector_header_and_payload(vector):
    stream = io.BytesIO(bytes.fromhex(vector["frame_hex"]))
    header, payload = read_frame(stream)
    assert header == vector["header"]
    assert list(header) == list(vector["header"])  # key order survives
    assert payload == bytes.fromhex(vector["payload_hex"])
    assert read_frame(stream) is None


def test_header_is_compact_raw_utf8():
    frame = encode_frame({"v": 1, "type": "job", "id": "猫"})
    assert frame[4:-4] == '{"v":1,"type":"job","id":"猫"}'.encode("utf-8")


def test_clean_eof_gives_none():
    assert read_frame(io.BytesIO(b"")) is None


def test_frames_read_back_to_back():
    stream = io.BytesIO(encode_frame({"v": 1, "type": "ping"}) + encode_frame({"v": 1, "type": "pong"}, b"\x00"))
    assert read_frame(stream) == ({"v": 1, "type": "ping"}, b"")
    assert read_frame(stream) == ({"v": 1, "type": "pong"}, b"\x00")
    assert read_frame(stream) is None


@pytest.mark.parametrize("cut", [1, 3, 4, 10, -5, -1])
def test_truncated_frame_raises(cut):
    frame = encode_frame({"v": 1, "type": "job", "id": "a"}, b"payload")
    with pytest.raises(FrameError, match="truncated"):
        read_frame(io.BytesIO(frame[:cut]))


def test_oversized_lengths_raise():
    with pytest.raises(FrameError, match="cap"):
        read_frame(io.BytesIO(struct.pack(">I", MAX_HEADER_BYTES + 1)))
    header = b'{"v":1,"type":"ping"}'
    with pytest.raises(FrameError, match="cap"):
        read_frame(io.BytesIO(struct.pack(">I", len(header)) + header + struct.pack(">I", MAX_PAYLOAD_BYTES + 1)))


@pytest.mark.parametrize("header", [b"{not json", b"[1,2]", b'{"type":"ping"}', b'{"v":2,"type":"ping"}', b'{"v":1}', b"\xff\xfe", b'{"v":1,"type":"job","x":NaN}'])
def test_bad_header_raises_but_keeps_the_stream_in_sync(header):
    bad = struct.pack(">I", len(header)) + header + struct.pack(">I", 2) + b"xy"
    stream = io.BytesIO(bad + encode_frame({"v": 1, "type": "ping"}))
    with pytest.raises(BadHeader):
        read_frame(stream)
    assert read_frame(stream) == ({"v": 1, "type": "ping"}, b"")


def test_encode_refuses_headers_without_v_and_type():
    with pytest.raises(ValueError):
        encode_frame({"type": "ping"})
    with pytest.raises(ValueError):
        encode_frame({"v": 1})
