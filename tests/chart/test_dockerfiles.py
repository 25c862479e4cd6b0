"""Static checks of the image recipes (no Docker engine here to build them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {
    "app": (REPO_ROOT / "Dockerfile", ["swarmd", "serve"], 8000),
    "watchdog": (REPO_ROOT / "watchdog" / "Dockerfile", ["swarmd-watchdog"], 8081),
}
PINNED_PYTHON = re.compile(r"^python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?$")


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def _stages(instrs: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in instrs:
        if ins[0] == "FROM":
            stages.append([])
        stages[-1].append(ins)
    return stages


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_base_image_is_pinned_slim_python(name: str) -> None:
    path, _, _ = DOCKERFILES[name]
    froms = [args for ins, args in _instructions(path) if ins == "FROM"]
    assert froms
    for args in froms:
        image = args.split()[0]
        assert PINNED_PYTHON.match(image), (
            f"{path}: FROM {image} is not an exact slim python:3.11.x tag"
        )


def test_both_images_use_the_same_base() -> None:
    bases = {
        tuple(args.split()[0] for ins, args in _instructions(path) if ins == "FROM")
        for path, _, _ in DOCKERFILES.values()
    }
    assert len(bases) == 1


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_runs_as_non_root_with_the_charts_uid(name: str) -> None:
    path, _, _ = DOCKERFILES[name]
    final = _stages(_instructions(path))[-1]
    users = [args for ins, args in final if ins == "USER"]
    assert users, f"{path}: final stage has no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, (
        "USER must be a numeric non-root UID (runAsNonRoot checks it)"
    )
    values = (REPO_ROOT / "charts" / "swarmd" / "values.yaml").read_text()
    assert f"runAsUser: {uid}" in values
    assert gid == "" or f"runAsGroup: {gid}" in values


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_installs_the_repo_and_runs_the_console_script(name: str) -> None:
    path, cmd, port = DOCKERFILES[name]
    instrs = _instructions(path)
    runs = " ".join(args for ins, args in instrs if ins == "RUN")
    assert re.search(r"pip install (-c constraints\.txt )?\.(\s|$)", runs)
    final = _stages(instrs)[-1]
    cmds = [args for ins, args in final if ins == "CMD"]
    assert cmds and cmds[-1] == "[" + ", ".join(f'"{c}"' for c in cmd) + "]"
    assert ("EXPOSE", str(port)) in final


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_no_secrets_in_the_image(name: str) -> None:
    path, _, _ = DOCKERFILES[name]
    for ins, args in _instructions(path):
        assert ins != "ADD", f"{path}: use COPY, not ADD"
        if ins in {"ENV", "ARG"}:
            for name_ in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split("=")[0]]:
                assert not re.search(r"KEY|TOKEN|PASSWORD|SECRET", name_, re.I), (
                    f"{path}: {ins} {name_}"
                )
        if ins == "COPY":
            assert not re.search(r"\.env|secret|\.pem|\.key|kubeconfig", args, re.I), (
                f"{path}: COPY {args}"
            )


def test_dockerignore_keeps_credentials_and_local_state_out() -> None:
    patterns = {
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for required in [
        ".git",
        ".venv",
        ".env",
        ".env.*",
        "**/*.pem",
        "**/*.key",
        "charts",
        "tests",
        "tools",
    ]:
        assert required in patterns, required
    # What `pip install .` needs must stay in the context.
    for needed in ["pyproject.toml", "constraints.txt", "swarmd", "README.md", "*.md"]:
        assert needed not in patterns, needed
