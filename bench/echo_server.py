"""A bare grpc.aio server: the ceiling for unary calls on this machine.

    python bench/echo_server.py --listen 127.0.0.1:50199

It answers /orders.v1.OrderService/CreateOrder (and GetOrder) with a fixed, pre-serialized
Order of the size the service returns, doing no work at all: no parsing, no allocation,
no storage. Same server options as the service (server/app.py), same client, same port
type, so the ratio service / echo isolates what the service's own work costs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from grpc_serving import new_server, serve_until_signal  # noqa: E402

from server.gen.orders.v1 import orders_pb2  # noqa: E402

SERVICE = "orders.v1.OrderService"


def order_payload() -> bytes:
    """A typical created order (two lines, two allocations): about the service's answer."""
    order = orders_pb2.Order(
        order_id="o-" + "0123456789abcdef" * 2,
        request_id="bench-12345678-1234",
        customer_id="c1234",
        region="bench",
        policy=orders_pb2.ALLOCATION_POLICY_SPLIT,
        status=orders_pb2.ORDER_STATUS_ALLOCATED,
        version=1,
        total_minor=25_998,
        currency="EUR",
        client_id="anonymous",
    )
    for index, sku in enumerate(("sku-123", "sku-456")):
        order.lines.add(sku=sku, quantity=1, unit_price_minor=12_999, currency="EUR")
        order.allocations.add(line_index=index, sku=sku, location_id="loc-1.bench", quantity=1)
    order.create_time.FromSeconds(1_700_000_000)
    order.update_time.FromSeconds(1_700_000_000)
    order.expire_time.FromSeconds(1_700_000_900)
    return order.SerializeToString()


async def serve(listen: str) -> None:
    payload = order_payload()

    async def echo(_request: bytes, _context: Any) -> bytes:
        return payload

    handler = grpc.unary_unary_rpc_method_handler(echo)  # raw bytes in and out
    server = new_server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE, {"CreateOrder": handler, "GetOrder": handler}
            ),
        )
    )
    await serve_until_signal(server, listen, "echo server", grace=1)


def main() -> int:
    p = argparse.ArgumentParser(description="bare grpc.aio echo server (benchmark ceiling)")
    p.add_argument("--listen", default="127.0.0.1:0")
    args = p.parse_args()
    asyncio.run(serve(args.listen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
