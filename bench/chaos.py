"""Chaos suite: runs of all four patterns and per-user agent messages under seeded kills.

On the real local stack (app and daprd as direct processes, the real placement,
scheduler, Redis lock store, LiteLLM proxy, our model server with a fixed
latency). In one run:

1. **Reference.** One run of each pattern, undisturbed: its output (answer and
   every agent's result) and how often each distinct prompt is answered.
2. **Chaos.** Runs of all four patterns are submitted continuously (at most
   ``--in-flight`` at a time, client-chosen run ids, so a start retried across a
   crash is idempotent), and ``--users`` per-user agents get a message every few
   seconds. Every ``--every`` seconds (seeded uniform) one fault hits:

   * SIGKILL of ``app``, ``daprd``, ``scheduler``, ``placement``, ``redis`` (the
     lock store) or ``litellm`` (the gateway), restarted after ``--down``
     seconds, waited on its health endpoint;
   * ``statestore``: the SQLite state store is locked exclusively (no writer gets
     in) for ``--outage`` seconds.

   The kinds come from a seeded shuffle that includes each of them at least once
   when ``--kills`` is at least 7; the rest are weighted towards app and daprd.
3. **Verdict.** Every accepted run and message must end within ``--settle``
   seconds of the last fault. Counted:

   * **lost**: a run that did not complete (still running, failed, terminated),
     or a message never answered;
   * **wrong**: a completed run whose output differs from its pattern's reference;
   * **paid twice**: answers by the model server (its request log, by the run's
     user id) beyond the reference's count for that prompt, except when an
     earlier answer of the same prompt was in flight within 1 s of an app,
     daprd or LiteLLM kill (a call whose result had no time to be recorded, or
     that the killed proxy never passed on), or reached the model server while
     a killed app was down (sent before the kill, queued in the gateway);
   * **recovery time** per fault: from the kill until the process is healthy
     again and the model server answers a call again (p50/p99 per kind);
   * the last run's end after the last fault.

   Plus the run supervisor's revivals (``GET /v1/revivals``).

Exit code 0 when there is nothing lost, wrong or paid twice and every run ended
within 30 s of the last fault; 1 otherwise. Results go to
``bench/results/chaos-seed<N>.json``.

    .venv/bin/python -m bench.chaos --seed 1 --runs 100 --kills 50      # make chaos
    .venv/bin/python -m bench.chaos --seed 7 --runs 8 --kills 7 --agents 8   # a quick one

Ports: ``SWARMD_CHAOS_PORT_OFFSET`` (default: ``SWARMD_TEST_PORT_OFFSET`` + 500).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from swarmd.devstack.launcher import Ports, Stack, StackError

RESULTS = Path(__file__).resolve().parent / "results"
TERMINAL = ("completed", "failed", "terminated")
MESSAGE_FINAL = ("answered", "failed", "budget_exhausted")
PROCESS_KILLS = ("app", "daprd", "scheduler", "placement", "redis", "litellm")
KINDS = (*PROCESS_KILLS, "statestore")
#: how often each kind is drawn beyond the first of each
WEIGHTS = {
    "app": 6,
    "daprd": 6,
    "scheduler": 2,
    "placement": 2,
    "redis": 1,
    "litellm": 1,
    "statestore": 1,
}
#: kills after which a call's result can be lost with the process (in-flight excuse):
#: the app or daprd (the answer had no time to be journaled), or the LiteLLM proxy (the
#: model server answered, the killed proxy never passed the answer on: to the engine
#: the call failed with a connection error, so it is made again)
LOSES_IN_FLIGHT = ("app", "daprd", "litellm")
SETTLE_S = 1.0
MAX_END_AFTER_LAST_FAULT_S = 30.0

TASKS = {
    "scatter_gather": "Assess the failure modes of a distributed job scheduler",
    "pipeline": "Write a short briefing on idempotent message handling",
    "debate": "Should a team adopt event sourcing for its billing service?",
    "supervisor": "Compute 17*23 and explain where such products show up in capacity planning",
}
PATTERNS = tuple(TASKS)


@dataclass
class Config:
    seed: int = 1
    runs: int = 100
    kills: int = 50
    in_flight: int = 8
    agents: int = 30
    max_parallel: int = 6
    latency_ms: int = 400
    users: int = 3
    every: tuple[float, float] = (5.0, 8.0)
    down: tuple[float, float] = (0.3, 2.0)
    outage: tuple[float, float] = (2.0, 6.0)
    settle: float = 240.0
    kinds: tuple[str, ...] = KINDS
    port_offset: int = 1500
    keep_data: bool = False
    app_env: dict[str, str] = field(default_factory=dict)


@dataclass
class RunRec:
    run_id: str
    pattern: str
    user: str
    accepted_at: float
    ended_at: float | None = None
    status: str | None = None
    essence: Any = None
    error: str | None = None


@dataclass
class MsgRec:
    user: str
    message_id: str
    accepted_at: float
    status: str = "queued"
    answered_at: float | None = None


@dataclass
class Fault:
    kind: str
    at: float
    back_at: float | None = None
    down_s: float = 0.0
    error: str | None = None
    recovery_s: float | None = None


def body(pattern: str, run_id: str, user: str, cfg: Config) -> dict[str, Any]:
    inp: dict[str, Any] = {"task": TASKS[pattern], "user": user}
    if pattern == "scatter_gather":
        inp.update(agents=cfg.agents, max_parallel=cfg.max_parallel)
    return {"swarm": pattern, "run_id": run_id, "input": inp}


def essence(view: dict[str, Any]) -> Any:
    out = view.get("output") or {}
    return {
        "answer": out.get("answer"),
        "agents": [(a["agent"], a["status"], a["content"]) for a in out.get("agent_results", [])],
    }


def fault_plan(cfg: Config, rng: random.Random) -> list[str]:
    kinds = list(cfg.kinds)
    plan = kinds[: cfg.kills] if cfg.kills >= len(kinds) else rng.sample(kinds, cfg.kills)
    pool = [k for k in kinds for _ in range(WEIGHTS.get(k, 1))]
    plan += [rng.choice(pool) for _ in range(cfg.kills - len(plan))]
    rng.shuffle(plan)
    return plan


def in_flight_near(call: dict[str, Any], kill: float) -> bool:
    """Was this call in flight within ``SETTLE_S`` of the kill? Its request started
    (the model server's ``ts``) before kill + 1 s and was answered after kill - 1 s: a
    call the app sent just after daprd died counts too, its result had nowhere to go."""
    start = float(call["ts"])
    end = start + float(call.get("latency_ms", 0)) / 1000
    return start <= kill + SETTLE_S and end >= kill - SETTLE_S


def sent_before(call: dict[str, Any], kill: float, sender_back: float) -> bool:
    """Did the request reach the model server between an app kill (less 1 s) and the
    moment the restarted app could send again (its workflow worker connected)? Then
    the killed app sent it: it was in flight at the kill, queued in the gateway (a
    loaded LiteLLM proxy passed such calls on up to 10 s later), and its answer died
    with the app. Nothing else sends a run's calls."""
    return kill - SETTLE_S <= float(call["ts"]) <= sender_back


def worker_connects(app_log: Path) -> list[float]:
    """When the app's workflow worker connected to daprd (Unix times, from its log)."""
    out: list[float] = []
    if not app_log.exists():
        return out
    for line in app_log.read_text(errors="replace").splitlines():
        if '"durabletask-worker"' not in line or "Successfully connected" not in line:
            continue
        with contextlib.suppress(ValueError, KeyError):
            out.append(datetime.fromisoformat(json.loads(line)["ts"]).timestamp())
    return sorted(out)


def percentile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return round(s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))], 3)


