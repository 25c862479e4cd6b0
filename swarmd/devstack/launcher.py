"""The local stack: placement, scheduler, model server, LiteLLM proxy, app + daprd.

``swarmd run`` / ``make run`` starts everything, waits on health endpoints (no
sleeps), runs a demo swarm, prints the result, and keeps serving until Ctrl-C.
``swarmd demo`` exits after the result. Tests use :class:`Stack` directly.

The app and its daprd start through the Dapr CLI's multi-app run
(``dapr run -f``, mode ``cli``), as a user would, or as two plain processes
(mode ``direct``) so crash tests can SIGKILL and restart exactly one of them.

Everything a run writes goes under the data dir (default ``.data``):
``logs/*.log``, the scheduler's etcd data, the SQLite state store, the model
server's request log, the generated API token and gateway key, Redis's data
(the lock store) and the Dapr components rendered with the stack's ports.

Beside the app runs the watchdog (``swarmd-watchdog``), as the Helm chart runs
it beside the app container: it releases the locks of an app process that was
SIGKILLed. Both get the same ``POD_NAME`` (one per data dir), the local
stand-in for a pod.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import httpx
import yaml

from swarmd.config import Settings
from swarmd.engine.health import Persistent, probe

ROOT = Path(__file__).resolve().parents[2]
#: ``{"api_url": ...}`` of a started stack, in its data dir (read by the CLI client)
STACK_FILE = "stack.json"
APP_ID = "swarmd"


#: LiteLLM's own knob for the proxy's cyclic garbage collector (gen0,gen1,gen2; the chart's
#: litellm.gcThreshold). Python's default (700,10,10) ran it ~1.5 times per call over the
#: proxy's large heap; with these, 1,500 calls cost 8.7 ms of proxy CPU each instead of
#: 10.9 (medians of 7 alternating runs, docs/benchmarks.md#the-gateway), for 8 MB more RSS.
GATEWAY_GC_THRESHOLD = "50000,50,100"


class StackError(Exception):
    """The stack cannot start; the message says what to do."""

    def __init__(self, message: str, code: int = 3) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Ports:
    """Every port the stack listens on. All sit below Linux's ephemeral range
    (32768-60999) even with offsets, so an outgoing connection's local port can
    never take one between the free-port check and the bind. (Dapr's own
    defaults, 50001/50005/50006, are inside that range.)"""

    placement: int = 20005
    placement_health: int = 20080
    placement_metrics: int = 20090
    placement_raft: int = 20201
    scheduler: int = 20006
    scheduler_health: int = 20081
    scheduler_metrics: int = 20091
    scheduler_etcd_client: int = 20379
    scheduler_etcd_peer: int = 20380
    modelserver: int = 8700
    litellm: int = 4000
    app: int = 8000
    dapr_http: int = 3500
    dapr_grpc: int = 20001
    dapr_internal_grpc: int = 20002
    dapr_metrics: int = 20092
    # Not 6379 (a system Redis); no other port ends in 99, so no offset in steps of
    # 100 lands one stack's Redis on another stack's port.
    redis: int = 16399
    watchdog: int = 8081
    slack: int = 8710

    @classmethod
    def block(cls, base: int) -> Ports:
        """Every port in one contiguous block from ``base`` (for test stacks: blocks
        that do not overlap never collide, which uniformly shifted sets can)."""
        names = list(cls.__dataclass_fields__)
        return cls(**{n: base + i for i, n in enumerate(names)})

    @classmethod
    def for_tests(cls, slot: int) -> Ports:
        """Test stack number ``slot // 100`` (slots are multiples of 100)."""
        return cls.block(21000 + (slot // 100) * 25)

    #: ports of one app + daprd + watchdog pair; a replica pair shifts them by REPLICA_STRIDE
    PAIR = ("app", "dapr_http", "dapr_grpc", "dapr_internal_grpc", "dapr_metrics", "watchdog")
    REPLICA_STRIDE = 5000

    def replica(self, index: int) -> Ports:
        """The ports of replica pair ``index`` (0: these): the control plane, Redis, the
        model server and the gateway are shared; each pair's own ports move by
        ``REPLICA_STRIDE * index`` (still below the ephemeral range for every offset
        the tests and ``SWARMD_PORT_OFFSET`` use)."""
        shift = self.REPLICA_STRIDE * index
        return replace(self, **{n: getattr(self, n) + shift for n in self.PAIR})

    @classmethod
    def with_offset(cls, offset: int) -> Ports:
        base = cls()
        return cls(**{k: v + offset for k, v in base.__dict__.items()})


def dapr_bin_dir() -> Path:
    return Path(os.environ.get("DAPR_RUNTIME_PATH") or Path.home()) / ".dapr" / "bin"


def find_binary(name: str) -> Path:
    p = dapr_bin_dir() / name
    if p.is_file() and os.access(p, os.X_OK):
        return p
    found = shutil.which(name)
    if found:
        return Path(found)
    raise StackError(
        f"{name} not found in {dapr_bin_dir()} or on PATH. Run `make setup` (it builds the "
        "Dapr runtime from its Go modules), or `dapr init --slim` for official binaries."
    )


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


@dataclass
class Stack:
    data_dir: Path = field(default_factory=lambda: ROOT / ".data")
    ports: Ports = field(default_factory=Ports)
    app_mode: Literal["cli", "direct"] = "cli"
    model_latency_ms: int = 0
    app_env: dict[str, str] = field(default_factory=dict)
    #: extra daprd flags (direct mode), e.g. profiling for benchmarks
    daprd_args: list[str] = field(default_factory=list)
    watchdog_env: dict[str, str] = field(default_factory=dict)
    #: extra environment of the LiteLLM proxy (benchmarks compare its settings)
    gateway_env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)
    _health: Persistent = field(default_factory=Persistent, repr=False)
    #: 0 for the stack itself; n for its n-th extra app + daprd + watchdog pair (a second
    #: "pod" of the same app id, sharing the control plane, Redis and the state store)
    replica_index: int = 0
    replicas: list[Stack] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()
        self.logs = self.data_dir / "logs"
        self.app_dir = self.data_dir / "app"
        self.api_token = self._secret("api-token")
        self.gateway_key = "sk-" + self._secret("litellm-master-key")
        self.slack_signing_secret = self._secret("slack-signing-secret")
        self.slack_bot_token = self._secret("slack-bot-token", prefix="xoxb-")
        self.components_dir = self.data_dir / "components"
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:10]
        self.pod_name = f"local-{digest}"
        self.suffix = f"-{self.replica_index + 1}" if self.replica_index else ""
        self.pod_name += self.suffix
        self.app_api_token = self._secret("app-api-token")

    # -- helpers ---------------------------------------------------------
    def _secret(self, name: str, prefix: str = "") -> str:
        """A random local secret, generated once per data dir (mode 0600)."""
        p = self.data_dir / "secrets" / name
        if p.exists():
            return p.read_text().strip()
        p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        value = prefix + secrets.token_urlsafe(24)
        p.write_text(value)
        p.chmod(0o600)
        return value

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.app}"

    @property
    def watchdog_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.watchdog}"

    @property
    def dapr_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.dapr_http}"

    @property
    def model_server_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.modelserver}"

    @property
    def slack_url(self) -> str:
        """The local Slack Web API server (swarmd.devstack.slackserver)."""
        return f"http://127.0.0.1:{self.ports.slack}"

    @property
    def model_log(self) -> Path:
        return self.data_dir / "modelserver" / "requests.jsonl"

    def _spawn(
        self, name: str, cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> Proc:
        self.logs.mkdir(parents=True, exist_ok=True)
        name += self.suffix
        log = self.logs / f"{name}.log"
        fh = log.open("ab")
        full_env = {**os.environ, "DAPR_HOST_IP": "127.0.0.1", **(env or {})}
        popen = subprocess.Popen(
            cmd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd or ROOT,
            start_new_session=True,
        )
        fh.close()
        proc = Proc(name, popen, log)
        self.procs[name] = proc
        return proc

    def _wait_http(
        self,
        proc: Proc,
        url: str,
        timeout_s: float = 120.0,
        headers: dict[str, str] | None = None,
        accept: Callable[[int], bool] = lambda status: status < 300,
    ) -> None:
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2) as c:
            while True:
                if proc.popen.poll() is not None:
                    raise StackError(
                        f"{proc.name} exited with {proc.popen.returncode} before it was ready; "
                        f"last lines of {proc.log}:\n{tail(proc.log)}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if accept(c.get(url, headers=headers).status_code):
                        return
                if time.monotonic() > deadline:
                    raise StackError(
                        f"{proc.name} not ready at {url} after {timeout_s:.0f}s; "
                        f"see {proc.log}:\n{tail(proc.log)}"
                    )
                time.sleep(0.1)  # polling interval of a health probe, not a readiness sleep

    # -- start -----------------------------------------------------------
    def check_ports(self) -> None:
        taken = [f"{k}={v}" for k, v in self.ports.__dict__.items() if not port_free(v)]
        if taken:
            raise StackError(
                "ports already in use: " + ", ".join(taken) + ". Stop whatever holds them "
                "(another `make run`?), or set SWARMD_PORT_OFFSET=100 to shift every port."
            )

    def start(self) -> None:
        for b in ("placement", "scheduler", "daprd") + (
            ("dapr",) if self.app_mode == "cli" else ()
        ):
            find_binary(b)
        redis_binary()
        self.check_ports()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.app_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.start_redis()
            self.start_control_plane()
            self.start_model_server()
            self.start_slack_server()
            self.start_gateway()
            self.start_app()
            self.start_watchdog()
        except BaseException:
            self.stop()
            raise
        # where clients find this stack (`swarmd runs ...`); the token stays in secrets/
        (self.data_dir / STACK_FILE).write_text(json.dumps({"api_url": self.api_url}) + "\n")

    def start_redis(self) -> Proc:
        """Redis for the lock store: loopback only, no persistence (locks are ephemeral)."""
        data = self.data_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        proc = self._spawn(
            "redis",
            [
                str(redis_binary()),
                "--port",
                str(self.ports.redis),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(data),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
        )
        self._wait_redis(proc)
        return proc

    def _wait_redis(self, proc: Proc, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.popen.poll() is not None:
                raise StackError(
                    f"redis exited with {proc.popen.returncode} before it was ready; "
                    f"last lines of {proc.log}:\n{tail(proc.log)}"
                )
            addr = ("127.0.0.1", self.ports.redis)
            with contextlib.suppress(OSError), socket.create_connection(addr, timeout=1) as c:
                c.sendall(b"PING\r\n")
                if c.recv(64).startswith(b"+PONG"):
                    return
            if time.monotonic() > deadline:
                raise StackError(f"redis not answering PING after {timeout_s:.0f}s; see {proc.log}")
            time.sleep(0.05)  # polling interval of a readiness probe, not a readiness sleep

    def render_components(self) -> Path:
        """components/*.yaml with this stack's addresses (the Redis port of the lock store
        and the pub/sub)."""
        self.components_dir.mkdir(parents=True, exist_ok=True)
        for src in sorted((ROOT / "components").glob("*.yaml")):
            doc: dict[str, Any] = yaml.safe_load(src.read_text())
            if doc.get("spec", {}).get("type", "").startswith(("lock.redis", "pubsub.redis")):
                for m in doc["spec"].get("metadata", []):
                    if m.get("name") == "redisHost":
                        m["value"] = f"127.0.0.1:{self.ports.redis}"
            (self.components_dir / src.name).write_text(yaml.safe_dump(doc, sort_keys=False))
        return self.components_dir

    def start_control_plane(self) -> None:
        pl = self.start_placement(wait=False)
        sc = self.start_scheduler(wait=False)
        self.wait_placement(pl)
        self.wait_scheduler(sc)

    def start_placement(self, wait: bool = True) -> Proc:
        p = self.ports
        pl = self._spawn(
            "placement",
            [
                str(find_binary("placement")),
                "--port",
                str(p.placement),
                "--healthz-port",
                str(p.placement_health),
                "--metrics-port",
                str(p.placement_metrics),
                "--initial-cluster",
                f"dapr-placement-0=127.0.0.1:{p.placement_raft}",
                "--listen-address",
                "127.0.0.1",
            ],
        )
        if wait:
            self.wait_placement(pl)
        return pl

    def wait_placement(self, proc: Proc) -> None:
        self._wait_http(proc, f"http://127.0.0.1:{self.ports.placement_health}/healthz")

    def start_scheduler(self, wait: bool = True) -> Proc:
        p = self.ports
        sc = self._spawn(
            "scheduler",
            [
                str(find_binary("scheduler")),
                "--port",
                str(p.scheduler),
                "--healthz-port",
                str(p.scheduler_health),
                "--metrics-port",
                str(p.scheduler_metrics),
                "--listen-address",
                "127.0.0.1",
                "--etcd-data-dir",
                str(self.data_dir / "scheduler"),
                "--etcd-client-port",
                str(p.scheduler_etcd_client),
                "--etcd-initial-cluster",
                f"dapr-scheduler-server-0=http://127.0.0.1:{p.scheduler_etcd_peer}",
            ],
        )
        if wait:
            self.wait_scheduler(sc)
        return sc

    def wait_scheduler(self, proc: Proc) -> None:
        self._wait_http(proc, f"http://127.0.0.1:{self.ports.scheduler_health}/healthz")

    def start_model_server(self) -> Proc:
        cmd = [
            sys.executable,
            "-m",
            "swarmd",
            "modelserver",
            "--port",
            str(self.ports.modelserver),
            "--log",
            str(self.model_log),
        ]
        if self.model_latency_ms:
            cmd += ["--latency-ms", str(self.model_latency_ms)]
        ms = self._spawn("modelserver", cmd)
        self._wait_http(ms, f"{self.model_server_url}/health")
        return ms

    def start_slack_server(self) -> None:
        """The local stand-in for Slack's Web API, accepting this stack's bot token."""
        cmd = [
            sys.executable,
            "-m",
            "swarmd",
            "slackserver",
            "--port",
            str(self.ports.slack),
            "--token-file",
            str(self.data_dir / "secrets" / "slack-bot-token"),
        ]
        proc = self._spawn("slackserver", cmd)
        self._wait_http(proc, f"{self.slack_url}/health")

    def upstream_env(self) -> dict[str, str]:
        """Where the gateway sends calls: a real provider if its key is set, else ours."""
        if os.environ.get("OPENAI_API_KEY"):
            return {
                "SWARMD_UPSTREAM_BASE_URL": os.environ.get(
                    "OPENAI_BASE_URL", "https://api.openai.com/v1"
                ),
                "SWARMD_UPSTREAM_API_KEY": os.environ["OPENAI_API_KEY"],
                "SWARMD_UPSTREAM_MODEL_A": "openai/gpt-4o-mini",
                "SWARMD_UPSTREAM_MODEL_B": "openai/gpt-4.1-mini",
                "SWARMD_UPSTREAM_MODEL_BACKUP": "openai/gpt-4o-mini",
            }
        return {
            "SWARMD_UPSTREAM_BASE_URL": f"{self.model_server_url}/v1",
            "SWARMD_UPSTREAM_API_KEY": "sk-local-model-server",
            "SWARMD_UPSTREAM_MODEL_A": "openai/mock-a",
            "SWARMD_UPSTREAM_MODEL_B": "openai/mock-b",
            "SWARMD_UPSTREAM_MODEL_BACKUP": "openai/mock-backup",
        }

    def start_gateway(self) -> Proc:
        litellm = Path(sys.executable).parent / "litellm"
        if not litellm.exists():
            raise StackError("litellm not installed in this environment: run `make setup`")
        gw = self._spawn(
            "litellm",
            [
                str(litellm),
                "--config",
                str(ROOT / "gateway" / "litellm.yaml"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.ports.litellm),
                "--num_workers",
                "1",
            ],
            env={
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "LITELLM_MASTER_KEY": self.gateway_key,
                "LITELLM_LOG": "ERROR",
                "DISABLE_SCHEMA_UPDATE": "True",
                "PYTHON_GC_THRESHOLD": GATEWAY_GC_THRESHOLD,
                **self.upstream_env(),
                **self.gateway_env,
            },
        )
        self._wait_http(gw, f"http://127.0.0.1:{self.ports.litellm}/health/readiness")
        return gw

    def app_environment(self) -> dict[str, str]:
        p = self.ports
        return {
            "SWARMD_PORT": str(p.app),
            "SWARMD_API_TOKEN": self.api_token,
            "SWARMD_LLM_BASE_URL": f"http://127.0.0.1:{p.litellm}/v1",
            "SWARMD_LLM_API_KEY": self.gateway_key,
            "SWARMD_DATA_DIR": str(self.data_dir),
            "DAPR_HTTP_PORT": str(p.dapr_http),
            "DAPR_GRPC_PORT": str(p.dapr_grpc),
            "POD_NAME": self.pod_name,
            "SWARMD_PUBSUB_ENABLED": "true",
            # daprd sends it on every call to the app; the pub/sub routes require it
            "APP_API_TOKEN": self.app_api_token,
            "SWARMD_SLACK_API_URL": f"{self.slack_url}/api",
            "SWARMD_SLACK_SIGNING_SECRET": self.slack_signing_secret,
            "SWARMD_SLACK_BOT_TOKEN": self.slack_bot_token,
            "PYTHONUNBUFFERED": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            **self.app_env,
        }

    def max_body_size(self) -> str:
        """daprd's ``--max-body-size``: the app's gRPC message limit, so a history that
        the worker may receive is one daprd may send (swarmd/compose/grpc_limits.py)."""
        default = Settings.model_fields["grpc_max_message_mib"].default
        return f"{int(self.app_env.get('SWARMD_GRPC_MAX_MESSAGE_MIB', default))}Mi"

    def render_run_file(self) -> Path:
        spec: dict[str, Any] = yaml.safe_load((ROOT / "dapr.yaml").read_text())
        p = self.ports
        common = spec["common"]
        common["resourcesPath"] = str(self.render_components())
        common["configFilePath"] = str(ROOT / "config" / "daprconfig.yaml")
        app = spec["apps"][0]
        app.update(
            {
                "appDirPath": str(self.app_dir),
                "appPort": p.app,
                "daprHTTPPort": p.dapr_http,
                "daprGRPCPort": p.dapr_grpc,
                "daprInternalGRPCPort": p.dapr_internal_grpc,
                "metricsPort": p.dapr_metrics,
                "placementHostAddress": f"127.0.0.1:{p.placement}",
                "schedulerHostAddress": f"127.0.0.1:{p.scheduler}",
                "maxBodySize": self.max_body_size(),
                "command": [sys.executable, "-m", "swarmd", "serve"],
                "env": self.app_environment(),
            }
        )
        out = self.data_dir / "dapr.yaml"
        out.write_text(yaml.safe_dump(spec, sort_keys=False))
        return out

    def daprd_command(self) -> list[str]:
        p = self.ports
        return [
            str(find_binary("daprd")),
            "--app-id",
            APP_ID,
            "--app-port",
            str(p.app),
            "--dapr-http-port",
            str(p.dapr_http),
            "--dapr-grpc-port",
            str(p.dapr_grpc),
            "--dapr-internal-grpc-port",
            str(p.dapr_internal_grpc),
            "--metrics-port",
            str(p.dapr_metrics),
            "--placement-host-address",
            f"127.0.0.1:{p.placement}",
            "--scheduler-host-address",
            f"127.0.0.1:{p.scheduler}",
            "--resources-path",
            str(self.render_components()),
            "--config",
            str(ROOT / "config" / "daprconfig.yaml"),
            "--app-health-check-path",
            "/healthz",
            "--log-level",
            "info",
            "--max-body-size",
            self.max_body_size(),
            *self.daprd_args,
        ]

    def start_app(self) -> None:
        if self.app_mode == "cli":
            run_file = self.render_run_file()
            cli = self._spawn(
                "dapr-run",
                [str(find_binary("dapr")), "run", "-f", str(run_file)],
                env=self.app_environment(),
                cwd=self.data_dir,
            )
            self.wait_app_ready(cli)
        else:
            self.start_daprd()
            self.start_app_process()

    def start_daprd(self) -> Proc:
        proc = self._spawn(
            "daprd",
            self.daprd_command(),
            env={"APP_API_TOKEN": self.app_api_token},
            cwd=self.app_dir,
        )
        return proc

    def start_app_process(self) -> Proc:
        proc = self._spawn(
            "app",
            [sys.executable, "-m", "swarmd", "serve"],
            env=self.app_environment(),
            cwd=self.app_dir,
        )
        self.wait_app_ready(proc)
        return proc

    def wait_app_ready(self, proc: Proc) -> None:
        self._wait_http(proc, f"{self.api_url}/readyz", timeout_s=180)

    def watchdog_environment(self) -> dict[str, str]:
        env = {
            "SWARMD_WATCHDOG_HOST": "127.0.0.1",
            "SWARMD_WATCHDOG_PORT": str(self.ports.watchdog),
            # The host's process table holds other stacks' apps too: find ours through
            # the owner registry (same POD_NAME), not by command line.
            "SWARMD_WATCHDOG_APP_CMDLINE": "",
            "POD_NAME": self.pod_name,
            "DAPR_HTTP_PORT": str(self.ports.dapr_http),
            "DAPR_GRPC_PORT": str(self.ports.dapr_grpc),
            "PYTHONUNBUFFERED": "1",
        }
        app = self.procs.get("app" + self.suffix)
        if app is not None and app.popen.poll() is None:
            env["SWARMD_WATCHDOG_APP_PID"] = str(app.popen.pid)
        return {**env, **self.watchdog_env}

    def start_watchdog(self) -> Proc:
        """The watchdog beside the app, as the chart's sidecar (`swarmd-watchdog`)."""
        proc = self._spawn(
            "watchdog",
            [sys.executable, "-m", "swarmd.watchdog"],
            env=self.watchdog_environment(),
            cwd=self.data_dir,
        )
        self._wait_http(proc, f"{self.watchdog_url}/healthz", timeout_s=60)
        return proc

    # -- replicas (direct mode) -------------------------------------------
    def start_replica(self) -> Stack:
        """Start one more app + daprd + watchdog pair of the same app id on this stack's
        control plane: a second consumer in the pub/sub consumer group, a second host of
        workflow actors. Logs as ``app-2.log``, ``daprd-2.log``, ...; stopped with the stack."""
        pair = Stack(
            data_dir=self.data_dir,
            ports=self.ports.replica(len(self.replicas) + 1),
            app_mode="direct",
            model_latency_ms=self.model_latency_ms,
            app_env=self.app_env,
            daprd_args=self.daprd_args,
            watchdog_env=self.watchdog_env,
            replica_index=len(self.replicas) + 1,
        )
        pair.check_pair_ports()
        self.replicas.append(pair)
        pair.start_daprd()
        pair.start_app_process()
        pair.start_watchdog()
        return pair

    def check_pair_ports(self) -> None:
        taken = [
            f"{n}={getattr(self.ports, n)}"
            for n in Ports.PAIR
            if not port_free(getattr(self.ports, n))
        ]
        if taken:
            raise StackError(f"ports of replica {self.replica_index + 1} in use: {taken}")

    # -- crash helpers (direct mode) --------------------------------------
    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name + self.suffix]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, sig)
        proc.popen.wait(timeout=30)

    def restart_app(self) -> None:
        self.start_app_process()

    def restart_watchdog(self) -> None:
        self.start_watchdog()

    def scheduler_leases(self, client: httpx.Client | None = None) -> set[str]:
        """The etcd leases of the scheduler's cron leadership keys (its embedded etcd)."""
        body = {
            "key": base64.b64encode(b"dapr/leadership/").decode(),
            "range_end": base64.b64encode(b"dapr/leadership0").decode(),
        }
        url = f"http://127.0.0.1:{self.ports.scheduler_etcd_client}/v3/kv/range"
        with contextlib.ExitStack() as stack:
            c = client or stack.enter_context(httpx.Client(timeout=2))
            kvs = c.post(url, json=body).json().get("kvs", [])
        return {str(kv["lease"]) for kv in kvs if kv.get("lease")}

    def restart_scheduler(self, timeout_s: float = 60.0) -> list[str]:
        """Start the scheduler again and wait until it leads its jobs again; returns the
        leases of the dead process that it revoked.

        A SIGKILLed scheduler leaves its cron leadership key in its embedded etcd,
        under a lease of 20 s that etcd renews in full when it restarts (go-etcd-cron
        v0.12's fixed leadership TTL; no daprd or scheduler flag sets it). The new
        process will not take leadership while that key exists, so no reminder
        (activity dispatch, timer, retry) fires for ~21 s after the restart. A clean
        shutdown revokes the lease; here the stack revokes the dead process's lease
        for it, once the new process says it waits for leadership."""
        log = self.logs / f"scheduler{self.suffix}.log"
        offset = log.stat().st_size if log.exists() else 0
        proc = self.start_scheduler()
        revoke = f"http://127.0.0.1:{self.ports.scheduler_etcd_client}/v3/lease/revoke"
        released: set[str] = set()
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2) as c:
            while True:
                if proc.popen.poll() is not None:
                    raise StackError(f"scheduler exited; see {proc.log}:\n{tail(proc.log)}")
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                    leases = self.scheduler_leases(c)
                    with log.open("rb") as fh:
                        fh.seek(offset)
                        since = fh.read().decode(errors="replace")
                    if "leadership quorum reached" in since:
                        return sorted(released)
                    # still waiting for the old key: every leadership lease is the dead one's
                    if "attempting to get initial leadership" in since and (
                        "fetched initial leadership" not in since
                    ):
                        for lease in leases - released:
                            c.post(revoke, json={"ID": lease})
                            released.add(lease)
                if time.monotonic() > deadline:
                    raise StackError(f"scheduler took no leadership in {timeout_s:.0f}s")
                time.sleep(0.1)  # polling interval of its log and etcd, not a readiness sleep

    def restart_daprd(self) -> None:
        """Start daprd again; back once the app is ready and its workflow client reaches
        the new daprd (a read of an absent run answers 404, not 503: the client's gRPC
        channel reconnects on its own backoff, up to 1 s after daprd is up)."""
        self.start_daprd()
        app = self.procs["app" + self.suffix]
        self.wait_app_ready(app)
        self._wait_http(
            app,
            f"{self.api_url}/v1/runs/swarmd-restart-probe",
            timeout_s=60,
            headers={"Authorization": f"Bearer {self.api_token}"},
            accept=lambda status: status == 404,
        )

    #: what :meth:`restart` can bring back (direct mode), by process name
    RESTARTABLE = ("app", "daprd", "scheduler", "placement", "redis", "litellm", "watchdog")

    def restart(self, name: str) -> None:
        """Start process ``name`` again (after :meth:`kill`) and wait until it is healthy;
        for daprd, until the app is ready again on it."""
        starts: dict[str, Callable[[], object]] = {
            "app": self.restart_app,
            "daprd": self.restart_daprd,
            "scheduler": self.restart_scheduler,
            "placement": self.start_placement,
            "redis": self.start_redis,
            "litellm": self.start_gateway,
            "watchdog": self.restart_watchdog,
        }
        if name not in starts:
            raise StackError(f"cannot restart {name!r}: one of {', '.join(self.RESTARTABLE)}")
        starts[name]()

    # -- self-healing ------------------------------------------------------
    def heal(self, after_s: float = 10.0) -> str | None:
        """One look at the app and its daprd; restart the one at fault once the
        condition has held ``after_s`` seconds (see :mod:`swarmd.engine.health`):

        * daprd wedged (``/v1.0/healthz`` failing while ``/healthz/outbound``
          answers) or dead: restart daprd;
        * the app's workflow worker lost its stream (daprd healthy, no connected
          worker) or the app dead: restart the app.

        In ``cli`` mode the two run under the Dapr CLI: both are restarted. Returns
        what was restarted, or None."""
        with httpx.Client(timeout=2) as c:
            d = probe(c, self.ports.dapr_http).diagnosis
        held = self._health.see(d)
        if d == "ok" or held < after_s:
            return None
        target = "daprd" if d in ("daprd_wedged", "daprd_down") else "app"
        if self.app_mode == "cli":
            target = "dapr-run"
        print(f"swarmd: {d} for {held:.0f}s: restarting {target}", file=sys.stderr, flush=True)
        if target in self.procs:
            self.kill(target)
        if target == "dapr-run":
            self.start_app()
        else:
            self.restart(target)
        self._health = Persistent()
        return target

    # -- stop ------------------------------------------------------------
    def stop(self) -> None:
        for pair in reversed(self.replicas):
            pair.stop()
        self.replicas.clear()
        if not self.replica_index:  # a replica shares the data dir: not its file
            (self.data_dir / STACK_FILE).unlink(missing_ok=True)
        for proc in reversed(list(self.procs.values())):
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in reversed(list(self.procs.values())):
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait(timeout=10)
        self.procs.clear()

    # -- model server log --------------------------------------------------
    def model_calls(self, status: int | None = 200) -> list[dict[str, Any]]:
        if not self.model_log.exists():
            return []
        rows = [json.loads(line) for line in self.model_log.read_text().splitlines() if line]
        return [r for r in rows if status is None or r.get("status") == status]


