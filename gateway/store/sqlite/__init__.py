"""The SQLite backend of the store: every part of gateway/store/parts.py in one WAL file (the default)."""
