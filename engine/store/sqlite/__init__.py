"""The SQLite store: one writer thread with group commit, schema and migrations, FTS5 search."""
