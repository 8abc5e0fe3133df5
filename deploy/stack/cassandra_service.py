"""Apache Cassandra 5.0, single node, run straight from the cached jars with ``java``."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from deploy.stack import proc
from deploy.stack.config import StackConfig
from deploy.stack.errors import StackError
from deploy.stack.jars import ensure_jars
from deploy.stack.proc import Progress
from deploy.stack.service import PortSpec, Service

MAIN_CLASS = "org.apache.cassandra.service.CassandraDaemon"
START_MARKER = "=== deploy.stack: starting cassandra at"
CLUSTER_NAME = "orders-local"
SUPPORTED_JAVA = (11, 17)
JAVA_HINT = "install OpenJDK 17: apt-get install openjdk-17-jre-headless (or set JAVA_HOME)"

# From Cassandra 5.0's conf/jvm17-server.options (JPMS section): Cassandra reaches into JDK
# internals (unsafe memory, direct buffers, JMX, attach) and needs these on Java 17.
JPMS_OPTIONS: tuple[str, ...] = (
    "-Djdk.attach.allowAttachSelf=true",
    "--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports=java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-exports=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-exports=java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports=java.sql/java.sql=ALL-UNNAMED",
    "--add-exports=java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports=jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports=jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports=jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens=jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.math=ALL-UNNAMED",
    "--add-opens=java.base/java.net=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED",
)

# conf/jvm17-server.options (G1) + conf/jvm-server.options (general), minus what only matters
# for big production heaps (AlwaysPreTouch makes start-up slow; NUMA is irrelevant here).
GC_OPTIONS: tuple[str, ...] = (
    "-XX:+UseG1GC",
    "-XX:+ParallelRefProcEnabled",
    "-XX:MaxTenuringThreshold=1",
    "-XX:G1RSetUpdatingPauseTimePercent=5",
    "-XX:MaxGCPauseMillis=300",
    "-XX:InitiatingHeapOccupancyPercent=70",
)
GENERAL_OPTIONS: tuple[str, ...] = (
    "-ea",
    "-da:net.openhft...",
    "-XX:+UseThreadPriorities",
    "-Xss256k",
    "-XX:+UseTLAB",
    "-XX:+ResizeTLAB",
    "-XX:+PerfDisableSharedMem",
    "-XX:+HeapDumpOnOutOfMemoryError",
    "-XX:+CrashOnOutOfMemoryError",
    "-Djava.net.preferIPv4Stack=true",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
)
# A single local node has nobody to gossip with: skip the waits meant for real clusters.
FAST_START_OPTIONS: tuple[str, ...] = (
    "-Dcassandra.skip_wait_for_gossip_to_settle=0",
    "-Dcassandra.ring_delay_ms=0",
    "-Dcassandra.superuser_setup_delay_ms=0",
    "-Dcassandra.disable_auth_caches_remote_configuration=true",
)

_JAVA_VERSION_RE = re.compile(r'version "(\d+)(?:\.(\d+))?')


def _cql_release_version(host: str, port: int, timeout: float) -> str | None:
    """``SELECT release_version FROM system.local`` through the CQL driver; None on failure."""
    from cassandra.cluster import (
        EXEC_PROFILE_DEFAULT,
        Cluster,
        ExecutionProfile,
    )
    from cassandra.policies import WhiteListRoundRobinPolicy

    driver_log = logging.getLogger("cassandra")
    saved_level = driver_log.level
    driver_log.setLevel(logging.CRITICAL)  # connection-refused noise while it boots
    cluster = Cluster(
        [host],
        port=port,
        execution_profiles={
            EXEC_PROFILE_DEFAULT: ExecutionProfile(
                load_balancing_policy=WhiteListRoundRobinPolicy([host]),
                request_timeout=timeout,
            )
        },
        connect_timeout=timeout,
        control_connection_timeout=timeout,
        # a probe needs no schema or token map: skip fetching them
        schema_metadata_enabled=False,
        token_metadata_enabled=False,
    )
    try:
        session = cluster.connect()
        row = session.execute("SELECT release_version FROM system.local").one()
        return None if row is None else str(row[0])
    except Exception:  # any driver error means "not ready yet"
        return None
    finally:
        cluster.shutdown()
        driver_log.setLevel(saved_level)


class CassandraService(Service):
    name = "cassandra"

    def __init__(self, cfg: StackConfig) -> None:
        super().__init__(cfg)
        self._jars: list[Path] | None = None
        self._java: str | None = None
        self._java_version_text = ""
        self._cds_in_use: Path | None = None

    # -- layout ----------------------------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        return self.cfg.cassandra_dir

    @property
    def conf_dir(self) -> Path:
        return self.state_dir / "conf"

    @property
    def yaml_file(self) -> Path:
        return self.conf_dir / "cassandra.yaml"

    @property
    def logback_file(self) -> Path:
        return self.conf_dir / "logback.xml"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def log_file(self) -> Path:
        """Cassandra's own log (logback); the JVM's stdout/stderr go to ``stdout.log``."""
        return self.logs_dir / "system.log"

    @property
    def stdout_file(self) -> Path:
        return self.logs_dir / "stdout.log"

    def ports(self) -> list[PortSpec]:
        specs = [
            PortSpec(self.cfg.cql_port, "ORDERS_CQL_PORT", "cql"),
            PortSpec(self.cfg.cql_storage_port, "ORDERS_CQL_STORAGE_PORT", "storage"),
        ]
        if self.cfg.cassandra_jmx_port is not None:
            specs.append(PortSpec(self.cfg.cassandra_jmx_port, "ORDERS_CASSANDRA_JMX_PORT", "jmx"))
        return specs

    # -- prerequisites ---------------------------------------------------------------------------
    def java(self) -> str:
        if self._java is not None:
            return self._java
        java_home = os.environ.get("JAVA_HOME", "").strip()
        candidate = Path(java_home) / "bin" / "java" if java_home else None
        java = (
            str(candidate) if candidate is not None and candidate.is_file() else None
        ) or shutil.which("java")
        if java is None:
            raise StackError("cassandra: `java` not found (JAVA_HOME or PATH)", hint=JAVA_HINT)
        try:
            out = subprocess.run(
                [java, "-version"], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StackError(
                f"cassandra: cannot run {java} -version: {exc}", hint=JAVA_HINT
            ) from exc
        m = _JAVA_VERSION_RE.search(out.stderr + out.stdout)
        if m is None:
            raise StackError(
                f"cassandra: cannot tell the Java version of {java}",
                details=(out.stderr + out.stdout).strip(),
                hint=JAVA_HINT,
            )
        major = int(m.group(1)) if m.group(1) != "1" else int(m.group(2) or 0)
        if major not in SUPPORTED_JAVA:
            raise StackError(
                f"cassandra: Cassandra {self.cfg.cassandra_version} runs on Java 11 or 17, "
                f"but {java} is Java {major}",
                hint=JAVA_HINT,
            )
        self._java = java
        self._java_version_text = (out.stderr + out.stdout).strip()
        return java

    def preflight(self) -> None:
        self.java()

    # -- generated files -------------------------------------------------------------------------
    def render_yaml(self) -> str:
        c = self.cfg
        d = self.state_dir
        return f"""\
