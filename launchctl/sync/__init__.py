"""Sync with a W&B-compatible server: the wire client, the outbox, the remote-queue bridge."""
