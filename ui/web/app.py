"""The browser app: one Gradio 6 Blocks with a tab per task, mounted on the FastAPI app that also
serves the OpenAI-compatible API under /v1, on settings.host:settings.port.

    tuneloop serve                    # vLLM + the API + this app; prints the URL
    serve_app(Settings())             # the same from Python

`build_app(ctx)` only builds the Blocks (tests build it around fake servers); `mount_ui` puts it at
"/" of a FastAPI app, with logins when settings.users is set. Without logins the app listens on
127.0.0.1 only, whatever settings.host says, and says so at start.
"""

from __future__ import annotations

import hashlib
import html
import logging
from typing import Callable

import gradio as gr
from fastapi import FastAPI

from store.settings import Settings
from ui.web.context import AppContext, Trainer, browser_identity
from ui.web.tabs import adapters as tab_adapters
from ui.web.tabs import chat as tab_chat
from ui.web.tabs import compare as tab_compare
from ui.web.tabs import data as tab_data
from ui.web.tabs import evaluate as tab_evaluate
from ui.web.tabs import feedback as tab_feedback
from ui.web.tabs import review as tab_review
from ui.web.tabs import train as tab_train

log = logging.getLogger("tuneloop.ui")

LOOPBACK = "127.0.0.1"
THEME = gr.themes.Default(primary_hue="blue", secondary_hue="sky", neutral_hue="slate", radius_size="md")
CSS = """
.gradio-container { width: 100% !important; max-width: 1400px !important; margin: 0 auto !important; }
.gradio-container .main, .gradio-container .wrap, .gradio-container main.contain { width: 100%; }
#tl-header h1 { margin: 0; font-size: 1.5rem; }
#tl-header p { margin: 0.1rem 0 0; color: var(--body-text-color-subdued); }
.tl-hint { color: var(--body-text-color-subdued); font-size: 0.9em; }
.tl-scroll { max-height: 460px; overflow-y: auto; }
.tl-convs { display: flex; flex-direction: column; gap: 12px; }
.tl-conv { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px 10px;
           background: var(--background-fill-secondary); }
.tl-conv-title { font-size: 0.8em; color: var(--body-text-color-subdued); margin-bottom: 6px;
                 overflow-wrap: anywhere; }
.tl-msg { max-width: 85%; margin: 4px 0; padding: 6px 10px; border-radius: 10px; overflow-wrap: anywhere; }
.tl-msg .tl-role { font-size: 0.75em; font-weight: 600; color: var(--body-text-color-subdued); }
.tl-msg .tl-text { white-space: pre-wrap; }
.tl-user { background: var(--background-fill-primary); border: 1px solid var(--border-color-primary); }
.tl-assistant { margin-left: auto; background: var(--color-accent-soft); }
.tl-system { max-width: 100%; font-style: italic; background: transparent;
             border: 1px dashed var(--border-color-primary); }
.tl-muted { font-weight: 400; font-style: italic; }
.tl-empty { color: var(--body-text-color-subdued); padding: 12px; }
.tl-progress { height: 14px; border-radius: 7px; background: var(--background-fill-secondary);
               border: 1px solid var(--border-color-primary); overflow: hidden; }
.tl-progress-fill { height: 100%; background: var(--color-accent); transition: width 0.6s ease; }
.tl-progress-label { font-size: 0.9em; margin-top: 4px; }
#ab-votes button { min-width: 120px; }
.tl-table, .tl-table * { font-family: var(--font) !important; }
"""


def startup_note(settings: Settings) -> tuple[str, str]:
    """(the host to listen on, what to tell whoever starts the app about access)."""
    if settings.login_pairs():
        names = ", ".join(name for name, _ in settings.login_pairs())
        return settings.host, f"web app logins required (users: {names}); listening on {settings.host}"
    if settings.host != LOOPBACK:
        return LOOPBACK, (f"no logins are configured (TUNELOOP_USERS), so the web app listens on {LOOPBACK} only, "
                          f"not on {settings.host}: set TUNELOOP_USERS=name:password,... to open it to the network")
    return LOOPBACK, (f"no logins are configured (TUNELOOP_USERS): the web app listens on {LOOPBACK} only "
                      "and ratings are recorded per browser")


def who_text(username: str | None, ident: dict) -> str:
    """The line under the title saying whose name ratings carry."""
    if username:
        return f"Signed in as **{html.escape(username)}**; your ratings carry your name."
    if ident.get("name"):
        return (f"No logins on this installation: your ratings show as **{html.escape(ident['name'])} (guest)** "
                "(the name is kept in this browser).")
    return ("No logins on this installation: your ratings are recorded for this browser. Give your name below so "
            "they show under it, from any browser.")


