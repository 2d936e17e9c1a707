"""Storage: one SQLAlchemy Core schema, two engines (SQLite embedded, PostgreSQL production)."""
