"""Run catalog cursors and filters, and where the CLI client connects (no stack)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from swarmd import cli
from swarmd.client import ClientError, resolve
from swarmd.engine.catalog import Cursor, RunQuery
from swarmd.errors import ValidationFailed


def test_a_cursor_survives_its_round_trip_and_a_forged_one_names_the_field() -> None:
    c = Cursor(d="2026-12-01", p=3, t=1764547200123456, id="abc")
    assert Cursor.decode(c.encode()) == c
    assert Cursor.decode(".0.5.x") == Cursor(p=0, t=5, id="x")  # the in-flight walk's
    for bad in ("not-a-cursor", "e30", c.encode()[:-4] + "!", "2026-12-01.3.17"):
        with pytest.raises(ValidationFailed) as exc:
            Cursor.decode(bad)
        assert exc.value.field == "cursor"


def test_start_time_filters_match_the_microseconds_that_created_at_shows() -> None:
    t = 1764547200.1234567
    shown = datetime.fromtimestamp(t, UTC)  # what the list prints as created_at
    entry = {"id": "r", "t": t, "swarm": "debate", "user": "u"}
    assert RunQuery(started_after=shown.timestamp()).entry_matches(entry)
    assert not RunQuery(started_before=shown.timestamp()).entry_matches(entry)
    assert not RunQuery(swarm="pipeline").entry_matches(entry)
    assert RunQuery(swarm="debate", user="u").entry_matches(entry)
    assert not RunQuery(owner="alice").entry_matches(entry)


def test_the_client_finds_a_local_stack_and_flags_win_over_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k in ("SWARMD_URL", "SWARMD_TOKEN", "SWARMD_API_TOKEN", "SWARMD_DATA_DIR"):
        monkeypatch.delenv(k, raising=False)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "api-token").write_text("file-token\n")
    (tmp_path / "stack.json").write_text(json.dumps({"api_url": "http://127.0.0.1:8123"}))
    conn = resolve(data_dir=str(tmp_path))
    assert (conn.url, conn.token) == ("http://127.0.0.1:8123", "file-token")
    monkeypatch.setenv("SWARMD_URL", "http://env:1/")
    monkeypatch.setenv("SWARMD_TOKEN", "env-token")
    conn = resolve(data_dir=str(tmp_path))
    assert (conn.url, conn.token) == ("http://env:1", "env-token")
    conn = resolve("https://flag:2", "flag-token", str(tmp_path))
    assert (conn.url, conn.token) == ("https://flag:2", "flag-token")
    with pytest.raises(ClientError, match="--url"):
        resolve("ftp://x", None, str(tmp_path))


def test_no_stack_and_no_url_is_exit_3_saying_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SWARMD_URL", raising=False)
    code = cli.main(["runs", "list", "--data-dir", str(tmp_path)])
    assert code == 3
    assert "--url" in capsys.readouterr().err


def test_a_missing_required_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["runs", "start", "scatter_gather"])
    assert exc.value.code == 2
    assert "--task" in capsys.readouterr().err
