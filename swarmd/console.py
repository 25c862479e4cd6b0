"""``swarmd runs ...`` and ``swarmd agents ...``: the API from a terminal.

Tables by default (``rich``), the API's JSON with ``--json``. ``runs start
--follow`` shows a live progress bar of agents done, tokens and cost from the
run's event stream. Exit codes (also in ``swarmd.cli``):

* 0: done (``--follow``/``watch``: the run completed);
* 1: the run ended failed or terminated;
* 2: bad usage, or the API refused the input (the message names the field);
* 3: the server is unreachable or unavailable (503), or no server was found;
* 4: the API refused the call otherwise (401 token, 404 no such run, 409 state).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from swarmd.client import TERMINAL, Client, ClientError, resolve

OK, RUN_NOT_COMPLETED, BAD_INPUT, UNAVAILABLE, REFUSED = 0, 1, 2, 3, 4
#: API field -> the flag that sets it, so a refusal names what the user typed
FLAGS = {
    "input.task": "--task",
    "input.agents": "--agents",
    "input.user": "--user",
    "input.max_parallel": "--max-parallel",
    "run_id": "--run-id",
    "swarm": "<swarm>",
    "status": "--status",
    "started_after": "--since",
    "started_before": "--until",
    "limit": "--limit",
    "cursor": "--cursor",
    "user_id": "<user>",
    "template": "--template",
    "text": "<text>",
}
STATUSES = ["pending", "running", "completed", "failed", "terminated", "suspended", "unknown"]

out = Console()
err = Console(stderr=True)


def add_commands(sub: Any) -> None:
    """Register ``runs`` and ``agents`` on the top-level subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="API base URL (default: SWARMD_URL, or the local stack)")
    common.add_argument(
        "--token", help="bearer token (default: SWARMD_TOKEN, or the local stack's)"
    )
    common.add_argument("--data-dir", help="local stack data dir (default: .data)")
    common.add_argument("--json", action="store_true", help="print the API's JSON")

    runs = sub.add_parser("runs", help="start, list, watch and steer runs").add_subparsers(
        dest="action", required=True
    )

    def cmd(subs: Any, name: str, help_: str, fn: Any, *positional: str) -> Any:
        p = subs.add_parser(name, parents=[common], help=help_)
        for a in positional:
            p.add_argument(a)
        p.set_defaults(fn=fn)
        return p

    p = cmd(runs, "start", "start a run of a swarm", runs_start, "swarm")
    p.add_argument("--task", required=True, help="what the swarm should do")
    p.add_argument("--agents", type=int, help="scatter_gather: how many agents")
    p.add_argument("--user", help="end user id (input.user)")
    p.add_argument("--max-parallel", type=int, help="override limits.max_parallel")
    p.add_argument("--run-id", help="client-chosen id (idempotent start)")
    p.add_argument("--follow", "-f", action="store_true", help="show live progress until it ends")

    p = cmd(runs, "list", "list runs, newest first", runs_list)
    p.add_argument("--status", action="append", choices=STATUSES, help="repeat for several")
    p.add_argument("--swarm")
    p.add_argument("--user")
    p.add_argument("--since", help="started at or after (ISO 8601)")
    p.add_argument("--until", help="started before (ISO 8601)")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--cursor", help="next_cursor of a previous page")

    cmd(runs, "get", "a run's status, progress and answer", runs_get, "run_id")
    cmd(runs, "watch", "live progress of a run until it ends", runs_watch, "run_id")
    p = cmd(runs, "approve", "release a run's approval gate", runs_approve, "run_id")
    p.add_argument("--reject", action="store_true", help="answer not approved")
    cmd(runs, "pause", "suspend a run", runs_control, "run_id")
    cmd(runs, "resume", "resume a suspended run", runs_control, "run_id")
    p = cmd(runs, "terminate", "stop a run and its agents", runs_control, "run_id")
    p.add_argument("--reason", help="recorded as the run's output")
    cmd(runs, "purge", "delete a finished run and its history", runs_control, "run_id")

    agents = sub.add_parser("agents", help="per-user agents").add_subparsers(
        dest="action", required=True
    )
    p = cmd(agents, "list", "provisioned agents, newest first", agents_list)
    p.add_argument("--template")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--cursor")
    cmd(agents, "get", "one user's agent", agents_get, "user")
    p = cmd(agents, "provision", "provision a user's agent", agents_provision, "user")
    p.add_argument("--template", required=True, help="analyst, engineer or manager")
    p = cmd(agents, "message", "message a user's agent", agents_message, "user", "text")
    p.add_argument("--wait", type=float, default=60, help="seconds to wait for the reply")
    cmd(agents, "deprovision", "remove a user's agent entirely", agents_deprovision, "user")


def run(args: argparse.Namespace) -> int:
    """Run a ``runs``/``agents`` command; errors become a message and an exit code."""
    fn: Callable[[Client, argparse.Namespace], int] = args.fn
    try:
        with Client(resolve(args.url, args.token, args.data_dir)) as c:
            return fn(c, args)
    except ClientError as exc:
        return _fail(exc)
    except KeyboardInterrupt:
        err.print("swarmd: interrupted (the run goes on; `swarmd runs watch <id>` to follow)")
        return 130


