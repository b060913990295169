"""Jinja templates for Dockerfiles, shipped in the wheel; the image builder renders them."""