def redis_binary() -> Path:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if not found:
        raise StackError(
            "redis-server not found (the lock store needs it). Run `make setup` "
            "(scripts/setup_redis.sh installs Debian's redis-server package)."
        )
    return Path(found)


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def running(stack: Stack) -> Iterator[Stack]:
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def run_demo(stack: Stack, task: str, agents: int) -> int:
    """Start a scatter-gather run, print progress and the result. 0 if it completed."""
    headers = {"Authorization": f"Bearer {stack.api_token}"}
    with httpx.Client(base_url=stack.api_url, headers=headers, timeout=30) as c:
        r = c.post(
            "/v1/runs", json={"swarm": "scatter_gather", "input": {"task": task, "agents": agents}}
        )
        if r.status_code >= 300:
            print(f"demo: start failed: {r.status_code} {r.text}", file=sys.stderr)
            return 1
        run_id = r.json()["run_id"]
        print(f"demo: run {run_id} started ({agents} agents)", flush=True)
        last = ""
        while True:
            view = c.get(f"/v1/runs/{run_id}").json()
            prog = view.get("progress") or {}
            line = f"{view['status']} {prog.get('phase', '')} {prog.get('agents_done', 0)}/{agents}"
            if line != last:
                print(f"demo: {line}", flush=True)
                last = line
            if view["status"] in ("completed", "failed", "terminated"):
                break
            time.sleep(0.5)  # progress polling interval for the human watching
    if view["status"] != "completed":
        print(f"demo: run ended {view['status']}: {view.get('error')}", file=sys.stderr)
        return 1
    out = view["output"]
    print("\n=== result ===")
    print(out["answer"])
    print(
        f"\n({len(out['agent_results'])} agent results, "
        f"{out['usage']['prompt_tokens'] + out['usage']['completion_tokens']} tokens, "
        f"{out['usage']['calls']} LLM calls)"
    )
    return 0


