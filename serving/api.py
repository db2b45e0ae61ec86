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

import hmac
import json
import time

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from serving.vllm_args import server_url
from store.adapters import list_adapters
from store.db import connect
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


class _Allowed:
    """The model names the API accepts, from the registry, cached for a moment."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._names: dict[str, str | None] = {}
        self._at = 0.0

    def _read(self) -> dict[str, str | None]:
        with connect(self.settings.db_path) as db:
            rows = list_adapters(db, include_archived=False)
        base = self.settings.served_base_name
        return {base: None, **{r["name"]: base for r in rows}}

    async def names(self, *, fresh: bool = False) -> dict[str, str | None]:
        """{model name: parent name or None for the base model}."""
        if fresh or time.monotonic() - self._at > REGISTRY_TTL_S:
            self._names = await run_in_threadpool(self._read)
            self._at = time.monotonic()
        return self._names

    def _read_deployments(self) -> dict[str, str]:
        with connect(self.settings.db_path) as db:
            return {name: target or self.settings.served_base_name for name, target in deployment_names(db).items()}

    async def deployments(self) -> dict[str, str]:
        """{deployment name: served model it resolves to}, read at every call: never cached, so a
        promotion or rollback is seen by the very next request."""
        return await run_in_threadpool(self._read_deployments)


def create_api_router(settings: Settings, *, upstream_url: str | None = None,
                      transport: httpx.AsyncBaseTransport | None = None) -> APIRouter:
    """The /v1 routes; `upstream_url` defaults to the configured vLLM server."""
    upstream = (upstream_url or server_url(settings)).rstrip("/")
    allowed = _Allowed(settings)
    router = APIRouter(prefix="/v1", tags=["openai"])

    def client() -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=upstream, timeout=UPSTREAM_TIMEOUT, transport=transport)

    def unavailable(exc: Exception) -> JSONResponse:
        return openai_error(503, f"the model server is not available (not running, or still starting): "
                                 f"{exc.__class__.__name__}", "service_unavailable")

    async def listed_models() -> list[dict] | JSONResponse:
        async with client() as c:
            try:
                response = await c.get("/v1/models")
            except httpx.HTTPError as exc:
                return unavailable(exc)
        if response.status_code != 200:
            return openai_error(502, f"the model server answered {response.status_code}", "upstream_error")
        names = await allowed.names()
        served = response.json().get("data", [])
        max_len = next((m.get("max_model_len") for m in served if m.get("id") == settings.served_base_name), None)
        listed = [
            {"id": m["id"], "object": "model", "created": m.get("created", 0), "owned_by": "tuneloop",
             "parent": names[m["id"]], "max_model_len": m.get("max_model_len") or max_len}
            for m in served if m.get("id") in names
        ]
        # A deployment is listed while the model it points at is listed; `parent` names that model.
        by_id = {m["id"]: m for m in listed}
        for name, target in sorted((await allowed.deployments()).items()):
            if target in by_id and name not in by_id:
                listed.append({**by_id[target], "id": name, "parent": target, "deployment": True})
        return listed

    @router.get("/models")
    async def models(request: Request):
        if (denied := check_key(settings, request.headers.get("authorization"))) is not None:
            return denied
        data = await listed_models()
        return data if isinstance(data, JSONResponse) else {"object": "list", "data": data}

    @router.get("/models/{model_id}")
    async def model(model_id: str, request: Request):
        if (denied := check_key(settings, request.headers.get("authorization"))) is not None:
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
        if (denied := check_key(settings, request.headers.get("authorization"))) is not None:
            return denied
        try:
            body = json.loads(await request.body())
        except ValueError:
            return openai_error(400, "the request body is not valid JSON", "invalid_request_error")
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return openai_error(400, "the request needs a 'model' (the base model's or an adapter's name)",
                                "invalid_request_error", param="model")
        names = await allowed.names()
        resolved: str | None = None
        if body["model"] not in names:
            target = (await allowed.deployments()).get(body["model"])
            if target is None:
                return openai_error(404, f"The model `{body['model']}` does not exist or is archived; "
                                         "GET /v1/models lists the models", "NotFoundError", param="model")
            if target not in names:  # perhaps registered a moment ago: re-read before refusing
                names = await allowed.names(fresh=True)
            if target not in names:
                return openai_error(404, f"Deployment `{body['model']}` points to `{target}`, which is archived "
                                         "or no longer registered", "NotFoundError", param="model")
            resolved = body["model"] = target
        # Which model answered a deployment name (the body's "model" field names it too).
        extra_headers = {"X-Tuneloop-Model": resolved} if resolved else {}
        c = client()
        try:
            upstream_response = await c.send(c.build_request("POST", "/v1/chat/completions", json=body),
                                             stream=True)
        except httpx.HTTPError as exc:
            await c.aclose()
            return unavailable(exc)

        async def close() -> None:
            await upstream_response.aclose()
            await c.aclose()

        content_type = upstream_response.headers.get("content-type", "application/json")
        if upstream_response.status_code == 200 and body.get("stream"):
            return StreamingResponse(upstream_response.aiter_raw(), media_type=content_type,
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                                              **extra_headers},
                                     background=BackgroundTask(close))
        content = await upstream_response.aread()
        await close()
        return Response(content, status_code=upstream_response.status_code, media_type=content_type,
                        headers=extra_headers)

    return router


def create_api(settings: Settings, **kwargs) -> FastAPI:
    """A FastAPI app with the /v1 routes; the web app mounts Gradio on it (gr.mount_gradio_app)."""
    app = FastAPI(title="tuneloop", version="1", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(create_api_router(settings, **kwargs))
    return app
