"""Settings of the watchdog, from environment variables (validated at start-up)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WatchdogSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SWARMD_WATCHDOG_", extra="ignore", frozen=True)

    # /healthz, /metrics, /v1/reclaims. All interfaces by default: kubelet probes and
    # Prometheus reach the sidecar on the pod IP. The local launcher sets 127.0.0.1.
    host: str = "0.0.0.0"  # noqa: S104
    port: int = Field(8081, ge=1, le=65535)
    app_cmdline: str = Field(
        "swarmd serve",
        description="Substring of the app's command line (finds its pid in a shared "
        "process namespace); empty: rely on the owner registry alone",
    )
    app_pid: int | None = Field(None, ge=1, description="The app's pid, when the launcher knows")
    sweep_interval_s: float = Field(
        2.0, gt=0, le=600, description="Cluster-wide sweep of owners whose heartbeat expired"
    )
    index_poll_s: float = Field(0.5, gt=0, le=60, description="How often to look for new owners")
    pid_poll_s: float = Field(0.1, gt=0, le=10, description="How often to check watched pids")
    claim_ttl_s: int = Field(
        30, ge=2, le=3600, description="A reap claim of a watchdog that died is retried after it"
    )

    pod_name: str | None = Field(None, validation_alias="POD_NAME")
    pod_namespace: str | None = Field(None, validation_alias="POD_NAMESPACE")
    dapr_http_port: int = Field(3500, validation_alias="DAPR_HTTP_PORT")
    state_store: str = Field("statestore", validation_alias="SWARMD_STATE_STORE")
    log_format: Literal["json", "text"] = Field("json", validation_alias="SWARMD_LOG_FORMAT")
    log_level: str = Field("INFO", validation_alias="SWARMD_LOG_LEVEL")
