"""DBBench: answer questions and modify tables with SQL on a per-episode SQLite database."""
