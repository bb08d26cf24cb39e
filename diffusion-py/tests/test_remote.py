"""--connect: the runner dials a WebSocket gateway, sends its ready frame, serves jobs one frame
per binary message, reconnects after a drop, and exits 3 when its token is refused.

The gateway here is a websockets server on 127.0.0.1; the runner is the timed stand-in (it sleeps
instead of computing and answers with its input), so no model loads.
"""

import io
import json
import queue
import subprocess
import sys
import threading

from websockets.sync.server import serve

from helpers import PACKAGE_DIR, job_header, png_bytes, sample_image
from img2img_runner.frames import encode_frame, read_frame

TABLE = {"1": 5, "4": 10}
TOKEN = "i2w_test"


def _argv(url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "img2img_runner", "--model", "sd15", "--source", "standin:" + json.dumps(TABLE), "--connect", url, *extra]


def _decode(message: bytes) -> tuple[dict, bytes]:
    return read_frame(io.BytesIO(message))


class Gateway:
    """Accepts connections whose token matches; each connection's handler is queued for the test."""

    def __init__(self):
        self.connections: queue.Queue = queue.Queue()
        self.refuse = False

    def handler(self, socket):
        done = queue.Queue()
        self.connections.put((socket, done))
        done.get()  # the test decides when this connection ends

    def process_request(self, connection, request):
        if self.refuse or request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return connection.respond(401, "no\n")
        return None


def test_serves_over_a_websocket_reconnects_and_stops_when_refused():
    gateway = Gateway()
    with serve(gateway.handler, "127.0.0.1", 0, process_request=gateway.process_request, max_size=None) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"ws://127.0.0.1:{server.socket.getsockname()[1]}/api/workers/connect"
        proc = subprocess.Popen(_argv(url, "--token", TOKEN), cwd=PACKAGE_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            socket, done = gateway.connections.get(timeout=60)
            ready, _ = _decode(socket.recv(timeout=30))
            assert (ready["type"], ready["model"], ready["max_batch"]) == ("ready", "sd15", 4)
            image = png_bytes(sample_image(0))
            socket.send(encode_frame(job_header("job-1"), image))
            types = []
            while not types or types[-1] not in ("result", "error"):
                header, payload = _decode(socket.recv(timeout=30))
                types.append(header["type"])
            assert types[0] == "started" and types[-1] == "result"
            assert payload == image  # the stand-in answers with its input

            # A dropped connection: the runner comes back, model still loaded, and says ready again.
            socket.close()
            done.put(None)
            socket, done = gateway.connections.get(timeout=30)
            assert _decode(socket.recv(timeout=30))[0]["type"] == "ready"

            # A refused token ends it.
            gateway.refuse = True
            socket.close()
            done.put(None)
            assert proc.wait(timeout=60) == 3
        finally:
            proc.kill()
            server.shutdown()
