#!/usr/bin/env python3
"""Provision the Dapr runtime (daprd, placement, scheduler) and the dapr CLI.

Idempotent: binaries already present at the pinned version (ours, or the
official ones from ``dapr init --slim``) are reused; anything missing is built
from the Go modules with ``go build`` in a wrapper module generated under the
user's cache directory. Nothing is downloaded except Go modules through the
Go module proxy, and nothing is written into the repository.

Why a generated wrapper module: dapr's go.mod carries ``replace`` directives,
so ``go install github.com/dapr/dapr/cmd/daprd@vX`` is refused. A module of
ours that requires dapr with dapr's own pins (its require and replace blocks
and its go.sum) builds the same dependency graph dapr's release uses.

Usage: scripts/setup_dapr.py [--print-bin-dir] [--force]
Exit codes: 0 ok, 2 bad usage, 3 Go missing or too old, 4 build failed.
Stdlib only: it runs before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VERSIONS_FILE = ROOT / "versions.env"
WRAPPER_SRC = ROOT / "tools" / "daprbuild"
RUNTIME_BINARIES = ("daprd", "placement", "scheduler")
WRAPPER_MODULE = "swarmd.dev/daprbuild"
MIN_GO = (1, 26)


class SetupError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def log(msg: str) -> None:
    print(f"[setup-dapr] {msg}", file=sys.stderr, flush=True)


def read_versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in VERSIONS_FILE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def dapr_home() -> Path:
    base = os.environ.get("DAPR_RUNTIME_PATH") or str(Path.home())
    return Path(base) / ".dapr"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "swarmd"


def binary_version(path: Path) -> str | None:
    """Version a Dapr binary reports, or None if it cannot be run."""
    if not path.is_file() or not os.access(path, os.X_OK):
        return None
    try:
        proc = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (proc.stdout + proc.stderr).strip()
    # daprd prints "1.18.3"; the CLI prints "CLI version: 1.18.0 \nRuntime version: ..."
    m = re.search(r"(?:CLI version:\s*)?(\d+\.\d+\.\d+\S*)", text)
    return m.group(1) if m else (text.splitlines()[0] if text else None)


def control_plane_version(path: Path) -> str | None:
    """placement and scheduler have no --version: read the dapr module version
    from the Go build info (works for official binaries too), if Go is here."""
    if not path.is_file():
        return None
    go = shutil.which("go")
    if go is None:
        return "present"  # trust what `dapr init --slim` installed beside daprd
    out = subprocess.run(
        [go, "version", "-m", str(path)], capture_output=True, text=True, check=False
    )
    m = re.search(r"\b(?:dep|mod)\s+github\.com/dapr/dapr\s+v(\S+)", out.stdout)
    return m.group(1) if m else None


def require_go() -> str:
    go = shutil.which("go")
    if go is None:
        raise SetupError(
            "Go is not installed (no `go` on PATH). swarmd builds the Dapr runtime from its "
            f"Go modules and needs Go >= {MIN_GO[0]}.{MIN_GO[1]}: install it (e.g. "
            "`apt-get install golang-go` if your distribution ships a recent enough one, or "
            "the official tarball) and re-run `make setup`.",
            3,
        )
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=False)
    m = re.match(r"go(\d+)\.(\d+)", out.stdout.strip())
    if not m or (int(m.group(1)), int(m.group(2))) < MIN_GO:
        raise SetupError(
            f"Go {out.stdout.strip() or '(unknown)'} is too old: dapr's go.mod needs Go >= "
            f"{MIN_GO[0]}.{MIN_GO[1]}. Install a newer Go and re-run `make setup`.",
            3,
        )
    return go


def run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SetupError(
            f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-4000:]}", 4
        )
    return proc.stdout


def generate_wrapper(
    go: str,
    module: str,
    version: str,
    build_dir: Path,
    env: dict[str, str],
    mains: tuple[str, ...] = (),
    extra: tuple[str, ...] = (),
) -> None:
    """Write a go.mod/go.sum requiring ``module`` with that module's own pins.

    ``mains`` are our main packages (from tools/daprbuild) copied beside it.
    """
    info = json.loads(run([go, "mod", "download", "-json", f"{module}@v{version}"], env=env))
    if info.get("Error"):
        raise SetupError(f"cannot download {module}@v{version}: {info['Error']}", 4)
    mod_dir = Path(info["Dir"])
    gomod = (mod_dir / "go.mod").read_text()
    go_directive = re.search(r"^go (\S+)$", gomod, re.M)
    require_blocks = re.findall(r"^require \((.*?)^\)", gomod, re.M | re.S)
    replace_blocks = re.findall(r"^replace \((.*?)^\)", gomod, re.M | re.S)
    if not go_directive or not require_blocks:
        raise SetupError(f"unexpected layout of {mod_dir / 'go.mod'}", 4)

    lines = [
        "// Generated by scripts/setup_dapr.py from the module's go.mod. Do not edit or tidy.",
        f"module {WRAPPER_MODULE}",
        "",
        f"go {go_directive.group(1)}",
        "",
        f"require {module} v{version}",
        "",
    ]
    for block in require_blocks:
        lines += ["require (", block.rstrip(), ")", ""]
    for block in replace_blocks:
        lines += ["replace (", block.rstrip(), ")", ""]
    lines += list(extra)

    if build_dir.exists():
        shutil.rmtree(build_dir)
    build_dir.mkdir(parents=True)
    (build_dir / "go.mod").write_text("\n".join(lines))
    gosum = (mod_dir / "go.sum").read_text()
    gosum += f"{module} v{version} {info['Sum']}\n"
    gosum += f"{module} v{version}/go.mod {info['GoModSum']}\n"
    (build_dir / "go.sum").write_text(gosum)
    for name in mains:
        (build_dir / name).mkdir()
        shutil.copy2(WRAPPER_SRC / name / "main.go", build_dir / name / "main.go")


def build_runtime(go: str, version: str, bin_dir: Path, missing: list[str]) -> None:
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=readonly -buildvcs=false")
    build_dir = cache_dir() / f"daprbuild-{version}"
    generate_wrapper(go, "github.com/dapr/dapr", version, build_dir, env, RUNTIME_BINARIES)
    ldflags = (
        f"-s -w -X github.com/dapr/dapr/pkg/buildinfo.version={version} "
        f"-X github.com/dapr/kit/logger.DaprVersion={version}"
    )
    out_dir = build_dir / "out"
    out_dir.mkdir(exist_ok=True)
    for name in missing:
        tags = ["-tags", "stablecomponents"] if name == "daprd" else []
        log(f"go build {name} {version} {' '.join(tags)} (first build takes minutes)")
        t0 = time.monotonic()
        run(
            [
                go,
                "build",
                *tags,
                "-trimpath",
                "-ldflags",
                ldflags,
                "-o",
                str(out_dir / name),
                f"./{name}",
            ],
            cwd=build_dir,
            env=env,
        )
        log(f"built {name} in {time.monotonic() - t0:.0f}s")
        install(out_dir / name, bin_dir / name)


def build_cli(go: str, version: str, bin_dir: Path, contrib: str | None) -> None:
    """Build the dapr CLI in a wrapper module too.

    ``go install github.com/dapr/cli@vX`` would do, but it asks the proxy for the
    module's version list (to check deprecation), which some proxies refuse.
    ``contrib`` replaces the components-contrib version the CLI's dapr
    dependency wants when the proxy does not serve that one (versions.env);
    the CLI only uses contrib's component metadata types. Go then completes
    go.sum for the replacement (``-mod=mod``; nothing is tidied).
    """
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod -buildvcs=false")
    build_dir = cache_dir() / f"daprcli-{version}"
    extra = (
        (
            f"replace github.com/dapr/components-contrib => "
            f"github.com/dapr/components-contrib v{contrib}",
        )
        if contrib
        else ()
    )
    generate_wrapper(go, "github.com/dapr/cli", version, build_dir, env, extra=extra)
    log(f"go build github.com/dapr/cli {version}")
    t0 = time.monotonic()
    out = build_dir / "out" / "dapr"
    run(
        [
            go,
            "build",
            "-trimpath",
            "-ldflags",
            f"-s -w -X main.version={version} -X main.apiVersion=1.0",
            "-o",
            str(out),
            "github.com/dapr/cli",
        ],
        cwd=build_dir,
        env=env,
    )
    log(f"built dapr CLI in {time.monotonic() - t0:.0f}s")
    install(out, bin_dir / "dapr")


def install(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copy2(src, tmp)
    tmp.chmod(0o755)
    tmp.replace(dst)  # atomic: a concurrent reader never sees half a binary


def ensure_config(home: Path) -> None:
    cfg = home / "config.yaml"
    if not cfg.exists():
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n"
            "  name: daprConfig\nspec: {}\n"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--print-bin-dir",
        action="store_true",
        help="print the directory holding the binaries and exit",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if present")
    args = parser.parse_args(argv)

    versions = read_versions()
    runtime_v = versions["DAPR_RUNTIME_VERSION"]
    cli_v = versions["DAPR_CLI_VERSION"]
    home = dapr_home()
    bin_dir = home / "bin"
    if args.print_bin_dir:
        print(bin_dir)
        return 0

    t0 = time.monotonic()
    try:
        missing = []
        for name in RUNTIME_BINARIES:
            if name == "daprd":
                have = binary_version(bin_dir / name)
            else:
                have = control_plane_version(bin_dir / name)
                have = runtime_v if have == "present" else have
            if have == runtime_v and not args.force:
                continue
            if have is not None and have != runtime_v:
                log(f"{bin_dir / name} reports {have}, swarmd pins {runtime_v}: replacing it")
            missing.append(name)
        cli_have = binary_version(bin_dir / "dapr")
        on_path = shutil.which("dapr")
        need_cli = args.force or (cli_have is None and on_path is None)
        if cli_have is None and on_path and not args.force:
            log(f"using the dapr CLI already on PATH: {on_path}")

        if missing or need_cli:
            go = require_go()
            if missing:
                build_runtime(go, runtime_v, bin_dir, missing)
            if need_cli:
                build_cli(go, cli_v, bin_dir, versions.get("DAPR_CLI_CONTRIB_REPLACE"))
        ensure_config(home)
    except SetupError as exc:
        log(f"error: {exc}")
        return exc.code
    state = "built" if (missing or need_cli) else "already present, reused"
    log(f"dapr runtime {runtime_v} + CLI in {bin_dir}: {state} ({time.monotonic() - t0:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
