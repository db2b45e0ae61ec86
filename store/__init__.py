"""Persistent state of tuneloop: settings, the SQLite database and one function per query."""
