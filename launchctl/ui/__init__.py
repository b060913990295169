"""The web view (issue 16): `launchctl ui` and `agent --ui`, a page over the same core the CLI calls."""
