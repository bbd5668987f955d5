"""The HTTP API of ``r3mem serve`` (FastAPI; its OpenAPI page at ``/docs``).

Every ``/v1`` request carries ``Authorization: Bearer KEY``; the key names a tenant, and every
query is scoped to it, so a tenant's ids and users are invisible to the others (404, as for
an id that does not exist). Bodies over ``max_request_bytes`` get 413 before they are read
whole; invalid fields 422 with one line per field; anything unexpected 500 with no detail
(the traceback goes to the server's log, never to the client, and keys are never logged).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from importlib.metadata import version
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, StringConstraints, model_validator

from .engine import LEVEL, BadInput, Engine, NotFound
from .store import CorruptEntry, Store

log = logging.getLogger(__name__)
MAX_REQUEST_BYTES = 1_000_000
MAX_TEXT = 200_000  # characters of one text (a few thousand segments)
MAX_QUERY = 4_000
UserId = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
]
MAX_ID = 2**63 - 1  # the databases' integer ids
EntryId = Annotated[int, Path(ge=0, le=MAX_ID)]
Metadata = dict[Annotated[str, StringConstraints(max_length=64)], str | int | float | bool | None]


class Message(BaseModel):
    """One chat message, in mem0's shape (role, content) or ours (speaker, text)."""

    role: str | None = Field(None, min_length=1, max_length=64)
    speaker: str | None = Field(None, min_length=1, max_length=64)
    content: str | None = Field(None, min_length=1, max_length=MAX_TEXT)
    text: str | None = Field(None, min_length=1, max_length=MAX_TEXT)
    time: str | None = Field(None, max_length=64)

    @model_validator(mode="after")
    def _one_of_each(self) -> Message:
        if (self.role is None) == (self.speaker is None):
            raise ValueError("give one of role or speaker")
        if (self.content is None) == (self.text is None):
            raise ValueError("give one of content or text")
        return self

    def as_turn(self) -> dict[str, str]:
        turn = {"speaker": self.speaker or self.role, "text": self.text or self.content}
        return turn | ({"time": self.time} if self.time else {})


class AddRequest(BaseModel):
    user_id: UserId
    text: str | None = Field(None, min_length=1, max_length=MAX_TEXT)
    messages: list[Message] | None = Field(None, min_length=1, max_length=1_000)
    metadata: Metadata = Field(default_factory=dict, max_length=32)

    @model_validator(mode="after")
    def _text_or_messages(self) -> AddRequest:
        if (self.text is None) == (self.messages is None):
            raise ValueError("give one of text or messages")
        return self


class AddResponse(BaseModel):
    ids: list[int]


class SearchRequest(BaseModel):
    user_id: UserId
    query: str = Field(min_length=1, max_length=MAX_QUERY)
    k: int = Field(5, ge=1, le=100)
    exact: bool = True


class Hit(BaseModel):
    id: int
    text: str
    score: float
    level: str
    exact: bool  # False: decoded greedily (steered by its entities and keywords), may differ
    metadata: dict[str, Any]


class SearchResponse(BaseModel):
    results: list[Hit]


class EntryInfo(BaseModel):
    id: int
    level: str
    created_at: str
    tokens: int
    metadata: dict[str, Any]


class EntriesResponse(BaseModel):
    entries: list[EntryInfo]


class Reconstruction(BaseModel):
    id: int
    text: str
    exact: bool


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat()


class BodyLimit:
    """413 for a body over ``limit`` bytes: at once from Content-Length, else as it streams
    (raised as an HTTPException, which FastAPI's body parsing passes through)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            response = JSONResponse({"detail": self._too_large}, status_code=413)
            return await response(scope, receive, send)
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, self._too_large)
            return message

        await self.app(scope, counted, send)

    @property
    def _too_large(self) -> str:
        return f"request body over {self.limit} bytes"


_bearer = HTTPBearer(auto_error=False)
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _tenant(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The tenant whose key the request carries; 401 without a valid one."""
    if credentials is None:
        raise HTTPException(401, "missing Authorization: Bearer KEY", _CHALLENGE)
    found = request.app.state.store.tenant_of(credentials.credentials)
    if found is None:
        raise HTTPException(401, "invalid API key", _CHALLENGE)
    return found


Tenant = Annotated[str, Depends(_tenant)]


