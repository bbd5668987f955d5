"""A client of ``r3mem serve``, and the chat's memory through it (``r3mem chat --server``).

Errors the server answers come back as :class:`ServiceError` with its status and its one-line
detail, so the CLI prints them as it prints its own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any
from urllib.parse import quote

import httpx

from ..chat import SOURCE, exchanges, forget_latest
from ..memory import Recalled

KEY_VARIABLE = "R3MEM_API_KEY"


class ServiceError(OSError):
    """The service refused or failed a request; ``status`` is its HTTP status."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"the memory service answered {status}: {detail}")
        self.status = status


class Client:
    """Calls of the ``/v1`` API with one key (default: the ``R3MEM_API_KEY`` variable)."""

    def __init__(self, url: str, key: str | None = None, timeout: float = 300.0) -> None:
        key = key or os.environ.get(KEY_VARIABLE)
        if not key:
            raise ValueError(f"no API key: pass one or set {KEY_VARIABLE}")
        headers = {"Authorization": f"Bearer {key}"}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as err:
            raise ConnectionError(f"{self.http.base_url}: {err}") from err
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ServiceError(response.status_code, str(detail))
        return response.json()

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/v1/health")

    def add(
        self,
        user_id: str,
        text: str | None = None,
        messages: list[dict[str, Any]] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> list[int]:
        body: dict[str, Any] = {"user_id": user_id, "metadata": metadata or {}}
        body |= {"text": text} if messages is None else {"messages": messages}
        return self._call("POST", "/v1/memories", json=body)["ids"]

    def search(self, user_id: str, query: str, k: int = 5, exact: bool = True) -> list[dict]:
        body = {"user_id": user_id, "query": query, "k": k, "exact": exact}
        return self._call("POST", "/v1/memories/search", json=body)["results"]

    def entries(self, user_id: str) -> list[dict[str, Any]]:
        """Every entry of ``user_id``, oldest first (all pages)."""
        found: list[dict[str, Any]] = []
        while True:
            params = {"user_id": user_id, "after": found[-1]["id"] if found else -1}
            page = self._call("GET", "/v1/memories", params=params)["entries"]
            if not page:
                return found
            found += page

    def reconstruct(self, entry_id: int, exact: bool = True) -> str:
        path = f"/v1/memories/{entry_id}/reconstruct"
        return self._call("GET", path, params={"exact": str(exact).lower()})["text"]

    def delete(self, entry_id: int) -> None:
        self._call("DELETE", f"/v1/memories/{entry_id}")

    def delete_user(self, user_id: str) -> int:
        return self._call("DELETE", f"/v1/users/{quote(user_id, safe='')}")["deleted"]


class ServiceNotes:
    """The chat's notes kept by a memory service for one user: the terminal and an agent
    on the same service share one memory."""

    def __init__(self, client: Client, user_id: str) -> None:
        self.client, self.user_id = client, user_id

    def __len__(self) -> int:
        return len(self.client.entries(self.user_id))

    def recall(self, query: str, k: int, exact: bool) -> list[Recalled]:
        hits = self.client.search(self.user_id, query, k, exact)
        return [Recalled(h["text"], h["score"], h["id"], h["metadata"], h["exact"]) for h in hits]

    def _exchanges(self) -> dict[int, list[int]]:
        return exchanges({e["id"]: e["metadata"] for e in self.client.entries(self.user_id)})

    def remember(self, message: str) -> None:
        number = max(self._exchanges(), default=0) + 1
        turn = [{"speaker": "user", "text": message}]
        self.client.add(self.user_id, messages=turn, metadata={"source": f"{SOURCE}{number}"})

    def forget(self, everything: bool) -> str:
        if everything:
            self.client.delete_user(self.user_id)
            return "memory emptied"
        return forget_latest(self._exchanges(), self.client.delete)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """``r3mem serve`` in a child process on a free loopback port, for tests and benchmarks:
    started and waited for (``key`` must be valid for ``/v1/health``), stopped on exit."""

    def __init__(self, db: str, key: str, model: str | None = None, *options: str) -> None:
        self.db, self.key, self.model, self.options = db, key, model, options
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout: float = 120.0) -> Server:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "r3mem.cli", "serve", "--db", self.db]
        command += ["--port", str(port), *(["--model", self.model] if self.model else [])]
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        self.process = subprocess.Popen([*command, *self.options], stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"r3mem serve exited {self.process.returncode}: {self.output()}")
            try:
                if httpx.get(f"{self.url}/v1/health", headers=self._auth, timeout=2).is_success:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.kill()
        raise TimeoutError(f"r3mem serve not ready after {timeout:g} s: {self.output()}")

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def kill(self) -> None:
        """kill -9: no chance to finish anything."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        """Interrupt (queued jobs finish); kill after 30 s."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def close(self) -> None:
        self.stop()
        self.log.close()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