# Generated by `python -m deploy.stack up` on every start; do not edit.
# Change ORDERS_CQL_* / ORDERS_CASSANDRA_* environment variables instead (docs/local-stack.md).
cluster_name: '{CLUSTER_NAME}'
num_tokens: 1
initial_token: 0
auto_bootstrap: false

listen_address: {c.host}
rpc_address: {c.host}
storage_port: {c.cql_storage_port}
native_transport_port: {c.cql_port}
start_native_transport: true
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "{c.host}:{c.cql_storage_port}"
endpoint_snitch: SimpleSnitch
partitioner: org.apache.cassandra.dht.Murmur3Partitioner

authenticator:
  class_name: org.apache.cassandra.auth.AllowAllAuthenticator
authorizer:
  class_name: org.apache.cassandra.auth.AllowAllAuthorizer
role_manager:
  class_name: org.apache.cassandra.auth.CassandraRoleManager
network_authorizer:
  class_name: org.apache.cassandra.auth.AllowAllNetworkAuthorizer

data_file_directories:
  - {d / "data"}
commitlog_directory: {d / "commitlog"}
saved_caches_directory: {d / "saved_caches"}
hints_directory: {d / "hints"}
cdc_raw_directory: {d / "cdc_raw"}

# Durability: the commit log is fsynced every 10 s (Cassandra's default). A write is
# acknowledged once it is in the commit log buffer, so a whole-machine crash (not a process
# crash) can lose up to the last 10 s of acknowledged writes on this single node. With RF=3 in
# production the other replicas cover that window. See docs/local-stack.md.
commitlog_sync: periodic
commitlog_sync_period: 10000ms

