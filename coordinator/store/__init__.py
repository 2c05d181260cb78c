"""The store: where the database is and everything about it that no other concern owns.

Owns the URL rules (`urls`), the embedded PostgreSQL (`embedded`), engines, Optuna's storage and
scratch databases (`engines`), every table of ours on one MetaData (`tables`), their Alembic
migrations (`migrations/`), `db init` (`schema`) and the read-only role (`roles`), and nothing else.
It is the lowest layer: it imports only `coordinator.errors` and third-party libraries.
"""