class Chaos:
    def __init__(self, cfg: Config, data_dir: Path) -> None:
        self.cfg = cfg
        # one generator per thread, each seeded from the seed: the same seed, the same faults
        self.rng = random.Random(cfg.seed)
        self.msg_rng = random.Random(cfg.seed * 1000 + 1)
        self.stack = Stack(
            data_dir=data_dir,
            ports=Ports.for_tests(cfg.port_offset),
            app_mode="direct",
            model_latency_ms=cfg.latency_ms,
            app_env=cfg.app_env,
        )
        self.headers = {"Authorization": f"Bearer {self.stack.api_token}"}
        self.mu = threading.Lock()
        self.runs: dict[str, RunRec] = {}
        self.msgs: list[MsgRec] = []
        self.faults: list[Fault] = []
        self.refs: dict[str, Any] = {}
        self.ref_counts: dict[str, Counter[str]] = {}
        self.submitting = True
        self.faulting = True
        self.submit_failures = 0
        self.faults_done_at: float | None = None
        self.load_at_start: list[float] = []

    # -- helpers -----------------------------------------------------------------
    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.stack.api_url, headers=self.headers, timeout=10)

    def log(self, msg: str) -> None:
        print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def calls_by_user(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for c in self.stack.model_calls(status=200):
            out.setdefault(str(c.get("user")), []).append(c)
        return out

    # -- reference ---------------------------------------------------------------
    def reference(self) -> None:
        with self.client() as c:
            for p in PATTERNS:
                r = c.post("/v1/runs", json=body(p, f"ref-{p}", f"ref-{p}", self.cfg))
                r.raise_for_status()
            deadline = time.monotonic() + 600
            pending = set(PATTERNS)
            while pending:
                for p in list(pending):
                    v = c.get(f"/v1/runs/ref-{p}").json()
                    if v["status"] in TERMINAL:
                        if v["status"] != "completed":
                            raise StackError(f"reference run of {p} ended {v['status']}: {v}")
                        self.refs[p] = essence(v)
                        pending.discard(p)
                if time.monotonic() > deadline:
                    raise StackError(f"reference runs did not finish: {sorted(pending)}")
                time.sleep(0.5)  # polling interval of the run status
        calls = self.calls_by_user()
        for p in PATTERNS:
            self.ref_counts[p] = Counter(c["messages_sha256"] for c in calls.get(f"ref-{p}", []))
        counts = ", ".join(f"{p} {sum(self.ref_counts[p].values())} calls" for p in PATTERNS)
        self.log(f"references: {counts}")

    # -- workload ----------------------------------------------------------------
    def submit(self, c: httpx.Client, n: int) -> None:
        pattern = PATTERNS[n % len(PATTERNS)]
        run_id = f"chaos-{self.cfg.seed}-{n:04d}-{pattern.replace('_', '')}"
        deadline = time.monotonic() + 120
        while True:
            try:
                r = c.post("/v1/runs", json=body(pattern, run_id, run_id, self.cfg))
                if r.status_code in (200, 202):
                    with self.mu:
                        self.runs[run_id] = RunRec(run_id, pattern, run_id, time.time())
                    return
                if r.status_code < 500:
                    raise StackError(f"start of {run_id} refused: {r.status_code} {r.text}")
            except httpx.HTTPError:
                pass
            self.submit_failures += 1
            if time.monotonic() > deadline:
                raise StackError(f"could not start {run_id} for 120 s")
            time.sleep(0.5)  # the app or its sidecar is restarting: retry the idempotent start

    def poll_runs(self, c: httpx.Client) -> int:
        active = [r for r in self.runs.values() if r.ended_at is None]
        for rec in active:
            try:
                r = c.get(f"/v1/runs/{rec.run_id}", timeout=5)
            except httpx.HTTPError:
                return len(active)  # the app is down: next round
            if r.status_code != 200:
                rec.error = f"GET answered {r.status_code}"
                continue
            v = r.json()
            rec.error = v.get("status")
            if v["status"] in TERMINAL:
                rec.ended_at, rec.status = time.time(), v["status"]
                rec.essence, rec.error = essence(v), v.get("error")
                if v["status"] != "completed":
                    self.log(f"run {rec.run_id} ended {v['status']}: {v.get('error')}")
        return sum(1 for r in self.runs.values() if r.ended_at is None)

    def workload(self) -> None:
        n = 0
        last_note = time.monotonic()
        with self.client() as c:
            while True:
                in_flight = self.poll_runs(c)
                if not self.faulting and self.faults_done_at is not None:
                    waited = time.monotonic() - self.faults_done_at
                    if time.monotonic() - last_note > 30:
                        last_note = time.monotonic()
                        left = [r.run_id for r in self.runs.values() if r.ended_at is None]
                        self.log(f"{waited:.0f}s after the last fault, still running: {left}")
                    if waited > self.cfg.settle:
                        return  # what has not ended by now is lost
                more = n < self.cfg.runs or self.faulting
                if self.submitting and more:
                    while in_flight < self.cfg.in_flight:
                        self.submit(c, n)
                        n += 1
                        in_flight += 1
                elif in_flight == 0:
                    return
                else:
                    self.submitting = False
                time.sleep(1.0)  # polling interval of the run statuses

    def messages(self) -> None:
        users = [f"chaos-{self.cfg.seed}-user-{i}" for i in range(self.cfg.users)]
        if not users:
            return
        with self.client() as c:
            for u in users:
                r = c.post("/v1/agents", json={"user_id": u, "template": "analyst"})
                if r.status_code not in (200, 201):
                    raise StackError(f"provisioning {u}: {r.status_code} {r.text}")
            k = 0
            while self.submitting:
                u = self.msg_rng.choice(users)
                k += 1
                text = f"Message {k}: summarise the state of work item {k} for {u}"
                try:
                    r = c.post(f"/v1/agents/{u}/messages", json={"text": text})
                    if r.status_code == 202:
                        with self.mu:
                            self.msgs.append(MsgRec(u, r.json()["message_id"], time.time()))
                except httpx.HTTPError:
                    pass  # not accepted: not counted (a message is only ours once 202)
                time.sleep(self.msg_rng.uniform(2.0, 4.0))  # between messages

    def poll_messages(self, c: httpx.Client) -> int:
        left = 0
        for m in self.msgs:
            if m.status in MESSAGE_FINAL:
                continue
            with contextlib.suppress(httpx.HTTPError, ValueError):
                r = c.get(f"/v1/agents/{m.user}/messages/{m.message_id}", timeout=5)
                if r.status_code == 200:
                    m.status = r.json().get("status", m.status)
                    if m.status in MESSAGE_FINAL:
                        m.answered_at = time.time()
            left += m.status not in MESSAGE_FINAL
        return left

    # -- faults ------------------------------------------------------------------
    def outage(self, seconds: float) -> None:
        """Lock the SQLite state store exclusively: every writer waits, then fails."""
        db = self.stack.app_dir / "swarmd-state.db"
        conn = sqlite3.connect(db, timeout=30, isolation_level=None)
        try:
            conn.execute("BEGIN EXCLUSIVE")
            time.sleep(seconds)  # the outage itself
            conn.execute("ROLLBACK")
        finally:
            conn.close()

    def hit(self, kind: str) -> Fault:
        down = self.rng.uniform(*self.cfg.down)
        f = Fault(kind=kind, at=time.time())
        try:
            if kind == "statestore":
                f.down_s = self.rng.uniform(*self.cfg.outage)
                self.outage(f.down_s)
            else:
                self.stack.kill(kind)
                time.sleep(down)  # how long the process stays dead
                f.down_s = down
                self.stack.restart(kind)
            f.back_at = time.time()
        except Exception as exc:  # keep going: a restart that failed is a finding
            f.error = f"{type(exc).__name__}: {exc}"[:500]
            self.log(f"fault {kind}: {f.error}")
            with contextlib.suppress(Exception):
                if kind != "statestore" and self.stack.procs[kind].popen.poll() is not None:
                    self.stack.restart(kind)
                    f.back_at = time.time()
        return f

    def faulter(self, plan: list[str]) -> None:
        try:
            for i, kind in enumerate(plan):
                time.sleep(self.rng.uniform(*self.cfg.every))  # the time between faults
                f = self.hit(kind)
                with self.mu:
                    self.faults.append(f)
                back = f"{f.back_at - f.at:.1f}s" if f.back_at else "NOT BACK"
                self.log(f"fault {i + 1}/{len(plan)}: {kind} (back after {back})")
        finally:
            self.faults_done_at = time.monotonic()
            self.faulting = False

    # -- verdict -----------------------------------------------------------------
    def paid_twice(
        self,
        calls: list[dict[str, Any]],
        expected: Counter[str],
        kills: list[float],
        app_down: list[tuple[float, float]],
    ) -> tuple[int, int, list[dict[str, Any]]]:
        """(unexcused extra answers, excused extra answers, details). ``app_down``: (app
        kill, when the restarted app's worker connected) for :func:`sent_before`."""
        by_hash: dict[str, list[dict[str, Any]]] = {}
        for c in sorted(calls, key=lambda c: c["ts"]):
            by_hash.setdefault(c["messages_sha256"], []).append(c)
        bad = excused = 0
        details: list[dict[str, Any]] = []
        for h, cs in by_hash.items():
            allowed = max(1, expected.get(h, 1))
            for i in range(allowed, len(cs)):
                earlier = cs[:i]
                ok = any(in_flight_near(e, k) for e in earlier for k in kills) or any(
                    sent_before(e, k, back) for e in earlier for k, back in app_down
                )
                if ok:
                    excused += 1
                else:
                    bad += 1
                    details.append(
                        {
                            "user": cs[i].get("user"),
                            "prompt": h[:12],
                            "first_ts": cs[0]["ts"],
                            "again_ts": cs[i]["ts"],
                            "faults_between": [
                                (f.kind, round(f.at, 3))
                                for f in self.faults
                                if cs[0]["ts"] - 2 <= f.at <= cs[i]["ts"]
                            ],
                        }
                    )
        return bad, excused, details

    def verdict(self) -> dict[str, Any]:
        calls = self.calls_by_user()
        kills = [f.at for f in self.faults if f.kind in LOSES_IN_FLIGHT]
        connects = worker_connects(self.stack.logs / "app.log")
        app_down = [
            (f.at, next((t for t in connects if t > f.at), f.back_at or f.at))
            for f in self.faults
            if f.kind == "app"
        ]
        last_fault = max((f.back_at or f.at for f in self.faults), default=time.time())
        all_ts = sorted(c["ts"] for cs in calls.values() for c in cs)
        for f in self.faults:
            if f.back_at is None:
                continue
            nxt = next((t for t in all_ts if t >= f.back_at), None)
            f.recovery_s = round((nxt if nxt is not None else f.back_at) - f.at, 3)
        runs = list(self.runs.values())
        lost = [r for r in runs if r.status != "completed"]
        wrong = [r for r in runs if r.status == "completed" and r.essence != self.refs[r.pattern]]
        paid = excused = 0
        details: list[dict[str, Any]] = []
        for r in runs:
            b, e, d = self.paid_twice(
                calls.get(r.user, []), self.ref_counts[r.pattern], kills, app_down
            )
            paid, excused, details = paid + b, excused + e, details + d
        msg_paid = msg_excused = 0
        for u in {m.user for m in self.msgs}:
            b, e, d = self.paid_twice(calls.get(u, []), Counter(), kills, app_down)
            msg_paid, msg_excused, details = msg_paid + b, msg_excused + e, details + d
        lost_msgs = [m for m in self.msgs if m.status != "answered"]
        ended_after = [r.ended_at - last_fault for r in runs if r.ended_at is not None]
        end_after_last = round(max(ended_after), 3) if ended_after else None
        by_kind: dict[str, dict[str, Any]] = {}
        for k in self.cfg.kinds:
            rec = [f.recovery_s for f in self.faults if f.kind == k and f.recovery_s is not None]
            n = sum(1 for f in self.faults if f.kind == k)
            by_kind[k] = {
                "faults": n,
                "recovery_p50_s": percentile(rec, 0.5),
                "recovery_p99_s": percentile(rec, 0.99),
                "restart_failures": sum(1 for f in self.faults if f.kind == k and f.error),
            }
        recs = [f.recovery_s for f in self.faults if f.recovery_s is not None]
        revivals: list[Any] = []
        with contextlib.suppress(Exception), self.client() as c:
            revivals = c.get("/v1/revivals", params={"limit": 500}).json()["revivals"]
        ok = (
            not lost
            and not wrong
            and paid == 0
            and msg_paid == 0
            and not lost_msgs
            and (end_after_last is None or end_after_last <= MAX_END_AFTER_LAST_FAULT_S)
        )
        return {
            "case": "chaos",
            "seed": self.cfg.seed,
            "load_average": {"at_start": self.load_at_start, "at_end": list(os.getloadavg())},
            "cpus": os.cpu_count(),
            "config": {k: v for k, v in asdict(self.cfg).items() if k != "app_env"},
            "ok": ok,
            "runs": len(runs),
            "runs_by_pattern": dict(Counter(r.pattern for r in runs)),
            "faults": len(self.faults),
            "faults_by_kind": dict(Counter(f.kind for f in self.faults)),
            "lost": [{"run_id": r.run_id, "status": r.status, "error": r.error} for r in lost],
            "wrong": [r.run_id for r in wrong],
            "paid_twice": paid,
            "repeats_excused_in_flight": excused,
            "messages": len(self.msgs),
            "messages_lost": [f"{m.user}/{m.message_id}:{m.status}" for m in lost_msgs],
            "messages_paid_twice": msg_paid,
            "messages_repeats_excused": msg_excused,
            "paid_twice_details": details[:50],
            "last_end_after_last_fault_s": end_after_last,
            "recovery_p50_s": percentile(recs, 0.5),
            "recovery_p99_s": percentile(recs, 0.99),
            "recovery_by_kind": by_kind,
            "revivals": len(revivals),
            "revivals_by_action": dict(Counter(r.get("action") for r in revivals)),
            "revival_records": revivals[:100],
            "fault_log": [asdict(f) for f in self.faults],
            "start_retries": self.submit_failures,
        }

    # -- main --------------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        plan = fault_plan(self.cfg, self.rng)
        self.load_at_start = list(os.getloadavg())
        self.log(f"seed {self.cfg.seed}: {len(plan)} faults {dict(Counter(plan))}")
        t0 = time.monotonic()
        self.stack.start()
        self.log(f"stack up in {time.monotonic() - t0:.0f}s ({self.stack.data_dir})")
        try:
            self.reference()
            threads = [
                threading.Thread(target=self.workload, name="workload", daemon=True),
                threading.Thread(target=self.messages, name="messages", daemon=True),
                threading.Thread(target=self.faulter, args=(plan,), name="faults", daemon=True),
            ]
            for t in threads:
                t.start()
            with self.client() as c:
                while threads[0].is_alive() or threads[2].is_alive():
                    self.poll_messages(c)
                    time.sleep(2.0)  # polling interval of the message statuses
                self.submitting = False
                deadline = time.monotonic() + self.cfg.settle
                while self.poll_messages(c) and time.monotonic() < deadline:
                    time.sleep(1.0)  # polling interval of the message statuses
            threads[0].join()
            return self.verdict()
        finally:
            self.stack.stop()


def parse(argv: list[str] | None) -> Config:
    p = argparse.ArgumentParser(prog="bench.chaos", description=__doc__.splitlines()[0])
    d = Config()
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--runs", type=int, default=d.runs, help="at least this many runs")
    p.add_argument("--kills", type=int, default=d.kills, help="faults in all (kills + outages)")
    p.add_argument("--in-flight", type=int, default=d.in_flight)
    p.add_argument("--agents", type=int, default=d.agents, help="agents of a scatter-gather run")
    p.add_argument("--max-parallel", type=int, default=d.max_parallel)
    p.add_argument("--latency-ms", type=int, default=d.latency_ms, help="model latency")
    p.add_argument("--users", type=int, default=d.users, help="per-user agents messaged")
    p.add_argument("--every", type=float, nargs=2, default=d.every, metavar=("MIN", "MAX"))
    p.add_argument("--down", type=float, nargs=2, default=d.down, metavar=("MIN", "MAX"))
    p.add_argument("--outage", type=float, nargs=2, default=d.outage, metavar=("MIN", "MAX"))
    p.add_argument("--settle", type=float, default=d.settle, help="max wait after the last fault")
    p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated fault kinds")
    p.add_argument(
        "--keep-data",
        action="store_true",
        help="keep the stack's data dir and logs (always kept when the run fails)",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra app environment, e.g. SWARMD_STALL_AFTER_S=20",
    )
    a = p.parse_args(argv)
    kinds = tuple(k for k in a.kinds.split(",") if k)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        p.error(f"--kinds: unknown {', '.join(unknown)} (known: {', '.join(KINDS)})")
    env = {}
    for kv in a.env:
        name, sep, value = kv.partition("=")
        if not sep:
            p.error(f"--env: NAME=VALUE expected, got {kv!r}")
        env[name] = value
    default_offset = int(os.environ.get("SWARMD_TEST_PORT_OFFSET", "1000")) + 500
    return Config(
        seed=a.seed,
        runs=a.runs,
        kills=a.kills,
        in_flight=a.in_flight,
        agents=a.agents,
        max_parallel=a.max_parallel,
        latency_ms=a.latency_ms,
        users=a.users,
        every=tuple(a.every),
        down=tuple(a.down),
        outage=tuple(a.outage),
        settle=a.settle,
        kinds=kinds,
        port_offset=int(os.environ.get("SWARMD_CHAOS_PORT_OFFSET", default_offset)),
        keep_data=a.keep_data,
        app_env=env,
    )


def summary(res: dict[str, Any]) -> str:
    lines = [
        f"seed {res['seed']}: {res['faults']} faults {res['faults_by_kind']}, {res['runs']} runs "
        f"{res['runs_by_pattern']}, {res['messages']} messages",
        f"  lost {len(res['lost'])}, wrong {len(res['wrong'])}, paid twice {res['paid_twice']} "
        f"(+{res['repeats_excused_in_flight']} repeats of calls in flight at an app, daprd or "
        "litellm kill)",
        f"  messages lost {len(res['messages_lost'])}, paid twice {res['messages_paid_twice']}",
        f"  recovery p50 {res['recovery_p50_s']} s, p99 {res['recovery_p99_s']} s; last run "
        f"ended {res['last_end_after_last_fault_s']} s after the last fault",
        f"  revivals {res['revivals']} {res['revivals_by_action']}; load average "
        f"{res['load_average']['at_start']} at start, {res['load_average']['at_end']} at end",
        f"  verdict: {'PASS' if res['ok'] else 'FAIL'}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    cfg = parse(argv)
    tmp = Path(tempfile.mkdtemp(prefix=f"swarmd-chaos-{cfg.seed}-"))
    res: dict[str, Any] | None = None
    try:
        res = Chaos(cfg, tmp).execute()
    except StackError as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 3
    finally:
        # a failed run's logs and state are the only evidence of what went wrong
        if cfg.keep_data or res is None or not res["ok"]:
            print(f"chaos: data and logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"chaos-seed{cfg.seed}.json"
    out.write_text(json.dumps(res, indent=2, default=str) + "\n")
    print(summary(res))
    print(f"chaos: results in {out}")
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