def build_app(ctx: AppContext) -> gr.Blocks:
    """The Blocks of the whole app; mount it with `mount_ui` (theme and CSS are passed there)."""
    logins = bool(ctx.settings.login_pairs())
    with ctx.db():
        pass  # create and migrate the database now, not in the first requests' race
    secret = hashlib.sha256(f"tuneloop-browser-id:{ctx.settings.db_path}".encode()).hexdigest()
    with gr.Blocks(title="tuneloop", fill_width=False) as demo:
        anon_id = gr.BrowserState(None, storage_key="tuneloop-browser-id", secret=secret)
        with gr.Row(elem_id="tl-header"):
            gr.Markdown("# tuneloop\nImport support chats, fine-tune, compare with the base model, rate, repeat.")
            if logins:
                gr.Button("Log out", link="/logout", size="sm", scale=0, min_width=100)
        who = gr.Markdown(elem_classes=["tl-hint"], elem_id="tl-who")
        if not logins:  # a guest's name on their ratings, kept in the browser (tuneloop-browser-id)
            with gr.Row(equal_height=True, elem_id="tl-name-row"):
                rater_name = gr.Textbox(show_label=False, container=False, max_lines=1, scale=4, elem_id="tl-name",
                                        placeholder="Your name on your ratings (optional), e.g. Maria")
                name_btn = gr.Button("Save name", size="sm", scale=0, min_width=110, elem_id="tl-name-save")
        refreshers: list[tuple[Callable, list | None, list]] = []  # (fn, inputs, outputs) per tab
        loads: list[tuple[Callable, list | None, list]] = []  # page-load-only events (restoring open chats)
        with gr.Tabs():
            with gr.Tab("Data", id="data"):
                refreshers.append(tab_data.render(ctx))
            with gr.Tab("Train", id="train") as train_tab:
                train_refresh = tab_train.render(ctx)
            with gr.Tab("Chat", id="chat") as chat_tab:
                chat_refresh = tab_chat.render_chat(ctx, anon_id, loads)
            with gr.Tab("Compare A/B", id="compare") as compare_tab:
                compare_refresh = tab_compare.render_compare(ctx, anon_id, loads)
            with gr.Tab("Feedback", id="feedback") as feedback_tab:
                feedback_refresh = tab_feedback.render(ctx, anon_id)
            with gr.Tab("Review", id="review") as review_tab:
                review_refresh = tab_review.render(ctx, anon_id)
            with gr.Tab("Evaluate", id="evaluate") as evaluate_tab:
                evaluate_refresh = tab_evaluate.render(ctx, anon_id)
            with gr.Tab("Adapters", id="adapters") as adapters_tab:
                adapters_refresh = tab_adapters.render(ctx)
        refreshers += [train_refresh, feedback_refresh, adapters_refresh]  # chat and compare: in `loads`
        refreshers.append(evaluate_refresh)
        refreshers.append(review_refresh)

        def identify(anon, request: gr.Request):
            ident = browser_identity(anon)
            username = getattr(request, "username", None)
            if logins:
                return ident, who_text(username, ident)
            return ident, who_text(username, ident), ident["name"]

        def save_name(name, anon):
            from ui.web.rating_payloads import RatingError, clean_display_name

            try:
                name = clean_display_name(name)
            except RatingError as exc:
                gr.Warning(str(exc))
                return gr.skip(), gr.skip(), gr.skip()
            ident = {**browser_identity(anon), "name": name}
            gr.Info(f"Your ratings now show as {html.escape(name)} (guest)." if name else
                    "Name removed: your ratings are recorded for this browser.")
            return ident, who_text(None, ident), name

        demo.load(identify, [anon_id], [anon_id, who] + ([] if logins else [rater_name]), show_progress="hidden",
                  api_visibility="private")
        if not logins:
            for trigger in (name_btn.click, rater_name.submit):
                trigger(save_name, [rater_name, anon_id], [anon_id, who, rater_name], show_progress="hidden",
                        api_visibility="private")
        for fn, inputs, outputs in refreshers + loads:
            demo.load(fn, inputs, outputs, show_progress="hidden", api_visibility="private")
        # Pickers and tables that other people and other tabs change: fresh whenever their tab is opened.
        for tab, (fn, inputs, outputs) in ((train_tab, train_refresh), (chat_tab, chat_refresh),
                                           (compare_tab, compare_refresh), (feedback_tab, feedback_refresh),
                                           (adapters_tab, adapters_refresh), (evaluate_tab, evaluate_refresh)):
            tab.select(fn, inputs, outputs, show_progress="hidden", api_visibility="private")
        review_tab.select(*review_refresh, show_progress="hidden", api_visibility="private")
    demo.queue(default_concurrency_limit=4)
    return demo