def main(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir) if args.data_dir else ROOT / ".data"
    offset = int(os.environ.get("SWARMD_PORT_OFFSET", "0"))
    ports = Ports.with_offset(offset)
    if os.environ.get("SWARMD_PORT_BASE"):  # tests: one contiguous block
        ports = Ports.block(int(os.environ["SWARMD_PORT_BASE"]))
    stack = Stack(data_dir=data_dir, ports=ports, app_mode="cli")
    stopping = False

    def on_signal(signum: int, _: Any) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    # Ctrl-C even when started from a shell that made background jobs ignore SIGINT
    signal.signal(signal.SIGINT, on_signal)
    try:
        t0 = time.monotonic()
        print(f"swarmd: starting the local stack (logs in {stack.logs})", flush=True)
        stack.start()
        for _ in range(getattr(args, "replicas", 1) - 1):
            pair = stack.start_replica()
            print(f"swarmd: replica {pair.replica_index + 1} at {pair.api_url}", flush=True)
        print(
            f"swarmd: stack ready in {time.monotonic() - t0:.1f}s; API {stack.api_url} "
            f"(token in {stack.data_dir / 'secrets' / 'api-token'})",
            flush=True,
        )
        code = 0
        if args.cmd in ("run", "demo"):
            code = run_demo(stack, args.task, args.agents)
        if args.cmd == "demo":
            return code
        print("swarmd: serving; `dapr list` shows the app. Ctrl-C to stop.", flush=True)
        procs = [p for s in (stack, *stack.replicas) for p in s.procs.values()]
        while all(p.popen.poll() is None for p in procs):
            time.sleep(1)
            stack.heal()  # a wedged daprd or an app without its workflow stream
            procs = [p for s in (stack, *stack.replicas) for p in s.procs.values()]
        dead = [p.name for p in procs if p.popen.poll() is not None]
        print(f"swarmd: {', '.join(dead)} exited; stopping", file=sys.stderr)
        return 1
    except StackError as exc:
        print(f"swarmd: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("\nswarmd: stopping", flush=True)
        return 0
    finally:
        stack.stop()
