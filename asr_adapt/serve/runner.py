"""Run the app with uvicorn: in the foreground (CLI) or in a thread on a free loopback port
(tests, the load benchmark).

No WebSocket keepalive pings: a streaming client that sends faster than the model decodes is
held back by not reading its socket (flow control), so its pongs would go unread and the
ping would kill a healthy session; a silent client is closed by ``stream_idle_s`` instead."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator


def serve_forever(app, host: str, port: int) -> None:
    """Serve until interrupted (the ``asr-adapt serve`` command)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False, ws_ping_interval=None)


@contextlib.contextmanager
def serve_in_thread(app, host: str = "127.0.0.1", start_timeout_s: float = 60.0) -> Iterator[str]:
    """Start ``app`` on an ephemeral port of ``host`` in a thread; yields its base URL.

    The socket is bound here (port 0: the kernel picks a free port), so there is no race
    between choosing a port and binding it.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                           ws_ping_interval=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