def _fail(exc: ClientError) -> int:
    where = ""
    if exc.field:
        flag = FLAGS.get(exc.field)
        where = f"{flag} ({exc.field})" if flag else exc.field
        msg = exc.message.removeprefix(f"{exc.field}: ")
        err.print(f"swarmd: {escape(where)}: {escape(msg)}", highlight=False)
    else:
        err.print(f"swarmd: {escape(exc.message)}", highlight=False)
    if exc.status == 0 or exc.status == 503:
        return UNAVAILABLE
    if exc.status in (400, 413, 422):
        return BAD_INPUT
    return REFUSED


def _print_json(value: Any) -> None:
    out.print_json(json.dumps(value), highlight=False)


# -- runs ----------------------------------------------------------------------------


def runs_start(c: Client, args: argparse.Namespace) -> int:
    inp: dict[str, Any] = {"task": args.task}
    for k in ("agents", "user", "max_parallel"):
        if getattr(args, k) is not None:
            inp[k] = getattr(args, k)
    body: dict[str, Any] = {"swarm": args.swarm, "input": inp}
    if args.run_id:
        body["run_id"] = args.run_id
    accepted = c.call("POST", "/v1/runs", body=body)
    if not args.follow:
        if args.json:
            _print_json(accepted)
        else:
            out.print(accepted["run_id"], highlight=False)
        return OK
    if not args.json:
        err.print(f"run [bold]{accepted['run_id']}[/] ({accepted['swarm']}) started")
    return _follow(c, accepted["run_id"], args.json)


def runs_watch(c: Client, args: argparse.Namespace) -> int:
    return _follow(c, args.run_id, args.json)


def _follow(c: Client, run_id: str, as_json: bool) -> int:
    """Live progress from the run's event stream until it ends; 0 if it completed."""
    final: dict[str, Any] | None = None
    bar = Progress(
        TextColumn("[bold]{task.fields[status]}[/] {task.fields[phase]}"),
        BarColumn(),
        TextColumn("{task.fields[agents]} agents"),
        TextColumn("{task.fields[tokens]} tokens"),
        TextColumn("${task.fields[cost]:.4f}"),
        TimeElapsedColumn(),
        console=err,
        transient=False,
        disable=as_json,
    )
    with bar:
        task = bar.add_task(
            "run", total=None, status="pending", phase="", agents="0/?", tokens=0, cost=0.0
        )
        for attempt in range(10):  # reconnect a broken stream: each one starts with the state
            try:
                for event, view in c.events(f"/v1/runs/{run_id}/stream"):
                    if event == "error":
                        raise ClientError(view.get("message", "stream error"), status=404)
                    prog = view.get("progress") or {}
                    usage = view.get("usage") or prog.get("usage") or {}
                    total = prog.get("agents_total") or None
                    done = prog.get("agents_done", 0)
                    bar.update(
                        task,
                        total=total,
                        completed=done,
                        agents=f"{done}/{total or '?'}",
                        status=view["status"],
                        phase=prog.get("phase", ""),
                        tokens=usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0),
                        cost=usage.get("cost_usd", 0.0),
                    )
                    if event == "end":
                        final = view
                break
            except ClientError as exc:
                if exc.status or attempt == 9:
                    raise
    if final is None:  # the stream closed without an end: read the run once
        final = c.call("GET", f"/v1/runs/{run_id}")
        if final is None or final["status"] not in TERMINAL:
            raise ClientError(f"lost the stream of run {run_id}")
    if as_json:
        _print_json(final)
    else:
        _show_run(final)
    return OK if final["status"] == "completed" else RUN_NOT_COMPLETED


def runs_list(c: Client, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {
        "status": args.status,
        "swarm": args.swarm,
        "user": args.user,
        "started_after": _rfc3339(args.since, "--since"),
        "started_before": _rfc3339(args.until, "--until"),
        "limit": args.limit,
        "cursor": args.cursor,
    }
    page = c.call("GET", "/v1/runs", params=params)
    if args.json:
        _print_json(page)
        return OK
    t = Table("RUN", "SWARM", "STATUS", "AGENTS", "TOKENS", "COST", "USER", "STARTED")
    for r in page["items"]:
        prog = r.get("progress") or {}
        usage = r.get("usage") or {}
        t.add_row(
            r["run_id"],
            r["swarm"],
            _status(r["status"]),
            f"{prog.get('agents_done', 0)}/{prog.get('agents_total', 0)}" if prog else "-",
            str(usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)),
            f"${usage.get('cost_usd', 0):.4f}",
            r.get("user") or "-",
            _when(r.get("created_at")),
        )
    return _page(t, page)


def _page(table: Table, page: dict[str, Any]) -> int:
    """Print a list's table, and how to get its next page."""
    out.print(table)
    if page.get("next_cursor"):
        err.print(f"more: --cursor {page['next_cursor']}", highlight=False)
    return OK


def _rfc3339(text: str | None, flag: str) -> str | None:
    """A date or date-time as typed (UTC unless it says otherwise), as the API wants it."""
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ClientError(f"{flag}: not a date or date-time: {text!r}", status=422) from None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).isoformat()


