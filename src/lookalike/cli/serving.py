"""`lookalike serve`: the web page and the HTTP API."""

from __future__ import annotations

import click

from .common import fail, index_option, max_megapixels_option, run


@click.command()
@index_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.option(
    "--token",
    envvar="LOOKALIKE_TOKEN",
    help="Require 'Authorization: Bearer T' (or ?token=T) on every /api call; also from $LOOKALIKE_TOKEN.",
)
@max_megapixels_option
@click.option(
    "--max-connections",
    type=click.IntRange(1),
    default=100,
    show_default=True,
    help="Connections served at once; more are answered 503 (keeps a small server alive under a flood).",
)
def serve(
    index_dir: str, host: str, port: int, token: str | None, max_megapixels: float | None, max_connections: int
) -> None:
    """Serve the web page and the HTTP API for an index (http://HOST:PORT/, API docs at /docs)."""
    import importlib.util

    if any(importlib.util.find_spec(name) is None for name in ("fastapi", "uvicorn")) or not (
        importlib.util.find_spec("python_multipart") or importlib.util.find_spec("multipart")
    ):
        fail("the web server needs FastAPI and uvicorn: pip install 'lookalike[server]'")
    import uvicorn

    from ..errors import InvalidArgumentError
    from ..server import create_app, hosts_for_bind

    bare_host = host.strip("[]")
    try:
        hosts_for_bind(bare_host, token or None)  # the same check create_app makes, before anything loads
    except InvalidArgumentError:
        fail(
            f"--host {host} lets other machines reach this collection: give --token T (or set LOOKALIKE_TOKEN), "
            "or serve on 127.0.0.1"
        )
    app = run(lambda: create_app(index_dir, token=token or None, host=bare_host, max_megapixels=max_megapixels))
    click.echo(f"loading the index and the embedder from {index_dir} ...", err=True)
    run(app.state.service.warm)
    shown = f"[{bare_host}]" if ":" in bare_host else bare_host
    suffix = "?token=<your token>" if token else ""
    click.echo(f"serving {index_dir} at http://{shown}:{port}/{suffix} (API docs at /docs); Ctrl-C stops", err=True)
    # Idle keep-alive connections are closed after 5 s; an upload that stalls 10 s is answered 408 (see uploads.py).
    uvicorn.run(
        app, host=bare_host, port=port, log_level="warning", limit_concurrency=max_connections, timeout_keep_alive=5
    )
