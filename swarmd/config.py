"""The one validated settings object, read from ``SWARMD_*`` environment variables.

Built once in an entrypoint (``swarmd serve``, the watchdog, tests) and passed
down explicitly or injected through FastAPI dependencies; nothing reads the
environment behind its back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ReviveAction = Literal["nudge", "fresh_generation"]
#: measured: a nudge (an event) does not reach a workflow wedged by Dapr's actor-lock
#: deadlock (docs/reliability.md), so a fresh generation comes first when it is allowed
DEFAULT_REVIVE_ACTIONS: tuple[ReviveAction, ...] = ("fresh_generation",)


#: default of ``SWARMD_LLM_MAX_IN_FLIGHT``, the same as the agent bound: with 128, a
#: 1,000-agent run at 1 s model latency kept calls waiting at the gate while the gateway
#: had room (docs/benchmarks.md#engine-v2)
LLM_MAX_IN_FLIGHT = 256


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SWARMD_", extra="ignore", frozen=True)

    # -- HTTP API
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    api_token: SecretStr | None = Field(
        None, description="Bearer token for /v1/*. Unset means the API refuses every call."
    )
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest accepted request body")
    sse_keepalive_s: float = Field(
        15.0, gt=0, le=300, description="Run streams send ': keep-alive' after this much silence"
    )
    sse_poll_s: float = Field(
        0.5, ge=0.05, le=60, description="How often a run stream re-reads the workflow state"
    )

    # -- Identity (swarmd.identity): the operator token above, user tokens minted by the
    # operator (POST /v1/users/{user}/tokens), and optionally OIDC bearer JWTs
    oidc_issuer: str | None = Field(
        None, description="Accept JWTs from this issuer (iss); needs oidc_audience, oidc_jwks_url"
    )
    oidc_audience: str | None = Field(None, description="The aud a JWT must carry")
    oidc_jwks_url: str | None = Field(
        None, description="URL of the issuer's key set (JWKS), https:// (http:// for a local one)"
    )
    oidc_user_claim: str = Field(
        "sub", min_length=1, description="The claim whose value is the swarmd user id"
    )
    oidc_algorithms: list[str] = Field(
        default_factory=lambda: ["RS256"], description="Signature algorithms accepted (JSON list)"
    )

    # -- Fair sharing: limits per user (user tokens, OIDC users, Slack users; the
    # operator is exempt). Refusals answer 429 with Retry-After.
    user_max_runs: int = Field(8, ge=1, description="Runs one user may have in flight")
    user_max_turns: int = Field(
        8, ge=1, description="Messages one user's agent may have queued or running"
    )
    user_starts_per_minute: float = Field(
        120.0, gt=0, description="Sustained rate of starts (runs and agent messages) per user"
    )
    user_start_burst: int = Field(30, ge=1, description="Starts a user may make at once")
    user_busy_retry_after_s: int = Field(
        2, ge=1, le=3600, description="Retry-After sent when a user is at an in-flight limit"
    )

    # -- Slack front door (/v1/slack/...): unset secrets leave it off
    slack_signing_secret: SecretStr | None = Field(
        None, description="The Slack app's signing secret: requests are verified with it"
    )
    slack_bot_token: SecretStr | None = Field(
        None, description="The bot token (xoxb-...) replies are posted with"
    )
    slack_api_url: str = Field(
        "https://slack.com/api", description="Base URL of Slack's Web API (a local one in tests)"
    )
    slack_default_template: str = Field(
        "analyst", description="Template of /setup-agent without an argument"
    )
    slack_reply_timeout_s: float = Field(
        900.0, gt=0, description="How long a Slack message waits for its agent's reply"
    )

    # -- LLM gateway (LiteLLM proxy, OpenAI-compatible)
    llm_base_url: str = "http://127.0.0.1:4000/v1"
    llm_api_key: SecretStr = SecretStr("sk-swarmd-local-dev")
    llm_http: Literal["aiohttp", "httpx"] = Field(
        "aiohttp",
        description="HTTP stack under the gateway's openai client: aiohttp (openai's "
        "DefaultAioHttpClient, ~2.5 ms of CPU per call measured here) or httpx (~5.5 ms)",
    )
    llm_timeout_s: float = Field(
        120.0, gt=0, description="Per-call timeout; the proxy's own timeout sits below this"
    )
    default_model: str = "swarmd-fast"

    # -- Dapr
    state_store: str = "statestore"
    lock_store: str = "lockstore"
    dapr_http_port: int = Field(3500, validation_alias="DAPR_HTTP_PORT")
    dapr_grpc_port: int = Field(50001, validation_alias="DAPR_GRPC_PORT")
    dapr_api_token: SecretStr | None = Field(
        None, validation_alias="DAPR_API_TOKEN", description="daprd's API token, when it has one"
    )
    grpc_max_message_mib: int = Field(
        32,
        ge=4,
        le=512,
        description="Largest gRPC message between the app and daprd's workflow engine, in MiB "
        "(a workflow's whole history travels in one). daprd must run with at least this "
        "--max-body-size: the launcher, the dapr run file and the chart set both from it.",
    )

    # -- Lock owner registry (what this process holds; the watchdog reclaims it on death)
    pod_name: str | None = Field(
        None, validation_alias="POD_NAME", description="Pod name; the hostname when unset"
    )
    owner_heartbeat_s: float = Field(0.5, gt=0, le=10, description="Owner heartbeat interval")
    owner_ttl_s: int = Field(
        4, ge=2, le=300, description="Owner heartbeat TTL: dead owners are swept after it"
    )

    # -- Engine
    specs_dir: Path | None = Field(
        None, description="Extra directory of swarm specs (*.yaml/*.json); overrides built-ins"
    )
    plugins: list[str] = Field(
        default_factory=list,
        description="Modules with register(reg) adding workflows/activities (JSON list)",
    )
    payload_ref_bytes: int = Field(
        256_000, ge=1024, description="LLM answers above this travel through history by reference"
    )
    engine_version: int = Field(
        3,
        ge=1,
        le=3,
        description="Engine new runs start on: 3 (agents in journaled groups of 250), 2 (the "
        "same in groups of 50) or 1 (a child workflow per agent). Runs in flight always "
        "finish on the engine they started on.",
    )
    llm_max_in_flight: int = Field(
        LLM_MAX_IN_FLIGHT,
        ge=1,
        le=10_000,
        description="LLM calls one process has on the wire at once (engine v2/v3 groups); "
        "the gateway's own throughput is the real limit, see docs/engine.md",
    )
    llm_spend_metadata: bool = Field(
        False,
        description="send each call's run id, agent and user to the gateway as request "
        "metadata, for LiteLLM's spend logs (its database); costs the proxy ~3 ms of CPU "
        "per call. The end user always goes as the OpenAI `user` field",
    )
    agents_max_in_flight: int = Field(
        256,
        ge=1,
        le=100_000,
        description="agents one process runs at once across its engine v2 groups; the "
        "others wait before building anything, so a 10,000-agent run does not hold "
        "10,000 half-built requests in memory (keep it at least SWARMD_LLM_MAX_IN_FLIGHT)",
    )
    malloc_mmap_threshold: int = Field(
        64 * 1024,
        ge=0,
        le=32 << 20,
        description="glibc malloc: blocks of at least this many bytes get their own mapping "
        "and go back to the system when freed (a fixed threshold; glibc's own rises after "
        "the first large free, and a 10,000-agent run's freed buffers then stayed resident: "
        "app peak 315 MB against 259, docs/benchmarks.md). 0 keeps glibc's dynamic default",
    )
    journal_retention_s: int = Field(
        7 * 24 * 3600,
        ge=60,
        description="How long call-journal entries live (purging a run deletes them sooner)",
    )
    payload_ttl_s: int | None = Field(
        None,
        ge=60,
        description="TTL of those payload blobs; unset: kept until the run is purged. Set it "
        "above your run retention: an expired blob makes its run's output unreadable",
    )
    http_get_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts the http_get tool may fetch from (comma-separated or a JSON list; "
        "exact host names, no wildcards). Empty: http_get refuses every URL",
    )
    max_concurrent_activities: int = Field(
        200, ge=1, description="Activity work items this process runs at once"
    )
    max_agents: int = Field(1000, ge=1, le=10_000)
    agent_baseline: Path | None = Field(
        None, description="Operator baseline of user agents (YAML); default: the shipped one"
    )
    agent_templates_dir: Path | None = Field(
        None, description="Extra directory of user-agent role templates (*.yaml)"
    )
    user_agent_version: Literal["v1", "v2", "v3"] = Field(
        "v3",
        description=(
            "Workflow version new user-agent generations run (v3 answers messages in the "
            "app as they arrive; v2/v1: roll back, the fast path is then off; every "
            "version stays registered, so agents on any keep working)"
        ),
    )
    user_agent_lease_s: float = Field(
        30.0,
        ge=5,
        le=3600,
        description=(
            "v3: how long an app process holds a user's turn lease past its last message "
            "(a killed process's messages are answered by the workflow after this)"
        ),
    )
    user_agent_linger_s: float = Field(
        20.0,
        ge=0,
        le=3600,
        description="v3: a user's fast-path worker frees its lease this long after its last turn",
    )
    user_input_guardrails: list[str] = Field(
        default_factory=list,
        description=(
            "Gateway guardrails every LLM call asks for besides the default-on ones; "
            '["injection-filter-user-input","injection-heuristics-user-input"] scans user '
            "input for prompt injection too (JSON list; tool results are always scanned)"
        ),
    )
    llm_retry_attempts: int = Field(6, ge=1, le=50)
    llm_retry_first_interval_s: float = Field(1.0, gt=0)
    llm_retry_max_interval_s: float = Field(30.0, gt=0)

    # -- The python tool's WebAssembly sandbox (swarmd.activities.sandbox, docs/sandbox.md)
    sandbox_fuel: int = Field(
        3_000_000_000,
        ge=300_000_000,
        description="Wasm instructions one python call may run (startup takes ~0.2e9)",
    )
    sandbox_memory_bytes: int = Field(
        256 << 20, ge=32 << 20, le=4 << 30, description="Linear-memory cap of one python call"
    )
    sandbox_timeout_s: float = Field(5.0, gt=0, le=300, description="Wall-clock cap of one call")
    sandbox_output_bytes: int = Field(
        8192, ge=256, le=1 << 20, description="stdout and stderr are each cut at this many bytes"
    )
    sandbox_code_bytes: int = Field(
        64_000, ge=1, le=1 << 20, description="Largest python source a call accepts"
    )
    sandbox_workers: int = Field(
        2, ge=1, le=64, description="python calls run at once per process (threads); more queue"
    )
    sandbox_cache_dir: Path | None = Field(
        Path.home() / ".cache" / "swarmd" / "sandbox",
        description="Where the compiled interpreter is cached; unset: compile in every process",
    )

    # -- Observability (swarmd.telemetry, swarmd.metrics, swarmd.engine.tracker)
    otlp_endpoint: str | None = Field(
        None,
        validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT",
        description="Export traces over OTLP/HTTP here; unset: see trace_export",
    )
    trace_export: Literal["file", "console", "none"] = Field(
        "file", description="Without an OTLP endpoint: <data_dir>/traces.jsonl, stderr, or off"
    )
    catalog_page_size: int = Field(
        200, ge=2, le=5000, description="Entries per page of the run and agent catalogs"
    )
    tracker_interval_s: float = Field(
        1.0, gt=0, le=60, description="How often ended runs are looked for (metrics, usage)"
    )

    # -- Run supervisor (swarmd.engine.supervisor): revives runs that stopped moving
    supervisor_enabled: bool = Field(True, description="Run the run supervisor in this process")
    supervisor_interval_s: float = Field(
        2.0, gt=0, le=300, description="How often the supervisor looks at the runs in flight"
    )
    stall_after_s: float = Field(
        90.0,
        gt=0,
        description="A run with no history progress and no call in flight for this long is "
        "stuck (keep it above the longest retry backoff, 30 s by default)",
    )
    inflight_grace_s: float = Field(
        180.0,
        gt=0,
        description="A call in flight counts as progress for at most this long (above "
        "llm_timeout_s: no call can legitimately last longer)",
    )
    revive_actions: list[ReviveAction] = Field(
        default_factory=lambda: list(DEFAULT_REVIVE_ACTIONS),
        min_length=1,
        description="What the k-th revival in a row of a run that did not move does (JSON "
        "list; the last entry repeats)",
    )
    fresh_generation: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Allow restarting a stuck run from scratch under its run id: auto = only "
        "when every call is journaled (swarmd.engine.journal), so no finished call is paid "
        "again",
    )
    revival_timeout_s: float = Field(
        15.0, gt=0, le=600, description="How long one revival's sidecar calls may take"
    )
    worker_lost_after_s: float = Field(
        30.0,
        gt=0,
        description="/livez fails when daprd is healthy but this app's workflow worker has "
        "had no stream to it for this long",
    )
    pulse_interval_s: float = Field(
        1.0, gt=0, le=60, description="How often this process publishes the calls it has in flight"
    )

    # -- Pub/sub (swarmd.api.pubsub, swarmd.engine.outbox): the Dapr component must exist
    pubsub_enabled: bool = Field(
        False,
        description="Start runs from swarm.tasks; publish swarm.results and swarm.events",
    )
    pubsub_name: str = Field("pubsub", min_length=1, description="Dapr pub/sub component")
    app_api_token: SecretStr | None = Field(
        None,
        validation_alias="APP_API_TOKEN",
        description="Token daprd sends as dapr-api-token; the subscriber refuses calls without",
    )
    pubsub_max_in_flight: int = Field(
        64,
        ge=1,
        description="Runs in flight (cluster-wide) at which swarm.tasks messages get RETRY",
    )

    # -- Local stack
    data_dir: Path = Path(".data")
    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"
    sdk_log_level: str = Field("WARNING", description="Level of the Dapr SDK's own loggers")

    @model_validator(mode="after")
    def _supervisor(self) -> Settings:
        if self.inflight_grace_s <= self.llm_timeout_s:
            raise ValueError(
                "inflight_grace_s must exceed llm_timeout_s (a call in flight longer than its "
                "timeout is not legitimately slow)"
            )
        return self

    @field_validator("http_get_allowed_hosts", mode="before")
    @classmethod
    def _hosts(cls, v: object) -> object:
        if isinstance(v, str):
            v = json.loads(v) if v.strip().startswith("[") else v.split(",")
        if isinstance(v, list):
            return [str(h).strip().lower() for h in v if str(h).strip()]
        return v

    @field_validator("llm_base_url", "slack_api_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")

    @field_validator("oidc_jwks_url")
    @classmethod
    def _jwks_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must start with https:// or http://")
        return v

    @model_validator(mode="after")
    def _together(self) -> Settings:
        oidc = {
            "oidc_issuer": self.oidc_issuer,
            "oidc_audience": self.oidc_audience,
            "oidc_jwks_url": self.oidc_jwks_url,
        }
        if any(oidc.values()) and not all(oidc.values()):
            missing = sorted(k for k, v in oidc.items() if not v)
            raise ValueError(f"OIDC needs issuer, audience and JWKS URL together: set {missing}")
        if (self.slack_signing_secret is None) != (self.slack_bot_token is None):
            raise ValueError(
                "the Slack front door needs both slack_signing_secret and slack_bot_token"
            )
        return self

    @property
    def oidc_enabled(self) -> bool:
        return self.oidc_issuer is not None

    @property
    def slack_enabled(self) -> bool:
        return self.slack_signing_secret is not None