def runs_get(c: Client, args: argparse.Namespace) -> int:
    view = c.call("GET", f"/v1/runs/{args.run_id}")
    if args.json:
        _print_json(view)
    else:
        _show_run(view)
    return OK


def _show_run(view: dict[str, Any]) -> None:
    prog = view.get("progress") or {}
    usage = view.get("usage") or {}
    t = Table(show_header=False, box=None)
    t.add_row("run", view["run_id"])
    t.add_row("swarm", str(view.get("swarm")))
    t.add_row("status", _status(view["status"]))
    if prog:
        t.add_row(
            "progress",
            f"{prog.get('phase')}, {prog.get('agents_done', 0)}/{prog.get('agents_total', 0)} "
            f"agents, round {prog.get('round', 0)}",
        )
    t.add_row(
        "usage",
        f"{usage.get('prompt_tokens', 0)} prompt + {usage.get('completion_tokens', 0)} "
        f"completion tokens, {usage.get('calls', 0)} LLM calls, ${usage.get('cost_usd', 0):.4f}",
    )
    for k in ("stop_reason", "error", "created_at", "updated_at"):
        if view.get(k):
            t.add_row(k.replace("_", " "), str(view[k]))
    out.print(t)
    answer = (view.get("output") or {}).get("answer")
    if answer:
        out.rule("answer")
        out.print(answer, highlight=False, markup=False)


def runs_approve(c: Client, args: argparse.Namespace) -> int:
    body = {"approved": not args.reject}
    res = c.call("POST", f"/v1/runs/{args.run_id}/events/approval", body=body)
    return _done(res, args, "approved" if not args.reject else "rejected")


def runs_control(c: Client, args: argparse.Namespace) -> int:
    if args.action == "purge":
        c.call("DELETE", f"/v1/runs/{args.run_id}")
        return _done({"run_id": args.run_id, "purged": True}, args, "purged")
    body = {"reason": args.reason} if args.action == "terminate" and args.reason else None
    res = c.call("POST", f"/v1/runs/{args.run_id}/{args.action}", body=body)
    return _done(res, args, {"pause": "paused", "resume": "resumed"}.get(args.action, "terminated"))


def _done(res: Any, args: argparse.Namespace, what: str) -> int:
    if args.json:
        _print_json(res)
    else:
        prev = f" (was {res['previous_status']})" if res and res.get("previous_status") else ""
        out.print(f"{args.run_id}: {what}{prev}", highlight=False)
    return OK


def _status(s: str) -> str:
    color = {"completed": "green", "failed": "red", "terminated": "yellow"}.get(s, "cyan")
    return f"[{color}]{s}[/]"


def _when(iso: str | None) -> str:
    if not iso:
        return "-"
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso


# -- agents --------------------------------------------------------------------------


def agents_list(c: Client, args: argparse.Namespace) -> int:
    params = {"template": args.template, "limit": args.limit, "cursor": args.cursor}
    page = c.call("GET", "/v1/agents", params=params)
    if args.json:
        _print_json(page)
        return OK
    t = Table("USER", "TEMPLATE", "STATUS", "MESSAGES", "TOKENS TODAY", "TOKENS", "CREATED")
    for a in page["items"]:
        t.add_row(
            a["user_id"],
            a["template"],
            a["status"],
            str(a["messages"]),
            str(a["usage_today"]["tokens"]),
            str(a["usage_total"]["tokens"]),
            _when(a.get("created_at")),
        )
    return _page(t, page)


def agents_get(c: Client, args: argparse.Namespace) -> int:
    return _kv(c.call("GET", f"/v1/agents/{args.user}"), args)


def agents_provision(c: Client, args: argparse.Namespace) -> int:
    body = {"user_id": args.user, "template": args.template}
    return _kv(c.call("POST", "/v1/agents", body=body), args)


def agents_deprovision(c: Client, args: argparse.Namespace) -> int:
    res = c.call("DELETE", f"/v1/agents/{args.user}")
    _kv(res, args)
    return OK if res.get("clean") else REFUSED


def agents_message(c: Client, args: argparse.Namespace) -> int:
    sent = c.call("POST", f"/v1/agents/{args.user}/messages", body={"text": args.text})
    msg = c.call(
        "GET",
        f"/v1/agents/{args.user}/messages/{sent['message_id']}",
        params={"wait_s": min(max(args.wait, 0), 60)},
    )
    if args.json:
        _print_json(msg)
    elif msg.get("reply"):
        out.print(msg["reply"], highlight=False, markup=False)
    else:
        err.print(f"{sent['message_id']}: {msg['status']} {msg.get('error') or ''}")
    return OK if msg["status"] == "answered" else RUN_NOT_COMPLETED


def _kv(res: dict[str, Any], args: argparse.Namespace) -> int:
    if args.json:
        _print_json(res)
        return OK
    t = Table(show_header=False, box=None)
    for k, v in res.items():
        t.add_row(k, v if isinstance(v, str) else json.dumps(v))
    out.print(t)
    return OK