# A fresh local node needs no compatibility with Cassandra 4 sstables or messaging.
storage_compatibility_mode: NONE
# Tests create and drop many keyspaces: do not keep a snapshot of each dropped one.
auto_snapshot: false
concurrent_compactors: 1
heap_dump_path: {d / "logs"}
"""

    def render_logback(self) -> str:
        log = self.log_file
        return f"""\
<!-- Generated by `python -m deploy.stack up`; do not edit. -->
<configuration scan="false" debug="false">
  <appender name="SYSTEMLOG" class="ch.qos.logback.core.rolling.RollingFileAppender">
    <file>{log}</file>
    <rollingPolicy class="ch.qos.logback.core.rolling.SizeAndTimeBasedRollingPolicy">
      <fileNamePattern>{log}.%d{{yyyy-MM-dd}}.%i.gz</fileNamePattern>
      <maxFileSize>20MB</maxFileSize>
      <maxHistory>3</maxHistory>
      <totalSizeCap>100MB</totalSizeCap>
    </rollingPolicy>
    <encoder>
      <pattern>%-5level [%thread] %date{{ISO8601}} %logger{{0}} - %msg%n</pattern>
    </encoder>
  </appender>
  <appender name="ASYNCLOG" class="ch.qos.logback.classic.AsyncAppender">
    <queueSize>1024</queueSize>
    <discardingThreshold>0</discardingThreshold>
    <includeCallerData>false</includeCallerData>
    <appender-ref ref="SYSTEMLOG"/>
  </appender>
  <root level="INFO">
    <appender-ref ref="ASYNCLOG"/>
  </root>
  <logger name="org.apache.cassandra" level="INFO"/>
