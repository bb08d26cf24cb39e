"""Write ../test/vectors/frames.json with this package's encoder (run from diffusion-py/).

The TypeScript codec is tested against the same file, so vectors avoid the two
places where Python's json and JavaScript's JSON.stringify format numbers
differently: integral floats (1.0 vs 1) and exponents (1e-05 vs 0.00001).
"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from img2img_runner.frames import encode_frame  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parents[2] / "test" / "vectors" / "frames.json"
PNG_SIGNATURE = bytes.fromhex("89504e470d0a1a0a")

VECTORS = [
    ("ping", {"v": 1, "type": "ping"}, b""),
    ("pong", {"v": 1, "type": "pong"}, b""),
    (
        "job_unicode_prompt",
        {
            "v": 1,
            "type": "job",
            "id": "job-1",
            "priority": "normal",
            "params": {
                "prompt": "chat 猫 ☕",
                "negative_prompt": None,
                "strength": 0.6,
                "steps": 10,
                "guidance_scale": 7.5,
                "seed": 42,
                "preview_every": 0,
            },
        },
        bytes([0, 1, 2, 0x7F, 0x80, 0xFE, 0xFF, 0x0A, 0x0D]),
    ),
    (
        "job_escapes",
        {
            "v": 1,
            "type": "job",
            "id": "job-2",
            "priority": "high",
            "params": {
                "prompt": 'say "hi"\\ back\n\ttab \u0001 é 😀 </script>',
                "negative_prompt": "blurry, low quality",
                "strength": 0.75,
                "steps": 30,
                "guidance_scale": 5.5,
                "seed": 9007199254740991,
                "preview_every": 5,
            },
        },
        PNG_SIGNATURE,
    ),
    ("cancel", {"v": 1, "type": "cancel", "id": "job-1"}, b""),
    ("shutdown", {"v": 1, "type": "shutdown"}, b""),
    (
        "ready",
        {"v": 1, "type": "ready", "model": "tiny", "device": "cuda:0", "dtype": "float16", "max_batch": 8, "load_seconds": 12.345},
        b"",
    ),
    ("started", {"v": 1, "type": "started", "id": "job-1", "batch_size": 3}, b""),
    ("progress", {"v": 1, "type": "progress", "id": "job-1", "step": 6, "total": 6}, b""),
    ("preview", {"v": 1, "type": "preview", "id": "job-1", "step": 5, "total": 20}, b"RIFF\x1a\x00\x00\x00WEBPVP8L" + bytes(14)),
    (
        "result_nested_timings",
        {
            "v": 1,
            "type": "result",
            "id": "job-1",
            "width": 64,
            "height": 64,
            "batch_size": 2,
            "timings": {"decode_s": 0.0012, "compute_s": 0.064321, "encode_s": 0.0021},
            "peak_memory_bytes": 812544000,
            "notes": [],
        },
        PNG_SIGNATURE + bytes(8),
    ),
    (
        "result_with_notes",
        {
            "v": 1,
            "type": "result",
            "id": "job-2",
            "width": 48,
            "height": 32,
            "batch_size": 1,
            "timings": {"decode_s": 0.0011, "compute_s": 0.5, "encode_s": 0.0031},
            "peak_memory_bytes": 0,
            "notes": ["prompt: 93 tokens; CLIPTokenizer reads 77 — the rest is ignored ☕"],
        },
        PNG_SIGNATURE,
    ),
    (
        "error_with_id",
        {"v": 1, "type": "error", "id": "job-1", "code": "oom", "retryable": True, "message": "out of GPU memory even at batch size 1"},
        b"",
    ),
    (
        "error_null_id",
        {"v": 1, "type": "error", "id": None, "code": "bad_params", "retryable": False, "message": "unknown frame type 'hello'"},
        b"",
    ),
    # Integers where the protocol says number: what JSON.stringify writes for 1.0 and 7.0.
    (
        "job_integer_numbers",
        {
            "v": 1,
            "type": "job",
            "id": "job-3",
            "priority": "low",
            "params": {
                "prompt": "a",
                "negative_prompt": "",
                "strength": 1,
                "steps": 150,
                "guidance_scale": 7,
                "seed": 4294967295,
                "preview_every": 150,
            },
        },
        PNG_SIGNATURE,
    ),
    (
        "ready_standin",
        {"v": 1, "type": "ready", "model": "sd15", "device": "standin", "dtype": "float16", "max_batch": 24, "load_seconds": 0.002},
        b"",
    ),
    ("cancel_unicode_id", {"v": 1, "type": "cancel", "id": "job-猫"}, b""),
    ("compiled", {"v": 1, "type": "compiled", "ok": True, "seconds": 22.2}, b""),
]


def main() -> None:
    vectors = [
        {"name": name, "header": header, "payload_hex": payload.hex(), "frame_hex": encode_frame(header, payload).hex()}
        for name, header, payload in VECTORS
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(vectors, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {len(vectors)} vectors to {OUT}")


if __name__ == "__main__":
    main()
