"""Durable state in SQLite: API clients and the record of every signature."""
