"""The order processing service: gRPC front end, Rust engine, CQL store, JetStream events."""

import sys

from server.engine_build import EngineBuildFinder

# `import server._engine` loads the fastest build of the engine this CPU can run
# (server/engine_build.py).
if not any(isinstance(finder, EngineBuildFinder) for finder in sys.meta_path):
    sys.meta_path.insert(0, EngineBuildFinder())
