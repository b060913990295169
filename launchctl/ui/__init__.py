"""The web view (issue 16): `launchctl ui` and `agent --ui`, pages over the core the CLI
calls, as the user who started the server."""