def create_app(engine: Engine, store: Store, max_request_bytes: int = MAX_REQUEST_BYTES) -> FastAPI:
    """The API over ``engine`` and ``store``."""
    app = FastAPI(title="r3mem", version=version("r3mem"), description=__doc__)
    app.state.store = store

    async def run(kind: str, tenant: str, *args: Any) -> Any:
        return await asyncio.wrap_future(engine.submit(kind, tenant, *args))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        lines = []
        for e in error.errors():
            where = ".".join(str(p) for p in e["loc"]).removeprefix("body.")
            what = e["msg"].removeprefix("Value error, ")
            if e["type"] == "json_invalid":
                where, what = "body", f"invalid JSON ({e.get('ctx', {}).get('error', '')})"
            lines.append(f"{where}: {what}")
        return JSONResponse({"detail": "; ".join(lines)}, status_code=422)

    @app.exception_handler(BadInput)
    async def bad_input(request: Request, error: BadInput) -> JSONResponse:
        return JSONResponse({"detail": " ".join(str(error).split())}, status_code=422)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, error: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=404)

    @app.exception_handler(CorruptEntry)
    async def corrupt(request: Request, error: CorruptEntry) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=500)

    @app.exception_handler(Exception)
    async def failed(request: Request, error: Exception) -> JSONResponse:
        # Starlette then re-raises it to the server, which logs the traceback (not the client).
        return JSONResponse({"detail": "internal error"}, status_code=500)

    @app.get("/v1/health")
    def health(tenant: Tenant) -> dict[str, Any]:
        store.query("SELECT 1")
        return {"status": "ok", "store": store.dialect, "model": engine.fingerprint[:12]}

    @app.post("/v1/memories")
    async def add(request: AddRequest, tenant: Tenant) -> AddResponse:
        content = request.text
        if request.messages is not None:
            content = [message.as_turn() for message in request.messages]
        ids = await run("add", tenant, content, request.user_id, dict(request.metadata))
        return AddResponse(ids=ids)

    @app.post("/v1/memories/search")
    async def search(request: SearchRequest, tenant: Tenant) -> SearchResponse:
        found = await run(
            "search", tenant, request.user_id, request.query, request.k, request.exact
        )
        hits = [
            Hit(
                id=h["id"],
                text=h["text"],
                score=h["score"],
                level=LEVEL,
                exact=h["exact"],
                metadata=h["meta"],
            )
            for h in found
        ]
        return SearchResponse(results=hits)

    @app.get("/v1/memories")
    def entries(
        tenant: Tenant,
        user_id: Annotated[UserId, Query()],
        after: Annotated[int, Query(ge=-1, le=MAX_ID)] = -1,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1_000,
    ) -> EntriesResponse:
        listed = store.entries(tenant, user_id, after, limit)
        return EntriesResponse(
            entries=[
                EntryInfo(
                    id=e.id,
                    level=e.level,
                    created_at=_iso(e.created_at),
                    tokens=e.tokens,
                    metadata=e.record["meta"],
                )
                for e in listed
            ]
        )

    @app.get("/v1/memories/{entry_id}/reconstruct")
    async def reconstruct(entry_id: EntryId, tenant: Tenant, exact: bool = True) -> Reconstruction:
        text = await run("reconstruct", tenant, entry_id, exact)
        return Reconstruction(id=entry_id, text=text, exact=exact)

    @app.delete("/v1/memories/{entry_id}")
    async def delete_entry(entry_id: EntryId, tenant: Tenant) -> dict[str, Any]:
        await run("delete_entry", tenant, entry_id)
        return {"deleted": entry_id}

    @app.delete("/v1/users/{user_id:path}")
    async def delete_user(user_id: Annotated[UserId, Path()], tenant: Tenant) -> dict[str, Any]:
        count = await run("delete_user", tenant, user_id)
        return {"user_id": user_id, "deleted": count}

    app.add_middleware(BodyLimit, limit=max_request_bytes)
    return app


def serve(
    db: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    model: str | None = None,
    max_batch: int = 16,
    max_request_bytes: int = MAX_REQUEST_BYTES,
    entry_tokens: int | None = None,
    part_tokens: int | None = None,
) -> None:
    """Open the store and the model, then answer until interrupted; queued jobs finish
    before the process ends. ``entry_tokens``: the most tokens an entry of a text added from
    now on holds (:func:`r3mem.segment.entry_length`), ``part_tokens`` the most in one part
    of it (:func:`r3mem.segment.part_length`); entries stored before keep theirs."""
    import uvicorn

    from ..memory import Memory

    store = Store(db)
    engine = Engine(
        Memory.load(model, entry_tokens=entry_tokens, part_tokens=part_tokens),
        store,
        max_batch=max_batch,
    )
    try:
        log.warning("r3mem serve: %r, model %s, docs at /docs", store, engine.fingerprint[:12])
        uvicorn.run(create_app(engine, store, max_request_bytes), host=host, port=port)
    finally:
        engine.stop()
        store.close()
