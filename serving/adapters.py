"""Adapters on the server: validate, load and unload through vLLM's runtime API, and reconcile.

The store's registry (store/adapters.py) says which adapters exist and which are archived; the
server's `/v1/models` is the truth for which are loaded; a failed load keeps its error in the
registry so `tuneloop adapters` and the web app can show it. Every adapter is checked before it
reaches vLLM (name, files, `modules_to_save`, rank, base model), so a bad one is refused with a
message instead of breaking the server.

    tuneloop adapters            # the statuses this module computes
    tuneloop adapters load NAME
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from serving.chat import DOWN_HINT
from store.adapters import AdapterNotFound, get_adapter, list_adapters, set_load_error, set_status, \
    validate_adapter_name
from store.db import connect
from store.settings import Settings

ADMIN_TIMEOUT_S = 120.0  # loading an adapter on a busy 2-core CPU can take a while


class AdapterError(ValueError):
    """An adapter cannot be loaded, unloaded or found; the message says why and what to do."""


class ServerUnavailable(ConnectionError):
    """The vLLM server does not answer."""


# ---------------------------------------------------------------- validation (pure apart from reading files)

def read_adapter_config(path: Path) -> dict:
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        raise AdapterError(f"{path} has no adapter_config.json: not a LoRA adapter folder")
    try:
        return json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{config_file} cannot be read: {exc}") from None


def same_base_model(adapter_base: str | None, settings: Settings) -> bool:
    """Whether an adapter trained on `adapter_base` fits the served base model.

    Equal resolved directories match; so do equal final names (a hub id `org/Model` and a local
    folder `.../Model` are the same model), case-insensitively.
    """
    if not adapter_base:
        return False
    served = settings.base_model_path
    a, b = Path(adapter_base).expanduser(), Path(served).expanduser()
    if a.exists() and b.exists() and a.resolve() == b.resolve():
        return True
    name = lambda p: p.rstrip("/").rsplit("/", 1)[-1].lower()  # noqa: E731
    return name(adapter_base) == name(served)


def check_adapter(settings: Settings, name: str, path: str | Path) -> dict:
    """Refuse an adapter vLLM would fail on; returns its adapter_config.json.

    Checked: the name (safe alphabet, not the base model's name), the folder and its files, that it
    is a LoRA without `modules_to_save`, its rank against `settings.max_lora_rank`, and its base model.
    """
    try:
        validate_adapter_name(name, settings.served_base_name)
    except ValueError as exc:
        raise AdapterError(str(exc)) from None
    path = Path(path).resolve()
    if not path.is_dir():
        raise AdapterError(f"adapter {name!r}: folder {path} does not exist")
    config = read_adapter_config(path)
    if not any((path / f).is_file() for f in ("adapter_model.safetensors", "adapter_model.bin")):
        raise AdapterError(f"adapter {name!r}: {path} has no adapter_model.safetensors")
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise AdapterError(f"adapter {name!r} is a {peft_type} adapter; vLLM serves LoRA adapters only")
    if config.get("modules_to_save"):
        raise AdapterError(
            f"adapter {name!r} trains whole modules ({', '.join(config['modules_to_save'])}: modules_to_save), "
            "which vLLM cannot serve; train it again without modules_to_save (no new tokens, no trained "
            "embeddings or lm_head)"
        )
    ranks = [int(config.get("r") or 0), *(int(r) for r in (config.get("rank_pattern") or {}).values())]
    if max(ranks) > settings.max_lora_rank:
        raise AdapterError(
            f"adapter {name!r} has rank {max(ranks)}, above the server's limit {settings.max_lora_rank}: "
            f"set TUNELOOP_MAX_LORA_RANK to at least {max(ranks)} (one of 8, 16, 32, 64, ...) and restart "
            "`tuneloop serve`, or train with a lower rank"
        )
    base = config.get("base_model_name_or_path")
    if not same_base_model(base, settings):
        raise AdapterError(
            f"adapter {name!r} was trained on base model {base!r}, but the server serves "
            f"{settings.base_model_path!r}; an adapter only works on the model it was trained on"
        )
    return config


# ---------------------------------------------------------------- the server's runtime API

class VllmAdmin:
    """vLLM's model list and runtime adapter routes, over HTTP (never its Python internals)."""

    def __init__(self, url: str, *, timeout: float = ADMIN_TIMEOUT_S, transport: httpx.BaseTransport | None = None):
        self.url = url.rstrip("/")
        self._client = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._client.close()

    def _request(self, method: str, route: str, **kwargs) -> httpx.Response:
        try:
            return self._client.request(method, route, **kwargs)
        except httpx.HTTPError as exc:
            raise ServerUnavailable(f"the model server at {self.url} does not answer ({exc.__class__.__name__}): "
                                    f"{DOWN_HINT}") from None

    def models(self) -> list[dict]:
        response = self._request("GET", "/v1/models")
        if response.status_code != 200:
            raise ServerUnavailable(f"the model server at {self.url} answered {response.status_code} to /v1/models")
        return response.json().get("data", [])

    def load(self, name: str, path: str) -> None:
        response = self._request("POST", "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path})
        if response.status_code == 200:
            return
        message = _error_message(response)
        if response.status_code == 400 and "already been loaded" in message:
            return
        if response.status_code == 404 and message == "Not Found":  # the route itself is missing
            raise AdapterError(f"the model server at {self.url} has runtime adapter loading off: "
                               "start it with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True")
        raise AdapterError(f"the model server refused adapter {name!r} ({response.status_code}): {message}")

    def unload(self, name: str) -> bool:
        """True if the server had it loaded; False if it did not know the name."""
        response = self._request("POST", "/v1/unload_lora_adapter", json={"lora_name": name})
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise AdapterError(f"the model server could not unload {name!r} ({response.status_code}): "
                           f"{_error_message(response)}")


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        error = body.get("error", body)
        return str(error.get("message") or error.get("detail") or error) if isinstance(error, dict) else str(error)
    except ValueError:
        return response.text[:500]


# ---------------------------------------------------------------- reconcile (pure)

@dataclass
class ModelStatus:
    """One model the app can serve: the base model or an adapter, with its serving status."""

    name: str
    kind: str  # base | adapter
    status: str  # loaded | available | failed | archived ; the base: loaded | down
    error: str = ""
    registered: bool = True
    adapter: dict = field(default_factory=dict)  # the registry row, for adapters

    @property
    def chat_ready(self) -> bool:
        return self.status == "loaded"

    def as_dict(self) -> dict:
        return asdict(self)


def reconcile(adapters: list[dict], server_models: list[dict] | None, base_name: str) -> list[ModelStatus]:
    """Statuses from the registry rows and the server's model list (None: the server is down).

    An adapter is `archived` if the registry says so, else `loaded` if the server lists it, else
    `failed` if its last load failed, else `available`. Adapters the server has but the registry
    does not (an external server's own) are listed as loaded and unregistered.
    """
    loaded = {m.get("id") for m in server_models or []}
    statuses = [ModelStatus(base_name, "base", "loaded" if base_name in loaded else "down")]
    known = {base_name}
    for row in adapters:
        known.add(row["name"])
        error = row.get("meta", {}).get("load_error") or ""
        if row["status"] == "archived":
            status = "archived"
        elif row["name"] in loaded:
            status, error = "loaded", ""
        elif error:
            status = "failed"
        else:
            status = "available"
        statuses.append(ModelStatus(row["name"], "adapter", status, error, True, row))
    for m in server_models or []:
        if m.get("id") not in known:
            statuses.append(ModelStatus(m["id"], "adapter", "loaded", registered=False))
    return statuses


# ---------------------------------------------------------------- the manager the CLI, service and UI use

class AdapterManager:
    """Registry + server: load, unload, archive, list. Opens the database per call (any thread)."""

    def __init__(self, settings: Settings, url: str, *, admin: VllmAdmin | None = None):
        self.settings = settings
        self.admin = admin or VllmAdmin(url)

    def close(self) -> None:
        self.admin.close()

    def __enter__(self) -> "AdapterManager":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def server_models(self) -> list[dict] | None:
        try:
            return self.admin.models()
        except ServerUnavailable:
            return None

    def statuses(self, *, include_archived: bool = True) -> list[ModelStatus]:
        with connect(self.settings.db_path) as db:
            rows = list_adapters(db, include_archived=include_archived)
        return reconcile(rows, self.server_models(), self.settings.served_base_name)

    def status(self, name: str) -> ModelStatus:
        for s in self.statuses():
            if s.name == name:
                return s
        raise AdapterError(f"no model named {name!r} (see `tuneloop adapters`)")

    def _row(self, name: str) -> dict:
        with connect(self.settings.db_path) as db:
            try:
                return get_adapter(db, name)
            except AdapterNotFound as exc:
                raise AdapterError(str(exc)) from None

    def _record(self, name: str, error: str | None) -> None:
        with connect(self.settings.db_path) as db:
            set_load_error(db, name, error)

    def load(self, name: str) -> None:
        """Check and load a registered adapter; a refusal is recorded as its load error and raised."""
        row = self._row(name)
        if row["status"] == "archived":
            raise AdapterError(f"adapter {name!r} is archived: restore it first (`tuneloop adapters restore {name}`)")
        try:
            check_adapter(self.settings, name, row["path"])
            self.admin.load(name, str(Path(row["path"]).resolve()))
        except AdapterError as exc:
            self._record(name, str(exc))
            raise
        self._record(name, None)

    def unload(self, name: str) -> bool:
        """Unload from the server (the registry keeps it); False if it was not loaded."""
        self._row(name)
        return self.admin.unload(name)

    def archive(self, name: str) -> None:
        """Hide an adapter from chat and the API: unload it if the server is up, mark it archived."""
        self._row(name)
        try:
            self.admin.unload(name)
        except ServerUnavailable:
            pass
        with connect(self.settings.db_path) as db:
            set_status(db, name, "archived")

    def restore(self, name: str) -> None:
        """Un-archive an adapter and, if the server is up, load it (a refusal is raised and recorded)."""
        self._row(name)
        with connect(self.settings.db_path) as db:
            set_status(db, name, "available")
            set_load_error(db, name, None)
        if self.server_models() is not None:
            self.load(name)

    def load_all(self, names: list[str] | None = None) -> dict[str, str]:
        """Load every non-archived adapter (or `names`) the server lacks; returns {name: error} for failures."""
        loaded = {m.get("id") for m in self.admin.models()}
        with connect(self.settings.db_path) as db:
            rows = list_adapters(db, include_archived=False)
        failures = {}
        for row in reversed(rows):  # oldest first
            if row["name"] in loaded or (names is not None and row["name"] not in names):
                continue
            try:
                self.load(row["name"])
            except AdapterError as exc:
                failures[row["name"]] = str(exc)
        return failures

    def unload_archived(self) -> list[str]:
        """Unload adapters that were archived (e.g. from another process) but are still loaded."""
        loaded = {m.get("id") for m in self.admin.models()}
        with connect(self.settings.db_path) as db:
            archived = [r["name"] for r in list_adapters(db) if r["status"] == "archived"]
        return [n for n in archived if n in loaded and self.admin.unload(n)]
