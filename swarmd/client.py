"""A small synchronous client of the swarmd HTTP API, for the CLI and scripts.

Where it connects, first match wins:

* the server URL: ``--url``, then ``SWARMD_URL``, then the ``stack.json`` a running
  local stack (``swarmd up``/``make run``) writes into its data dir;
* the token: ``--token``, then ``SWARMD_TOKEN``, then ``SWARMD_API_TOKEN`` (the
  server's own setting), then ``<data dir>/secrets/api-token``.

The data dir is ``--data-dir``, else ``SWARMD_DATA_DIR``, else ``./.data`` if it
holds a stack, else the checkout's ``.data``. The token never goes into a URL or
an error message.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from swarmd.devstack.launcher import ROOT, STACK_FILE

TERMINAL = frozenset({"completed", "failed", "terminated"})


class ClientError(Exception):
    """The API refused a call (``status`` > 0) or could not be reached (``status`` 0)."""

    def __init__(
        self, message: str, *, status: int = 0, code: str = "", field: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.field = field


@dataclass(frozen=True)
class Connection:
    url: str
    token: str | None


def _data_dir(flag: str | None) -> Path:
    if flag:
        return Path(flag)
    if os.environ.get("SWARMD_DATA_DIR"):
        return Path(os.environ["SWARMD_DATA_DIR"])
    here = Path(".data")
    return here if (here / STACK_FILE).exists() else ROOT / ".data"


def resolve(
    url: str | None = None, token: str | None = None, data_dir: str | None = None
) -> Connection:
    """Where to connect and with which token (see the module docstring)."""
    d = _data_dir(data_dir)
    url = url or os.environ.get("SWARMD_URL")
    if not url:
        try:
            url = str(json.loads((d / STACK_FILE).read_text())["api_url"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ClientError(
                f"no server URL: pass --url or set SWARMD_URL, or start the local stack "
                f"(`make up`); no running stack found in {d}"
            ) from exc
    token = token or os.environ.get("SWARMD_TOKEN") or os.environ.get("SWARMD_API_TOKEN")
    if not token:
        try:
            token = (d / "secrets" / "api-token").read_text().strip() or None
        except OSError:
            token = None
    if not url.startswith(("http://", "https://")):
        raise ClientError(f"--url: must start with http:// or https:// (got {url[:80]!r})")
    return Connection(url.rstrip("/"), token)


class Client:
    def __init__(self, conn: Connection, timeout_s: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {conn.token}"} if conn.token else {}
        self.conn = conn
        self.http = httpx.Client(base_url=conn.url, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """One API call: the decoded JSON body (None for 204), or :class:`ClientError`."""
        try:
            r = self.http.request(
                method,
                path,
                json=body,
                params={k: v for k, v in (params or {}).items() if v is not None},
            )
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach {self.conn.url}: {exc}") from exc
        if r.status_code == 204:
            return None
        if r.status_code >= 400:
            raise _error(r)
        try:
            return r.json()
        except ValueError as exc:
            raise ClientError(f"{method} {path}: not JSON", status=r.status_code) from exc

    def events(self, path: str) -> Iterator[tuple[str, Any]]:
        """``(event, data)`` of a server-sent event stream until it closes."""
        try:
            with self.http.stream("GET", path, timeout=httpx.Timeout(30, read=None)) as r:
                if r.status_code >= 400:
                    r.read()
                    raise _error(r)
                event, data = "message", list[str]()
                for line in r.iter_lines():
                    if not line:
                        if data:
                            yield event, json.loads("\n".join(data))
                        event, data = "message", list[str]()
                    elif line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
        except httpx.HTTPError as exc:
            raise ClientError(f"stream from {self.conn.url} broke: {exc}") from exc


def _error(r: httpx.Response) -> ClientError:
    try:
        err = r.json().get("error") or {}
    except (ValueError, AttributeError):
        err = {}
    message = err.get("message") or f"HTTP {r.status_code}: {r.text[:200]}"
    return ClientError(
        str(message), status=r.status_code, code=str(err.get("code", "")), field=err.get("field")
    )
