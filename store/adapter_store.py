"""The adapter store: where each adapter version is published, under its immutable name, for vLLM replicas.

Replicas started with `VLLM_PLUGINS=lora_filesystem_resolver` and `VLLM_LORA_RESOLVER_CACHE_DIR=<store>`
load `<store>/<name>` the first time a request names it, so publishing is all tuneloop does: no load
call to any replica. The store is `settings.adapter_store`: a directory every replica mounts, or an
fsspec URL (s3://bucket/adapters, with the backend installed) that the replicas mount themselves.

vLLM's resolver takes an adapter only if its `base_model_name_or_path` equals the replica's `--model`,
so the published copy says `settings.replica_model` there. A local store is written to a hidden
staging folder and renamed into place (a replica never sees half an adapter); an object store gets
`adapter_config.json` last, the file the resolver looks for first. A name already in the store is
never overwritten: vLLM may hold the old weights under that name.

    publish(settings, "support-v3", Path(".../adapters/support-v3"))   # after the run registers it
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from store.settings import Settings

CONFIG_FILE = "adapter_config.json"
STAGING = ".staging"


class AdapterStoreError(OSError):
    """The adapter store cannot be written or read; the message names the store and the cause."""


def _fs(url: str):
    from fsspec.core import url_to_fs

    try:
        return url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise AdapterStoreError(f"adapter store {url!r} cannot be opened: {exc}") from None


def _is_local(fs) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def published_config(adapter_dir: Path, replica_model: str) -> dict:
    """The adapter's config as the replicas must read it: its base model is the replicas' --model."""
    config = json.loads((adapter_dir / CONFIG_FILE).read_text())
    return {**config, "base_model_name_or_path": replica_model}


def publish(settings: Settings, name: str, adapter_dir: Path | str) -> str | None:
    """Copy an adapter folder into the store as `<store>/<name>`; returns its store path (None: no store).

    Raises AdapterStoreError when the store cannot be written (or the name is taken there)."""
    if not settings.adapter_store:
        return None
    adapter_dir = Path(adapter_dir)
    fs, root = _fs(settings.adapter_store)
    target = f"{root.rstrip('/')}/{name}"
    config = published_config(adapter_dir, settings.replica_model or settings.base_model_path)
    files = sorted(p for p in adapter_dir.iterdir() if p.is_file() and p.name != CONFIG_FILE)
    try:
        if fs.exists(f"{target}/{CONFIG_FILE}"):
            raise AdapterStoreError(f"adapter store {settings.adapter_store}: {name} is already published there; "
                                    "names are never reused")
        dest = f"{root.rstrip('/')}/{STAGING}/{name}-{uuid.uuid4().hex[:8]}" if _is_local(fs) else target
        fs.makedirs(dest, exist_ok=True)
        for f in files:
            fs.put_file(str(f), f"{dest}/{f.name}")
        with fs.open(f"{dest}/{CONFIG_FILE}", "w") as out:
            out.write(json.dumps(config, indent=2))
        if dest != target:
            os.rename(dest, target)  # atomic on one filesystem: replicas see all of it or nothing
            if _is_local(fs):  # the replicas run as other users: the store must stay readable to them
                for p in (Path(target), *Path(target).iterdir()):
                    p.chmod(p.stat().st_mode | (0o755 if p.is_dir() else 0o644))
    except AdapterStoreError:
        raise
    except OSError as exc:
        raise AdapterStoreError(f"adapter store {settings.adapter_store} is not writable: "
                                f"{exc.strerror or exc.__class__.__name__}") from None
    return target


def read_published(settings: Settings, name: str) -> dict:
    """The published adapter's config, read back from the store; AdapterStoreError when it cannot be read."""
    fs, root = _fs(settings.adapter_store)
    path = f"{root.rstrip('/')}/{name}/{CONFIG_FILE}"
    try:
        with fs.open(path, "r") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        raise AdapterStoreError(f"adapter {name} is not in the adapter store {settings.adapter_store}") from None
    except (OSError, ValueError) as exc:
        raise AdapterStoreError(f"adapter {name} in the adapter store {settings.adapter_store} is not readable: "
                                f"{getattr(exc, 'strerror', None) or exc}") from None


def published_names(settings: Settings) -> set[str]:
    """Names in the store (empty without a store or when it cannot be listed)."""
    if not settings.adapter_store:
        return set()
    fs, root = _fs(settings.adapter_store)
    try:
        entries = fs.ls(root, detail=False)
    except OSError:
        return set()
    names = {e.rstrip("/").rsplit("/", 1)[-1] for e in entries}
    return {n for n in names if not n.startswith(".")}


def put_folder(settings: Settings, local_dir: Path | str, relative: str) -> str:
    """Copy a folder into `<store>/<relative>` (a Ray job's adapter on its way back); returns that path."""
    fs, root = _fs(settings.adapter_store)
    dest = f"{root.rstrip('/')}/{relative}"
    try:
        fs.makedirs(dest, exist_ok=True)
        for f in sorted(Path(local_dir).iterdir()):
            if f.is_file():
                fs.put_file(str(f), f"{dest}/{f.name}")
    except OSError as exc:
        raise AdapterStoreError(f"adapter store {settings.adapter_store} is not writable: "
                                f"{exc.strerror or exc.__class__.__name__}") from None
    return dest


def get_folder(settings: Settings, relative: str, local_dir: Path | str) -> Path:
    """Copy `<store>/<relative>` into `local_dir` (created); returns it."""
    fs, root = _fs(settings.adapter_store)
    local_dir = Path(local_dir)
    local_dir.mkdir(parents=True, exist_ok=True)
    src = f"{root.rstrip('/')}/{relative}"
    try:
        for entry in fs.ls(src, detail=False):
            fs.get_file(entry, str(local_dir / entry.rstrip("/").rsplit("/", 1)[-1]))
    except OSError as exc:
        raise AdapterStoreError(f"{relative} in the adapter store {settings.adapter_store} is not readable: "
                                f"{exc.strerror or exc.__class__.__name__}") from None
    return local_dir


def remove(settings: Settings, relative: str) -> None:
    """Delete `<store>/<relative>` (a Ray job's staged adapter once taken); missing is fine."""
    fs, root = _fs(settings.adapter_store)
    try:
        fs.rm(f"{root.rstrip('/')}/{relative}", recursive=True)
    except (OSError, FileNotFoundError):
        pass


def publish_registered(db, settings: Settings, name: str, adapter_dir: Path | str) -> str | None:
    """Publish a just-registered adapter; a store that cannot be written never fails the run (the adapter
    is trained and kept in adapters_dir): the reason is recorded as its load error, which
    `tuneloop adapters` and the Adapters tab show, and `tuneloop replicas publish NAME` retries."""
    from store.adapters import set_load_error

    try:
        return publish(settings, name, adapter_dir)
    except AdapterStoreError as exc:
        set_load_error(db, name, f"not published for the replicas: {exc}")
        return None
