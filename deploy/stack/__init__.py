"""Local development stack: NATS JetStream and Cassandra 5 on 127.0.0.1.

CLI: ``python -m deploy.stack up|down|status|env [--only nats|cassandra]``.

API::

    from deploy import stack

    cfg = stack.config()          # ports, URLs, folders (from ORDERS_* environment variables)
    stack.up()                    # or stack.up(only="nats"); idempotent, blocks until ready
    stack.status()                # list[ServiceStatus]
    stack.down(wipe=False)

State lives in ``.state/`` of the checkout; Cassandra's jars are cached in
``~/.cache/orders-service`` (``ORDERS_CACHE_DIR``). See docs/local-stack.md.
"""

from deploy.stack.api import client_env, config, down, services, status, up
from deploy.stack.config import StackConfig
from deploy.stack.errors import StackError
from deploy.stack.service import ServiceStatus

__all__ = [
    "ServiceStatus",
    "StackConfig",
    "StackError",
    "client_env",
    "config",
    "down",
    "services",
    "status",
    "up",
]
