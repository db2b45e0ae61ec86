"""The OpenAI-compatible API the app serves to other tools: `/v1/models` and `/v1/chat/completions`.

A thin authenticated proxy to the vLLM server on loopback. Only two routes exist, so vLLM's admin
routes (adapter load/unload) and everything else it serves stay unreachable; only the base model
and non-archived registered adapters are listed and accepted, plus deployment names (stable names such as
`support`, see serving/deployments.py), which resolve to their current adapter at every request so a
promotion or rollback reaches the next request with no restart; every request needs
`Authorization: Bearer <TUNELOOP_API_KEY>`, and with no key set the API refuses everything.

    TUNELOOP_API_KEY=secret tuneloop serve
    curl -H 'Authorization: Bearer secret' http://127.0.0.1:7860/v1/models

The web app mounts its Gradio UI on the same FastAPI app (`create_api(settings)`), or includes
`create_api_router(settings)` in its own.
"""

from __future__ import annotations

import functools
import hmac
import json
import ssl
import time
from contextlib import asynccontextmanager

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from serving.completion_stream import new_completion_id
from serving.fleet import Rotation
from serving.generation import defaults_for, fill_request
from serving.traffic_api import CHAT_MAX_BYTES, Traffic, feedback_routes, read_body
from serving.vllm_args import server_url
from store.adapters import list_adapters
from store.deployments import deployment_names
from store.settings import Settings

REGISTRY_TTL_S = 2.0
UPSTREAM_TIMEOUT = httpx.Timeout(600.0, connect=5.0)


def openai_error(status: int, message: str, type_: str, *, param: str | None = None,
                 headers: dict | None = None) -> JSONResponse:
    """An error shaped like OpenAI's, which the openai client turns into the matching exception."""
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": status}},
                        status_code=status, headers=headers)


def check_key(settings: Settings, authorization: str | None) -> JSONResponse | None:
    """None if the request carries the configured key; else the 401 to answer with."""
    if not settings.api_key:
        return openai_error(401, "the tuneloop API is off because no API key is set: set TUNELOOP_API_KEY "
                                 "(e.g. in .env) and restart `tuneloop serve`", "authentication_error")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
        return openai_error(401, "invalid or missing API key: send 'Authorization: Bearer <TUNELOOP_API_KEY>'",
                            "authentication_error", headers={"WWW-Authenticate": "Bearer"})
    return None


@functools.cache
def upstream_tls() -> ssl.SSLContext:
    """One TLS context for every upstream client. httpx builds a new one (loading the CA bundle) for each
    client it makes, and the API makes a client per request: that was about 80% of the API's CPU with an
    instant upstream (profiled with py-spy; docs/benchmarks.md). A context may be shared by connections."""
    return httpx.create_ssl_context()


class _Allowed:
    """The model names the API accepts, read through the router's shared connection (`read`, Traffic.read)."""

    def __init__(self, settings: Settings, read):
        self.settings = settings
        self.read = read
        self._names: dict[str, str | None] = {}
        self._at = 0.0

    def names(self, *, fresh: bool = False) -> dict[str, str | None]:
        """{model name: parent name or None for the base model}: registered adapters, cached for a moment."""
        if fresh or time.monotonic() - self._at > REGISTRY_TTL_S:
            rows = self.read(list_adapters, include_archived=False)
            base = self.settings.served_base_name
            self._names = {base: None, **{r["name"]: base for r in rows}}
            self._at = time.monotonic()
        return self._names

    def deployments(self) -> dict[str, str]:
        """{deployment name: served model it resolves to}, read at every call: never cached, so a
        promotion or rollback is seen by the very next request."""
        return {name: target or self.settings.served_base_name
                for name, target in self.read(deployment_names).items()}


