"""``r3mem serve``: the memory as a service for agents (mem0's add / search / get / delete per
user), on SQLite or PostgreSQL.

- :mod:`.store`: the database behind one small interface (schema, migrations, keys, entries).
- :mod:`.engine`: the model's work on one thread, requests batched, writes in arrival order.
- :mod:`.app`: the HTTP API (FastAPI): authentication, limits, errors.
- :mod:`.client`: a client of that API, and the chat's memory through it.
"""
