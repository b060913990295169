"""`launchctl ui`: the web view (issue 16), served from this machine's store."""

from __future__ import annotations

import typer


def ui(
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="Address to listen on; anything but loopback needs --allow-remote.",
    ),
    port: int = typer.Option(8765, "--port", help="Port to listen on (0: any free port)."),
    open_: bool = typer.Option(False, "--open", help="Open the page in a browser."),
    allow_remote: bool = typer.Option(
        False,
        "--allow-remote",
        help="Allow a non-loopback --host (every machine that reaches it can try the token).",
    ),
) -> None:
    """Serve the web view: queues, runs, logs, sweeps.

    Prints the URL with this start's token (needed for every page: it acts as you);
    opening it sets a cookie for the browser. Needs the ui extra:
    pip install 'launchctl[ui]'.

    \b
    Example:
      launchctl ui --port 8765 --open
    """
    from launchctl.ui.server import Server, open_browser

    server = Server(host, port, allow_remote=allow_remote)
    print(f"launchctl ui: {server.url}", flush=True)
    if open_:
        open_browser(server.url)
    server.serve()