</configuration>
"""

    def prepare(self, progress: Progress) -> None:
        self._jars = ensure_jars(self.cfg, progress)
        subdirs = (
            "conf",
            "data",
            "commitlog",
            "saved_caches",
            "hints",
            "cdc_raw",
            "logs",
            "triggers",
        )
        for sub in subdirs:
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        self.yaml_file.write_text(self.render_yaml(), encoding="utf-8")
        self.logback_file.write_text(self.render_logback(), encoding="utf-8")

    def _cds_options(self, java: str, classpath: str, opts: list[str]) -> list[str]:
        """Application class-data sharing: ~20% less CPU to start, from the second start on.

        The first start records the loaded classes; the JVM writes the archive when it exits
        (on `down`). Later starts map it. The file name is a hash of everything the archive
        depends on, so a new JDK, jar set or JVM option simply records a new one. If the JVM
        cannot use an archive it says so in stdout.log and starts without it.
        """
        self._cds_in_use = None
        if not self.cfg.cassandra_cds:
            return []
        digest = hashlib.sha256(
            "\0".join([java, self._java_version_text, classpath, *opts]).encode()
        ).hexdigest()[:16]
        jsa = self.state_dir / f"cds-{digest}.jsa"
        flags = ["-XX:+UnlockDiagnosticVMOptions", "-XX:+AllowArchivingWithJavaAgent"]
        if jsa.is_file() and jsa.stat().st_size > 0:
            self._cds_in_use = jsa
            return [*flags, f"-XX:SharedArchiveFile={jsa}"]
        for old in [*self.state_dir.glob("cds-*.jsa"), *self.state_dir.glob("cds-*.partial")]:
            old.unlink(missing_ok=True)
        # Written at JVM exit; renamed to .jsa by after_stop() only after a clean exit, so a
        # half-written archive (JVM killed while dumping) is never used.
        return [*flags, f"-XX:ArchiveClassesAtExit={jsa.with_suffix('.partial')}"]

    def after_stop(self, how: str) -> None:
        for partial in self.state_dir.glob("cds-*.partial"):
            if how == "terminated" and partial.stat().st_size > 0:
                partial.replace(partial.with_suffix(".jsa"))
            else:
                partial.unlink(missing_ok=True)

    def argv(self) -> list[str]:
        if self._jars is None:
            raise StackError("cassandra: prepare() must run before argv()")
        jars = sorted(self._jars, key=lambda p: (not p.name.startswith("cassandra-all-"), p.name))
        jamm = [j for j in jars if j.name.startswith("jamm-")]
        heap = self.cfg.cassandra_heap
        opts: list[str] = [
            f"-Xms{heap}",
            f"-Xmx{heap}",
            *GC_OPTIONS,
            *GENERAL_OPTIONS,
            f"-XX:HeapDumpPath={self.logs_dir}",
            f"-XX:ErrorFile={self.logs_dir / 'hs_err_pid%p.log'}",
            *JPMS_OPTIONS,
            *(f"-javaagent:{j}" for j in jamm[:1]),
            f"-Dcassandra.config={self.yaml_file.as_uri()}",
            f"-Dcassandra.storagedir={self.state_dir}",
            f"-Dcassandra.logdir={self.logs_dir}",
            f"-Dcassandra.triggers_dir={self.state_dir / 'triggers'}",
            f"-Dlogback.configurationFile={self.logback_file}",
            *FAST_START_OPTIONS,
        ]
        if self.cfg.cassandra_jmx_port is not None:
            opts.append(f"-Dcassandra.jmx.local.port={self.cfg.cassandra_jmx_port}")
        classpath = os.pathsep.join(str(j) for j in jars)
        java = self.java()
        cds = self._cds_options(java, classpath, opts)
        return [java, *cds, *opts, "-cp", classpath, MAIN_CLASS]

    def matches(self, argv: list[str]) -> bool:
        return MAIN_CLASS in argv and f"-Dcassandra.config={self.yaml_file.as_uri()}" in argv

    # -- running ---------------------------------------------------------------------------------
    def start(self, progress: Progress) -> int:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        argv = self.argv()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        for path in (self.stdout_file, self.log_file):
            with path.open("ab") as log:
                log.write(f"{START_MARKER} {stamp} ===\n".encode())
        pid = proc.spawn(argv, self.stdout_file, cwd=self.state_dir)
        proc.write_pid(self.pid_file, pid)
        return pid

    def healthy(self, timeout: float = 2.0) -> bool:
        if not proc.port_answers(self.cfg.host, self.cfg.cql_port, min(timeout, 0.5)):
            return False
        return _cql_release_version(self.cfg.host, self.cfg.cql_port, timeout) is not None

    def wait_ready(self, pid: int, started: float, progress: Progress) -> None:
        def ready() -> bool:
            # cheap TCP probe first; the driver only once the native transport listens
            if not proc.port_answers(self.cfg.host, self.cfg.cql_port, 0.3):
                return False
            return _cql_release_version(self.cfg.host, self.cfg.cql_port, 5.0) is not None

        def wait(pid: int, started: float) -> None:
            self._wait_until(
                pid,
                started,
                self.cfg.cassandra_start_timeout,
                ready,
                progress,
                poll=0.25,
                note_every=10.0,
                timeout_env="ORDERS_CASSANDRA_START_TIMEOUT",
            )

        try:
            wait(pid, started)
        except StackError:
            archive = self._cds_in_use
            if archive is None or proc.alive(pid):
                raise
            # A broken class-data archive can crash the JVM at start: drop it, try once more.
            progress(f"cassandra: JVM exited while using {archive.name}; retrying without it")
            archive.unlink(missing_ok=True)
            self._cds_in_use = None
            pid = self.start(progress)
            wait(pid, time.monotonic())

    def release_version(self, timeout: float = 5.0) -> str | None:
        return _cql_release_version(self.cfg.host, self.cfg.cql_port, timeout)

    def _log_excerpt(self, lines: int = 30) -> str:
        """The tails of system.log and stdout.log, from the latest start only."""
        parts: list[str] = []
        for path, n in ((self.log_file, lines), (self.stdout_file, 15)):
            text = proc.tail(path, 400).split(START_MARKER)[-1].split("\n", 1)[-1]
            text = "\n".join(text.splitlines()[-n:])
            if text.strip():
                parts.append(f"--- last lines of {path} (this start) ---\n{text}\n---")
        return "\n".join(parts) or f"(no output in {self.log_file} or {self.stdout_file})"

    def failure_hint(self) -> str:
        return (
            f"read {self.log_file} (and {self.stdout_file} for JVM errors); common causes: a port "
            "taken (ORDERS_CQL_PORT / ORDERS_CQL_STORAGE_PORT), too little memory "
            "(ORDERS_CASSANDRA_HEAP), or data from another Cassandra version/cluster in "
            f"{self.state_dir} (`python -m deploy.stack down --wipe --only cassandra` resets it)"
        )
