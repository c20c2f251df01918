"""The explorer's web server: FastAPI routes over ``Explorer`` and the static page (package data).

Routes (all behind ``security.Guard``): ``GET /`` the page, ``GET /static/{name}`` its script, style and
plotly.js (a fixed list, never a path from the request), ``GET /api/info``, ``POST /api/run | lens |
attention | dla | sae | neurons | steer``, ``GET /api/heads | feature | neuron | circuit/{name}``.
Model work runs in worker threads (plain ``def`` routes), one call at a time (the Explorer's lock).
Bad input answers 400 ``{"error": "..."}``; the server keeps running.
"""
from __future__ import annotations

import socket
from functools import lru_cache
from importlib import resources
from typing import Any, Iterable, Optional, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException

from uncover.errors import UncoverError
from uncover.explorer.security import LOOPBACK_NAMES, Guard, is_loopback, new_token
from uncover.explorer.session import Explorer

_STATIC = {"app.js": "text/javascript", "style.css": "text/css", "index.html": "text/html"}


@lru_cache(maxsize=None)
def _static_bytes(name: str) -> bytes:
    if name == "plotly.min.js":
        return resources.files("plotly").joinpath("package_data", "plotly.min.js").read_bytes()
    return resources.files("uncover.explorer").joinpath("static", name).read_bytes()


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PromptIn(_In):
    prompt: str
    k: int = 10


class LensIn(_In):
    prompt: str
    target: Optional[Union[int, str]] = None
    k: int = 5


class LayerIn(_In):
    prompt: str
    layer: int
    k: int = 5


class DlaIn(_In):
    prompt: str
    token: Optional[Union[int, str]] = None
    pos: int = -1


class SaeIn(_In):
    prompt: str
    sae: str
    k: int = 5


class SteerIn(_In):
    prompt: str
    source: str
    coeff: float
    layer: Optional[int] = None
    latent: Optional[int] = None
    max_new_tokens: int = 20
    k: int = 10


def create_app(explorer: Explorer, token: str, allowed_hosts: Iterable[str] = LOOPBACK_NAMES) -> Guard:
    """The ASGI app: the explorer's routes wrapped in the token / Host / size guard."""
    app = FastAPI(title="uncover explorer", docs_url=None, redoc_url=None, openapi_url=None)
    ex = explorer

    @app.exception_handler(UncoverError)
    async def bad_input(request: Request, e: UncoverError) -> JSONResponse:
        return JSONResponse({"error": str(e)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, e: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in err['loc'][1:]) or 'body'}: {err['msg']}" for err in e.errors()]
        return JSONResponse({"error": "bad request: " + "; ".join(parts)}, status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(e.detail)}, status_code=e.status_code)

    @app.exception_handler(Exception)
    async def crashed(request: Request, e: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error: {type(e).__name__}: {e}"}, status_code=500)

    @app.get("/")
    def index() -> Response:
        return Response(_static_bytes("index.html"), media_type="text/html")

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name == "plotly.min.js":  # 4 MB that never change within one plotly version: let the browser keep it
            return Response(_static_bytes(name), media_type="text/javascript",
                            headers={"cache-control": "private, max-age=86400"})
        if name not in _STATIC or name == "index.html":
            raise HTTPException(404, f"no static file {name!r}")
        return Response(_static_bytes(name), media_type=_STATIC[name])

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return ex.info()

    @app.post("/api/run")
    def run(body: PromptIn) -> dict[str, Any]:
        return ex.run(body.prompt, body.k)

    @app.post("/api/lens")
    def lens(body: LensIn) -> dict[str, Any]:
        return ex.lens(body.prompt, body.target, body.k)

    @app.post("/api/attention")
    def attention(body: LayerIn) -> dict[str, Any]:
        return ex.attention(body.prompt, body.layer)

    @app.get("/api/heads")
    def heads() -> dict[str, Any]:
        return ex.head_scores()

    @app.post("/api/dla")
    def dla(body: DlaIn) -> dict[str, Any]:
        return ex.dla(body.prompt, body.token, body.pos)

    @app.post("/api/sae")
    def sae(body: SaeIn) -> dict[str, Any]:
        return ex.sae_features(body.prompt, body.sae, body.k)

    @app.post("/api/neurons")
    def neurons(body: LayerIn) -> dict[str, Any]:
        return ex.neuron_acts(body.prompt, body.layer, body.k)

    @app.get("/api/feature")
    def feature(sae: str, latent: int) -> dict[str, Any]:
        return ex.feature(sae, latent)

    @app.get("/api/neuron")
    def neuron(layer: int, neuron: int) -> dict[str, Any]:
        return ex.neuron(layer, neuron)

    @app.post("/api/steer")
    def steer(body: SteerIn) -> dict[str, Any]:
        return ex.steer(body.prompt, body.source, body.coeff, body.layer, body.latent, body.max_new_tokens, body.k)

    @app.get("/api/circuit/{name}")
    def circuit(name: str) -> dict[str, Any]:
        if name not in ex.circuits:
            raise HTTPException(404, f"no circuit named {name!r}; loaded: {sorted(ex.circuits) or 'none'}")
        return ex.circuits[name]

    return Guard(app, token, allowed_hosts, ex.limits.max_body_bytes)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UncoverError(f"cannot listen on {host}:{port} ({e.strerror}); pick another --port (0 = any free port)")
    sock.listen(64)
    return sock


def url(host: str, port: int, token: str) -> str:
    """The address to open (IPv6 hosts in brackets)."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/?token={token}"


def make_server(explorer: Explorer, host: str = "127.0.0.1", port: int = 8765, allow_hosts: Iterable[str] = (),
                token: str | None = None):
    """(uvicorn.Server, its listening socket, the URL to open); run with ``server.run(sockets=[sock])``."""
    import uvicorn

    token = token or new_token()
    allowed = set(LOOPBACK_NAMES) | set(allow_hosts) | {host}
    sock = bind(host, port)
    config = uvicorn.Config(create_app(explorer, token, allowed), log_level="warning", access_log=False)
    return uvicorn.Server(config), sock, url(host, sock.getsockname()[1], token)


def serve(explorer: Explorer, host: str = "127.0.0.1", port: int = 8765, allow_hosts: Iterable[str] = (),
          echo=print) -> None:
    """Run the explorer until interrupted. Binds to loopback unless ``host`` says otherwise."""
    server, sock, address = make_server(explorer, host, port, allow_hosts)
    if not is_loopback(host):
        echo(f"warning: listening on {host}, reachable from other machines; anyone with the URL can use the model. "
             "Requests must name this host or one given with --allow-host.")
    echo(f"uncover explorer for {explorer.model.name}: open {address}")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
