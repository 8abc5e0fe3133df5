"""Start-up and shutdown shared by the benchmark's stand-in gRPC servers (not product code).

The echo server and the per-request baseline use the service's transport options
(server/app.py), so that the ratios between them and the service measure the work each
one does, not a difference in how gRPC was configured.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import grpc

# The service's limit (server/app.py): admission is not the transport's job.
MAX_CONCURRENT_STREAMS = 65_536


def new_server() -> grpc.aio.Server:
    return grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_concurrent_streams", MAX_CONCURRENT_STREAMS),
        ]
    )


async def serve_until_signal(server: grpc.aio.Server, listen: str, name: str, grace: float) -> None:
    """Binds `listen`, starts, says on stderr which port it got (the runner reads it),
    then serves until SIGTERM or SIGINT and stops with `grace` seconds for calls in flight."""
    port = server.add_insecure_port(listen)
    await server.start()
    print(f"{name} on port {port}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=grace)
