"""`python -m server`: run the order service (flags and ORDERS_* environment variables)."""

from __future__ import annotations

import asyncio
import sys

from server.app import OrderServer
from server.config import load_settings
from server.logging_setup import configure


def main(argv: list[str] | None = None) -> int:
    settings = load_settings(argv)
    configure(settings.log_level)
    asyncio.run(OrderServer(settings).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
