"""Serving from several vLLM replicas: their command, their health, and which one a request goes to.

With TUNELOOP_REPLICA_URLS (and optionally TUNELOOP_ROUTER_URL) set, `tuneloop serve` starts no vLLM
of its own and loads nothing: every replica runs the stock OpenAI server with vLLM's filesystem LoRA
resolver over the adapter store (store/adapter_store.py), so an adapter published there is loaded
by each replica on the first request that names it. /v1 goes through the router when there is one,
else through the replicas in turn, trying the next one for a request none has started
(`failover_order`, used by serving/api.py). `fleet_health` is the health view: per replica, up or
not, the adapters it has loaded, and its running/waiting requests from vLLM's /metrics.

    tuneloop replicas                      # the health view
    tuneloop replicas command --port 8001  # the command that starts one replica
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from urllib.parse import urlparse

import httpx

from serving.vllm_args import VllmCommand, build_vllm_command, cpu_has_native_bf16, resolve_target, server_url
from store.settings import Settings

PROBE_TIMEOUT_S = 3.0
# A replica that refused a connection is tried last for this long (it is still tried when all are down).
DOWN_FOR_S = 10.0


def replica_urls(settings: Settings) -> list[str]:
    """The configured replicas, checked; ValueError naming the setting for a malformed one."""
    urls = []
    for item in filter(None, (u.strip() for u in settings.replica_urls.split(","))):
        parsed = urlparse(item)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"replica_urls: {item!r} is not an http(s) URL such as http://gpu1:8000")
        urls.append(item.rstrip("/").removesuffix("/v1"))
    return urls


def is_fleet(settings: Settings) -> bool:
    return bool(settings.replica_urls.strip() or settings.router_url.strip())


def upstreams(settings: Settings) -> list[str]:
    """Where /v1 sends requests: the router alone, else every replica (tried in turn)."""
    if settings.router_url.strip():
        return [settings.router_url.strip().rstrip("/").removesuffix("/v1")]
    return replica_urls(settings)


def model_server_url(settings: Settings, *, first_up: bool = False) -> str:
    """Where the app's own requests go (chat, evaluations, adapter statuses; /v1 has its own failover): the one
    vLLM server (local, or TUNELOOP_VLLM_URL), else the fleet's router, else its first replica, or with
    `first_up` its first replica that answers now."""
    if not is_fleet(settings):
        return server_url(settings)
    urls = upstreams(settings)
    if first_up and not settings.router_url.strip():
        return next((u for u in urls if probe_replica(u, timeout=1.0).up), urls[0])
    return urls[0]


def adapter_manager(settings: Settings):
    """An AdapterManager for the configured server: a fleet answers through FleetAdmin (models from the replicas
    and the store; nothing is loaded by a call), one server through its own admin routes."""
    from serving.adapters import AdapterManager

    admin = FleetAdmin(settings) if is_fleet(settings) else None
    return AdapterManager(settings, model_server_url(settings), admin=admin)


def replica_command(settings: Settings, *, port: int, host: str = "127.0.0.1", store: str | None = None,
                    python: str | None = None) -> VllmCommand:
    """The stock vLLM server as one replica: tuneloop's arguments plus the filesystem LoRA resolver.

    Resolving adapters at request time needs VLLM_ALLOW_RUNTIME_LORA_UPDATING, which also opens
    vLLM's unauthenticated load/unload routes: keep `host` off the public network (docs/scaling-out.md)."""
    target = resolve_target(settings)
    base = build_vllm_command(settings, target=target, port=port, python=python,
                              native_bf16=target != "cpu" or cpu_has_native_bf16())
    argv = list(base.argv)
    argv[argv.index("--host") + 1] = host
    env = {**base.env, "VLLM_PLUGINS": "lora_filesystem_resolver",
           "VLLM_LORA_RESOLVER_CACHE_DIR": store or settings.adapter_store}
    return VllmCommand(argv=argv, env=env, port=port)


# ---------------------------------------------------------------- which replica (pure)

def failover_order(urls: list[str], *, start: int, down_until: dict[str, float], now: float) -> list[str]:
    """The replicas to try for one request: round-robin from `start`, those seen down recently last."""
    if not urls:
        return []
    turn = [urls[(start + i) % len(urls)] for i in range(len(urls))]
    return [u for u in turn if down_until.get(u, 0) <= now] + [u for u in turn if down_until.get(u, 0) > now]


class Rotation:
    """The round-robin turn and the replicas seen down, shared by the requests of one API."""

    def __init__(self, urls: list[str], *, clock=time.monotonic):
        self.urls = urls
        self._next = 0
        self._down: dict[str, float] = {}
        self._clock = clock

    def order(self) -> list[str]:
        order = failover_order(self.urls, start=self._next, down_until=self._down, now=self._clock())
        self._next = (self._next + 1) % max(len(self.urls), 1)
        return order

    def down(self, url: str) -> None:
        self._down[url] = self._clock() + DOWN_FOR_S

    def up(self, url: str) -> None:
        self._down.pop(url, None)