def mount_ui(app: FastAPI, ctx: AppContext, *, path: str = "/") -> FastAPI:
    """Mount the app on `app` at `path`. Add every other route to `app` before this call: a mount at
    "/" answers all paths registered after it."""
    settings = ctx.settings
    host, _ = startup_note(settings)
    pairs = settings.login_pairs()
    return gr.mount_gradio_app(
        app, build_app(ctx), path=path, server_name=host, server_port=settings.port,
        auth=pairs or None,
        auth_message="Sign in with the name and password your tuneloop administrator gave you." if pairs else None,
        theme=THEME, css=CSS, footer_links=[], run_history=False, ssr_mode=False, mcp_server=False,
        show_error=True, max_file_size="500mb",
    )


def import_ml_libraries() -> None:
    """Import torch, transformers and the classes the app's threads use from it, once.

    transformers 5's lazy module is not safe to import from two threads at once: the Train tab's estimate
    (training.recipe) and an evaluation's embedding model, first used together, made the second fail with
    "cannot import name 'AutoModel' from 'transformers'". So `serve_app` does this before any request or
    background thread can run (about 4 s on 2 cores, most of it beside the app's own set-up).
    """
    import training.recipe  # noqa: F401 - torch, transformers' Trainer, peft
    from transformers import AutoModel, AutoTokenizer  # noqa: F401 - serving.evaluation.embedding's


def serve_app(settings: Settings, *, announce=print, serving=None, trainer: Trainer | None = None) -> None:
    """What `tuneloop serve` runs: the model server, the API under /v1 and this app on one port.

    The web page is up within seconds; the model server starts beside it (about a minute on CPU)
    and the chat tabs say so until it answers, while the Data and Train tabs already work.
    """
    import threading

    import uvicorn

    from serving.service import Serving
    from training.queue import startup
    from ui.web.tabs.train import QueueTrainer

    libraries = threading.Thread(target=import_ml_libraries, name="import-ml-libraries", daemon=True)
    libraries.start()
    host, note = startup_note(settings)
    settings = settings.model_copy(update={"host": host})
    serving = serving or Serving(settings)
    try:
        startup(settings)  # runs whose process died while nothing watched are marked failed; queued ones start
    except Exception as exc:  # noqa: BLE001 - the app is still useful without the training queue
        announce(f"warning: could not check the training queue: {exc}")
    ctx = AppContext(settings=settings, server=serving, trainer=trainer or QueueTrainer(settings))
    app = mount_ui(serving.create_api(), ctx)
    where = f"http://{host}:{settings.port}"
    announce(note)
    if serving.external:
        what = "router" if settings.router_url.strip() else "replicas" if serving.fleet else "server"
        announce(f"using the vLLM {what} at {', '.join(serving.server_urls)}")
    else:
        announce(f"starting the model server (vLLM) on {serving.url}: about a minute on CPU; log: {serving.log_path}")
    libraries.join()  # before the first thread that may use them (see import_ml_libraries)
    serving.start(wait=False)
    threading.Thread(target=_announce_when_ready, args=(serving, announce), name="announce-ready",
                     daemon=True).start()
    announce(f"tuneloop is serving at {where}  (open it in a browser; OpenAI-compatible API: {where}/v1"
             + ("" if settings.api_key else ", off until TUNELOOP_API_KEY is set") + ")")
    announce("Ctrl-C stops everything")
    try:
        uvicorn.run(app, host=host, port=settings.port, log_level="warning")
    finally:
        serving.stop()


def _announce_when_ready(serving, announce) -> None:
    try:
        serving.wait_ready()
    except Exception as exc:  # noqa: BLE001 - VllmStartError and friends: say why, keep the app up
        announce(f"error: the model server did not start: {exc}")
        return
    try:
        statuses = serving.models()
    except Exception:  # noqa: BLE001
        statuses = []
    loaded = [m.name for m in statuses if m.status == "loaded"]
    announce("models ready: " + (", ".join(loaded) or "the base model") + ": chat is available")
    for m in statuses:
        if m.status == "failed":
            announce(f"adapter {m.name} failed to load: {m.error}")

