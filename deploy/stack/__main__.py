"""Entry point: ``python -m deploy.stack up|down|status|env [--only nats|cassandra]``."""

from deploy.stack.cli import main

raise SystemExit(main())
