"""--connect: dial out to the service's worker gateway and serve frames over a WebSocket.

The worker opens no port: it connects (Authorization: Bearer <worker token>), sends its
ready frame, and then speaks the frame protocol of the stdio mode, one frame per binary
message, through the same Runner. A dropped connection abandons the jobs it carried (the
service runs them elsewhere) and reconnects with backoff, keeping the model loaded; a
refused token (revoked or evicted) ends the process.
"""

import logging
import os
import random
import threading
import time
from typing import Callable

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from .frames import encode_frame
from .runner import FrameWriter

log = logging.getLogger("img2img_runner")

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
# Status codes that mean "this token will never be let in": retrying would only hammer the gateway.
REFUSED = {401, 403}


class SocketStream:
    """The write side of the Runner's FrameWriter: each write() is one frame, sent as one binary message."""

    def __init__(self, socket: ClientConnection):
        self._socket = socket

    def write(self, data: bytes) -> None:
        try:
            self._socket.send(bytes(data))
        except ConnectionClosed as exc:
            raise OSError(f"connection closed: {exc}") from exc

    def flush(self) -> None:
        pass


def _pump(socket: ClientConnection, pipe_in: int) -> None:
    """Copies each binary message (one whole frame) into the pipe the Runner reads; closes it at the end."""
    try:
        for message in socket:
            if isinstance(message, str):
                log.warning("ignoring a text message from the gateway")
                continue
            os.write(pipe_in, message)
    except ConnectionClosed:
        pass
    finally:
        os.close(pipe_in)


def serve_connection(socket: ClientConnection, ready: dict, make_runner: Callable) -> None:
    """One connection: ready frame, then frames both ways until the socket closes."""
    writer = FrameWriter(SocketStream(socket))
    socket.send(encode_frame(ready))
    runner = make_runner(writer)
    pipe_out, pipe_in = os.pipe()
    pump = threading.Thread(target=_pump, args=(socket, pipe_in), name="socket-pump", daemon=True)
    pump.start()
    with os.fdopen(pipe_out, "rb", buffering=0) as stream:
        # When the socket closes the pipe ends: the Runner drops what it still holds (nobody
        # would receive it) and returns.
        threading.Thread(target=lambda: (pump.join(), runner.abandon()), daemon=True).start()
        runner.serve(stream)


def serve_remote(url: str, token: str, ready: dict, make_runner: Callable) -> int:
    """Connects, serves, and reconnects with backoff (0.5 s doubling to 30 s) until the token is refused."""
    failures = 0
    while True:
        try:
            with connect(url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None, open_timeout=10) as socket:
                log.info("connected to %s", url)
                failures = 0
                serve_connection(socket, ready, make_runner)
            log.warning("connection to %s closed; reconnecting", url)
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in REFUSED:
                log.error("the gateway refused this worker's token (HTTP %d): not retrying", status)
                return 3
            log.warning("gateway answered HTTP %d", status)
        except (OSError, ConnectionClosed, TimeoutError) as exc:
            log.warning("cannot reach %s: %s", url, exc)
        failures += 1
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (failures - 1))
        time.sleep(delay * random.uniform(0.8, 1.2))