def create_api_router(settings: Settings, *, upstream_url: str | None = None, upstream_urls: list[str] | None = None,
                      transport: httpx.AsyncBaseTransport | None = None, traffic: Traffic | None = None) -> APIRouter:
    """The /v1 routes; `upstream_url` defaults to the configured vLLM server. With several `upstream_urls`
    (vLLM replicas without a router, serving.fleet) a request none has started goes to the next one.
    `traffic` (serving.traffic_api: API keys, capture, canary, /v1/feedback) is `router.traffic`; close it
    at shutdown to flush the capture queue."""
    rotation = Rotation([u.rstrip("/") for u in upstream_urls or [upstream_url or server_url(settings)]])
    router = APIRouter(prefix="/v1", tags=["openai"])
    traffic = router.traffic = traffic or Traffic(settings)
    allowed = _Allowed(settings, traffic.read)
    feedback_routes(router, traffic)

    def client(upstream: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=upstream, timeout=UPSTREAM_TIMEOUT, transport=transport,
                                 verify=upstream_tls())

    async def send(method: str, path: str, **kwargs) -> tuple[httpx.AsyncClient, httpx.Response]:
        """Send to the first upstream that takes the request (streamed: returns at the headers). An error
        before the headers means no answer has started, so the next replica may take it; the last error
        is raised when none does. A timeout is not retried: that replica may still be working on it."""
        error: Exception | None = None
        for upstream in rotation.order():
            c = client(upstream)
            try:
                response = await c.send(c.build_request(method, path, **kwargs), stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                await c.aclose()
                rotation.down(upstream)
                error = exc
                continue
            except httpx.HTTPError:
                await c.aclose()
                raise
            rotation.up(upstream)
            return c, response
        raise error or httpx.ConnectError("no upstream configured")

    def unavailable(exc: Exception) -> JSONResponse:
        return openai_error(503, f"the model server is not available (not running, or still starting): "
                                 f"{exc.__class__.__name__}", "service_unavailable")

    async def listed_models() -> list[dict] | JSONResponse:
        try:
            c, response = await send("GET", "/v1/models")
        except httpx.HTTPError as exc:
            return unavailable(exc)
        await response.aread()
        await c.aclose()
        if response.status_code != 200:
            return openai_error(502, f"the model server answered {response.status_code}", "upstream_error")
        names = allowed.names()
        served = response.json().get("data", [])
        max_len = next((m.get("max_model_len") for m in served if m.get("id") == settings.served_base_name), None)
        listed = [
            {"id": m["id"], "object": "model", "created": m.get("created", 0), "owned_by": "tuneloop",
             "parent": names[m["id"]], "max_model_len": m.get("max_model_len") or max_len}
            for m in served if m.get("id") in names
        ]
        # A deployment is listed while the model it points at is listed; `parent` names that model.
        by_id = {m["id"]: m for m in listed}
        for name, target in sorted(allowed.deployments().items()):
            if target in by_id and name not in by_id:
                listed.append({**by_id[target], "id": name, "parent": target, "deployment": True})
        return listed

    @router.get("/models")
    async def models(request: Request):
        if (denied := traffic.check_key(request)) is not None:
            return denied
        data = await listed_models()
        return data if isinstance(data, JSONResponse) else {"object": "list", "data": data}

    @router.get("/models/{model_id}")
    async def model(model_id: str, request: Request):
        if (denied := traffic.check_key(request)) is not None:
            return denied
        data = await listed_models()
        if isinstance(data, JSONResponse):
            return data
        for m in data:
            if m["id"] == model_id:
                return m
        return openai_error(404, f"The model `{model_id}` does not exist or is not loaded.", "NotFoundError",
                            param="model")

    @router.post("/chat/completions")
    async def chat_completions(request: Request):
        if (denied := traffic.check_key(request)) is not None:
            return denied
        raw, problem = await read_body(request, CHAT_MAX_BYTES, "chat request")
        if problem is not None:
            return problem
        try:
            body = json.loads(raw)
        except ValueError:
            return openai_error(400, "the request body is not valid JSON", "invalid_request_error")
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return openai_error(400, "the request needs a 'model' (the base model's or an adapter's name)",
                                "invalid_request_error", param="model")
        names = allowed.names()
        resolved: str | None = None
        if body["model"] not in names:
            target = allowed.deployments().get(body["model"])
            if target is None:
                return openai_error(404, f"The model `{body['model']}` does not exist or is archived; "
                                         "GET /v1/models lists the models", "NotFoundError", param="model")
            if target not in names:  # perhaps registered a moment ago: re-read before refusing
                names = allowed.names(fresh=True)
            if target not in names:
                return openai_error(404, f"Deployment `{body['model']}` points to `{target}`, which is archived "
                                         "or no longer registered", "NotFoundError", param="model")
            resolved = target
        asked, deployment, arm = body["model"], (body["model"] if resolved else None), None
        completion_id = new_completion_id()
        if deployment:  # a canary takes its share of the deployment's requests (sticky per `user`)
            routed, arm = traffic.route(deployment, resolved, body, completion_id)
            if routed not in names:  # the canary's adapter was archived meanwhile
                routed, arm = resolved, "main"
            resolved = body["model"] = routed
        # What the client left unset comes from the model's (and deployment's) generation defaults.
        body = fill_request(body, traffic.read(defaults_for, body["model"], deployment=deployment))
        # Which model answered a deployment name (the body's "model" field names it too).
        extra_headers = {"X-Tuneloop-Model": resolved} if resolved else {}
        response = await traffic.forward(request, body, asked=asked, deployment=deployment, arm=arm,
                                         completion_id=completion_id, send=send, unavailable=unavailable,
                                         headers=extra_headers)
        if response.status_code == 404 and names.get(body["model"]) is not None and settings.adapter_store:
            # A registered adapter the fleet does not know: its replicas load adapters from the store on first
            # use, so vLLM's bare "not found" means this replica cannot read the store (or the version in it).
            return openai_error(404, f"adapter `{body['model']}` is registered, but the model server could not "
                                     f"load it: every replica must read the adapter store {settings.adapter_store} "
                                     "(its VLLM_LORA_RESOLVER_CACHE_DIR) and serve the base model the adapter was "
                                     "trained on (`tuneloop replicas` shows what each has loaded)",
                                "adapter_not_loadable", param="model")
        return response

    return router


def create_api(settings: Settings, **kwargs) -> FastAPI:
    """A FastAPI app with the /v1 routes; the web app mounts Gradio on it (gr.mount_gradio_app)."""
    router = create_api_router(settings, **kwargs)

    @asynccontextmanager
    async def lifespan(_app):
        yield
        # The capture queue is flushed before the process ends (Ctrl-C, SIGTERM: uvicorn's shutdown).
        await run_in_threadpool(router.traffic.close)

    app = FastAPI(title="tuneloop", version="1", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.include_router(router)
    app.state.traffic = router.traffic
    return app