# ---------------------------------------------------------------- health

@dataclass
class ReplicaHealth:
    """One replica (or the router) as the health view shows it."""

    url: str
    role: str  # replica | router
    up: bool
    models: list[str] = field(default_factory=list)
    """Models it has loaded: the base model and the adapters it has resolved so far."""
    running: int | None = None
    waiting: int | None = None
    error: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def parse_vllm_metrics(text: str) -> tuple[int | None, int | None]:
    """(running, waiting) requests from vLLM's Prometheus text (summed over its engines); None if absent."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in ("vllm:num_requests_running", "vllm:num_requests_waiting"):
            try:
                found[name] = found.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
            except ValueError:
                continue
    get = lambda n: int(found[n]) if n in found else None  # noqa: E731
    return get("vllm:num_requests_running"), get("vllm:num_requests_waiting")


def probe_replica(url: str, *, role: str = "replica", timeout: float = PROBE_TIMEOUT_S,
                  transport: httpx.BaseTransport | None = None) -> ReplicaHealth:
    """Ask one server for /health, /v1/models and /metrics; a server that does not answer is down."""
    try:
        with httpx.Client(base_url=url, timeout=timeout, transport=transport) as client:
            health = client.get("/health")
            if health.status_code != 200:
                return ReplicaHealth(url, role, False, error=f"/health answered {health.status_code}")
            models = client.get("/v1/models")
            names = [m.get("id") for m in models.json().get("data", [])] if models.status_code == 200 else []
            running = waiting = None
            if role == "replica":
                metrics = client.get("/metrics")
                if metrics.status_code == 200:
                    running, waiting = parse_vllm_metrics(metrics.text)
            return ReplicaHealth(url, role, True, names, running, waiting)
    except (httpx.HTTPError, ValueError) as exc:
        return ReplicaHealth(url, role, False, error=f"does not answer ({exc.__class__.__name__})")


def fleet_health(settings: Settings, *, transport: httpx.BaseTransport | None = None) -> list[ReplicaHealth]:
    """The router (if any) and every replica, probed now."""
    out = []
    if settings.router_url.strip():
        out.append(probe_replica(upstreams(settings)[0], role="router", transport=transport))
    out += [probe_replica(u, transport=transport) for u in replica_urls(settings)]
    return out


def health_line(h: ReplicaHealth) -> str:
    """One line of the health view (the serve log and `tuneloop replicas`)."""
    if not h.up:
        return f"{h.role} {h.url}: DOWN, {h.error}"
    queue = "" if h.running is None else f", {h.running} running, {h.waiting or 0} waiting"
    return f"{h.role} {h.url}: up, {len(h.models)} models loaded ({', '.join(h.models)}){queue}"


def fleet_models(healths: list[ReplicaHealth], published: set[str], base_name: str) -> list[dict]:
    """What the fleet can serve, as a /v1/models list: the base model while any replica is up, the adapters
    any replica has loaded, and every adapter published in the store (a replica loads it on first use)."""
    up = [h for h in healths if h.up and h.role == "replica"] or [h for h in healths if h.up]
    if not up:
        return []
    names = {base_name} | {n for h in up for n in h.models} | set(published)
    return [{"id": n} for n in sorted(names)]


class FleetAdmin:
    """What AdapterManager asks a server, answered for a fleet: models from the replicas and the store;
    "load" only checks that the adapter is published (the replicas load it themselves on first use)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.url = ", ".join(upstreams(settings))  # what messages name as "the model server"

    def close(self) -> None:
        pass

    def models(self) -> list[dict]:
        from serving.adapters import ServerUnavailable
        from store.adapter_store import published_names

        healths = fleet_health(self.settings)
        models = fleet_models(healths, published_names(self.settings), self.settings.served_base_name)
        if not models:
            raise ServerUnavailable("no vLLM replica answers: " + "; ".join(health_line(h) for h in healths))
        return models

    def load(self, name: str, path: str) -> None:
        from serving.adapters import AdapterError
        from store.adapter_store import AdapterStoreError, read_published

        if not self.settings.adapter_store:
            raise AdapterError("serving from replicas needs an adapter store (TUNELOOP_ADAPTER_STORE) that every "
                               "replica reads as its VLLM_LORA_RESOLVER_CACHE_DIR")
        try:
            read_published(self.settings, name)
        except AdapterStoreError as exc:
            raise AdapterError(f"{exc}: publish it with `tuneloop replicas publish {name}`") from None

    def unload(self, name: str) -> bool:
        return False  # the API refuses archived names; replicas drop unused adapters from their cache
