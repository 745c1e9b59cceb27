"""Durable execution engines for agent runs (DBOS first)."""
