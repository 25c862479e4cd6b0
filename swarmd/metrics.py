"""Prometheus metrics of one swarmd process, served at ``GET /metrics``.

One :class:`Metrics` per app, created by :func:`swarmd.api.app.create_app` and
handed to whatever records into it (the run API, the run tracker, the LLM and
tool activities); nothing registers at import.

Series (``swarm`` is the spec name, ``model`` the gateway alias)::

    swarmd_runs_started_total{swarm}          runs this process started
    swarmd_runs_completed_total{swarm}        runs seen to complete (budget stops included)
    swarmd_runs_failed_total{swarm}           runs seen to fail
    swarmd_runs_terminated_total{swarm}       runs seen to be terminated
    swarmd_runs_in_flight{swarm}              runs started and not ended, cluster-wide (every
                                              replica reports the same number: aggregate
                                              with max(), not sum())
    swarmd_budget_stops_total{swarm,reason}   runs stopped by a limit (token_budget, deadline)
    swarmd_agent_step_seconds{kind,name}      latency of one agent step: an LLM call
                                              (kind="llm", name=alias) or a tool call
                                              (kind="tool", name=tool)
    swarmd_llm_calls_total{model}             LLM calls answered
    swarmd_llm_errors_total{model,reason}     LLM calls that failed (reason: HTTP status,
                                              timeout, connection, invalid)
    swarmd_llm_retries_total{model}           retries the gateway made for answered calls
    swarmd_llm_fallbacks_total{model}         answered calls served by a fallback alias
    swarmd_llm_tokens_total{model,type}       tokens, type="input" | "output"
    swarmd_llm_cost_usd_total{model}          cost the gateway reported
    swarmd_revivals_total{action,outcome}     stuck runs the run supervisor revived
                                              (action: nudge, fresh_generation; outcome:
                                              ok, failed)
    swarmd_revival_stuck_seconds              how long a revived run had made no progress
    swarmd_runs_stuck                         runs the supervisor's last pass found stuck
                                              (0 on replicas that did not lead it)
    swarmd_pubsub_tasks_total{outcome}        swarm.tasks messages this process answered:
                                              started, existing (a redelivery or a repeat),
                                              retry (backpressure or a sidecar error), dead
    swarmd_pubsub_dead_letters_total{reason}  swarm.tasks.dead messages, once each cluster-wide
                                              (the replica that consumed it counts it), by
                                              reason: bad_json, validation_failed,
                                              unknown_swarm, run_conflict, forwarded_by_dapr
    swarmd_outbox_published_total{topic}      result/progress events published from the outbox
    swarmd_outbox_pending                     events in the outbox not yet published
    swarmd_guardrail_blocks_total{guardrail}  LLM calls a gateway guardrail refused
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        self.runs_started = Counter(
            "swarmd_runs_started", "Runs started by this process", ["swarm"], registry=r
        )
        self.runs_completed = Counter(
            "swarmd_runs_completed", "Runs seen to complete", ["swarm"], registry=r
        )
        self.runs_failed = Counter("swarmd_runs_failed", "Runs seen to fail", ["swarm"], registry=r)
        self.runs_terminated = Counter(
            "swarmd_runs_terminated", "Runs seen to be terminated", ["swarm"], registry=r
        )
        self.runs_in_flight = Gauge(
            "swarmd_runs_in_flight",
            "Runs started and not ended, cluster-wide (same on every replica: use max())",
            ["swarm"],
            registry=r,
        )
        self.budget_stops = Counter(
            "swarmd_budget_stops",
            "Runs stopped early by a limit of their spec",
            ["swarm", "reason"],
            registry=r,
        )
        self.agent_step_seconds = Histogram(
            "swarmd_agent_step_seconds",
            "Latency of one agent step (an LLM call or a tool call)",
            ["kind", "name"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.llm_calls = Counter(
            "swarmd_llm_calls", "LLM calls answered by the gateway", ["model"], registry=r
        )
        self.llm_errors = Counter(
            "swarmd_llm_errors", "LLM calls that failed", ["model", "reason"], registry=r
        )
        self.llm_retries = Counter(
            "swarmd_llm_retries",
            "Retries the gateway made for answered calls",
            ["model"],
            registry=r,
        )
        self.llm_fallbacks = Counter(
            "swarmd_llm_fallbacks",
            "Answered calls that the gateway served through a fallback alias",
            ["model"],
            registry=r,
        )
        self.llm_tokens = Counter("swarmd_llm_tokens", "LLM tokens", ["model", "type"], registry=r)
        self.revivals = Counter(
            "swarmd_revivals",
            "Stuck runs the run supervisor revived",
            ["action", "outcome"],
            registry=r,
        )
        self.revival_stuck_seconds = Histogram(
            "swarmd_revival_stuck_seconds",
            "How long a revived run had made no progress",
            buckets=(5, 15, 30, 60, 90, 120, 300, 600, 1800),
            registry=r,
        )
        self.runs_stuck = Gauge(
            "swarmd_runs_stuck", "Runs the supervisor's last pass found stuck", registry=r
        )
        self.llm_cost = Counter(
            "swarmd_llm_cost_usd", "LLM cost the gateway reported", ["model"], registry=r
        )
        self.pubsub_tasks = Counter(
            "swarmd_pubsub_tasks", "swarm.tasks messages answered", ["outcome"], registry=r
        )
        self.pubsub_dead_letters = Counter(
            "swarmd_pubsub_dead_letters",
            "Messages sent to the dead-letter topic, by reason",
            ["reason"],
            registry=r,
        )
        self.outbox_published = Counter(
            "swarmd_outbox_published", "Events published from the outbox", ["topic"], registry=r
        )
        self.outbox_pending = Gauge(
            "swarmd_outbox_pending", "Events in the outbox not yet published", registry=r
        )
        self.guardrail_blocks = Counter(
            "swarmd_guardrail_blocks",
            "LLM calls a gateway guardrail refused (prompt-injection guard)",
            ["guardrail"],
            registry=r,
        )
