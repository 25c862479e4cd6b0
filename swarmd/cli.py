"""``swarmd`` command line: serve the app, run the local stack, run a demo swarm,
and the API client (``swarmd runs ...``, ``swarmd agents ...``: swarmd.console).

Exit codes: 0 ok, 1 the demo run (or a followed run) did not complete, 2 bad
usage, configuration or input (the message names the field), 3 a required binary
or port, or the server, is unavailable, 4 the API refused the call (401, 404, 409).
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from swarmd.errors import field_path


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from swarmd.api.app import create_app
    from swarmd.config import Settings
    from swarmd.logs import setup_logging

    settings = Settings()
    setup_logging(settings.log_format, settings.log_level)
    from swarmd.malloc import fix_mmap_threshold
    from swarmd.telemetry import setup_tracing

    fix_mmap_threshold(settings.malloc_mmap_threshold)

    provider = setup_tracing(
        otlp_endpoint=settings.otlp_endpoint,
        export=settings.trace_export,
        data_dir=settings.data_dir,
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    if provider is not None:
        provider.shutdown()  # flush the spans still queued
    return 0


def _stack(args: argparse.Namespace) -> int:
    from swarmd.devstack.launcher import main

    return main(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="swarmd", description="durable AI agent swarms on Dapr")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("serve", help="serve the HTTP API and the workflow worker (beside daprd)")
    sub.add_parser("modelserver", help="run the local deterministic model server (--help)")
    sub.add_parser("slackserver", help="run the local Slack Web API server (--help)")
    for name, help_ in (
        ("run", "start the local stack, run a demo swarm, keep serving until Ctrl-C"),
        ("demo", "start the local stack, run a demo swarm, print the result and exit"),
        ("up", "start the local stack and keep serving until Ctrl-C (no demo)"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--agents", type=int, default=5, help="agents in the demo swarm")
        p.add_argument(
            "--task", default="Write a short briefing on durable execution for AI agents."
        )
        p.add_argument("--data-dir", default=None, help="where logs and state go (default .data)")
        p.add_argument(
            "--replicas",
            type=int,
            choices=range(1, 5),
            default=1,
            metavar="N",
            help="app + daprd pairs (1-4) on one control plane, consuming swarm.tasks together",
        )
    from swarmd import console

    console.add_commands(sub)
    raw = sys.argv[1:] if argv is None else argv
    if raw[:1] == ["modelserver"]:  # its own argparse owns the rest of the line
        from swarmd.devstack import modelserver

        modelserver.main(raw[1:])
        return 0
    if raw[:1] == ["slackserver"]:
        from swarmd.devstack import slackserver

        slackserver.main(raw[1:])
        return 0
    args = parser.parse_args(raw)
    try:
        if args.cmd == "serve":
            return _serve(args)
        if args.cmd in ("runs", "agents"):
            return console.run(args)
        return _stack(args)
    except ValidationError as exc:
        for e in exc.errors():
            field = "SWARMD_" + field_path(e["loc"], sep="_").upper()
            print(f"swarmd: invalid setting {field}: {e['msg']}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
