"""Tests of issue 13: sync with a W&B-compatible server."""
