"""Alembic migrations of the job database (run them with ``upgrade_database(url)``)."""
