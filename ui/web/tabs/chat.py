"""The Chat tab (one model), and what it shares with the Compare tab: model pickers, sampling, thumbs, corrections.

Answers stream from the model server; once an answer is complete, the question and the answer are
stored together (store.chats), and only then can they be rated. Thumbs go through the chatbot's
like buttons; both tabs have a box to correct an answer.

Per-browser state (gr.State) is only the list of stored message ids that lines up with what the
chatbots show; everything else lives in the database.

    .venv/bin/python -m pytest tests/test_web_chat.py -q
"""

from __future__ import annotations

import html

import gradio as gr

from serving.ab_session import aligned, last_saved
from serving.generation import APP_DEFAULTS, defaults_for
from store import chats, ratings
from ui.web.chat_view import feedback_values, prompt_messages, shown_answer
from ui.web.context import AppContext, current_user, fail, unexpected
from ui.web.rating_payloads import RatingError, answer_choices, correction_request, thumb_request

DEFAULT_MAX_TOKENS = APP_DEFAULTS.max_tokens


# ------------------------------------------------------------------ models and settings

def model_options(ctx: AppContext) -> tuple[list[tuple[str, str]], str, str | None, str]:
    """(choices, base name, newest loaded adapter or None, a note about the server) for the pickers."""
    base = ctx.base_model
    try:
        statuses = ctx.server.models(include_archived=False)
    except Exception as exc:  # noqa: BLE001 - the pickers still work with the base model
        return [(f"{base} (base model)", base)], base, None, f"The model server cannot be asked ({exc})."
    choices, newest, note = [], None, ""
    for st in statuses:
        if st.kind == "base":
            choices.append((f"{st.name} (base model)", st.name))
            if st.status != "loaded":
                note = ("The model server is starting or down: chat works once it is up "
                        "(about a minute after `tuneloop serve` on CPU).")
        elif st.status == "loaded":
            version = (st.adapter or {}).get("version")
            choices.append((f"{st.name} (adapter v{version})" if version else st.name, st.name))
            newest = newest or st.name
    if not any(v == base for _, v in choices):
        choices.insert(0, (f"{base} (base model)", base))
    return choices, base, newest, note


def sampling(temperature, top_p, max_tokens):
    from serving.chat import SamplingParams

    try:
        return SamplingParams(temperature=float(temperature), top_p=float(top_p), max_tokens=int(max_tokens))
    except (TypeError, ValueError) as exc:
        raise fail(f"Sampling settings: {exc}.")


def settings_dict(system_prompt, temperature, top_p, max_tokens) -> dict:
    return {"system_prompt": system_prompt or "", "temperature": float(temperature), "top_p": float(top_p),
            "max_tokens": int(max_tokens)}


def settings_panel(prefix: str):
    with gr.Accordion("System prompt and sampling", open=False):
        system = gr.Textbox(label="System prompt", lines=2, elem_id=f"{prefix}-system",
                            placeholder="You are a friendly support agent for ACME. Answer briefly.",
                            info="Instructions the model gets before the conversation.")
        with gr.Row():
            temperature = gr.Slider(0, 2, value=APP_DEFAULTS.temperature, step=0.05, label="Temperature",
                                    info="0 = always the most likely words; 0.7 usual; above 1 erratic.")
            top_p = gr.Slider(0.05, 1, value=1.0, step=0.05, label="Top-p",
                              info="Only sample from the most likely words covering this share; 0.9–1 usual.")
            max_tokens = gr.Slider(16, 2048, value=DEFAULT_MAX_TOKENS, step=16, label="Max answer length (tokens)",
                                   info="Longest answer; about 0.75 words per token.", elem_id=f"{prefix}-max-tokens")
    return system, temperature, top_p, max_tokens


def model_defaults(ctx: AppContext, model: str | None):
    """The picked model's generation defaults as updates of (system prompt, temperature, max tokens)."""
    with ctx.db() as db:
        d = defaults_for(db, model)
    return d.system_prompt, d.temperature, d.max_tokens


def stored_context(ctx: AppContext, ids) -> list[dict] | None:
    """The stored conversation up to the newest saved message of `ids` (what the model is sent), or None."""
    last = last_saved(ids)
    if last is None:
        return None
    with ctx.db() as db:
        return chats.conversation_until(db, last)


def thumbs_of(ctx: AppContext, user: str, ids) -> dict[int, str]:
    """The user's stored thumbs on the answers `ids` holds: {message id: "up" | "down"}."""
    saved = [i for i in ids or [] if i is not None]
    if not saved:
        return {}
    with ctx.db() as db:
        return {r["message_id"]: r["value"] for r in ratings.user_ratings(db, user, message_ids=saved)
                if r["kind"] == "thumb"}


def shown(history, ids, thumbs) -> dict:
    """The chatbot's update: the messages and, again, the thumbs given (Gradio drops them on every new value)."""
    return gr.update(value=history, feedback_value=feedback_values(history, ids, thumbs))


# ------------------------------------------------------------------ single chat

def new_chat_state() -> dict:
    return {"session_id": None, "ids": []}


def chat_send(ctx: AppContext, message, history, state, model, system, temperature, top_p, max_tokens,
              anon_id, request: gr.Request | None = None):
    """Stream the model's answer to `message`; store the exchange once the answer is complete."""
    message = (message or "").strip()
    history = list(history or [])
    state = dict(state or new_chat_state())
    if not message:
        raise fail("Type a message first.")
    if not model:
        raise fail("Pick a model to chat with.")
    params = sampling(temperature, top_p, max_tokens)
    ids = aligned(state.get("ids"), history)
    user = current_user(request, anon_id)
    thumbs = thumbs_of(ctx, user, ids)
    prompt = prompt_messages(stored_context(ctx, ids), history, system, message)
    history += [{"role": "user", "content": message}, {"role": "assistant", "content": ""}]
    ids += [None, None]
    yield shown(history, ids, thumbs), "", state
    answer, end = "", None
    try:
        for piece in ctx.server.stream(model, prompt, params):
            if hasattr(piece, "finish_reason"):  # serving.chat.StreamEnd: why the answer ended
                end = piece
                continue
            answer += piece
            history[-1] = {"role": "assistant", "content": shown_answer(answer)}
            yield shown(list(history), ids, thumbs), "", state
    except Exception as exc:  # noqa: BLE001 - ChatError carries a message for the user
        _chat_failed(exc)
        yield shown(history[:-2], ids[:-2], thumbs), message, {**state, "ids": ids[:-2]}
        return
    cut = bool(end is not None and end.cut_off)
    history[-1] = {"role": "assistant", "content": shown_answer(answer, cut_off=cut, max_tokens=params.max_tokens)}
    if not answer.strip():
        gr.Warning("The model gave an empty answer; it was not saved. Try again or raise the answer length.")
        yield shown(history, ids, thumbs), "", {**state, "ids": ids}
        return
    try:
        with ctx.db() as db:
            ex = chats.record_exchange(db, session_id=state.get("session_id"), user=user,
                                       parent_id=last_saved(state.get("ids")), question=message, answer=answer,
                                       model=model, settings=settings_dict(system, temperature, top_p, max_tokens))
    except Exception as exc:  # noqa: BLE001 - the answer stays visible; only rating it is not possible
        not_saved(exc)
        yield shown(history, ids, thumbs), "", {**state, "ids": ids}
        return
    ids[-2:] = [ex.user_message_id, ex.answer_id]
    yield shown(history, ids, thumbs_of(ctx, user, ids)), "", {"session_id": ex.session_id, "ids": ids}


def _chat_failed(exc: BaseException) -> None:
    from serving.chat import ChatError

    if isinstance(exc, ChatError):
        gr.Warning(html.escape(str(exc)) + ". Your message is back in the box to send again.")
    else:
        unexpected("Chatting", exc)  # logs the trace
        gr.Warning(f"The answer failed ({html.escape(exc.__class__.__name__)}: {html.escape(str(exc))}). "
                   "Your message is back in the box to send again.")


def not_saved(exc: BaseException) -> None:
    unexpected("Saving the conversation", exc)  # logs the trace for the administrator
    gr.Warning(f"The answer could not be saved ({html.escape(str(exc))}), so it cannot be rated. "
               "Try sending again in a moment.")


# ------------------------------------------------------------------ thumbs and corrections

def on_like(ctx: AppContext, ids_key: str, data: gr.LikeData, state, anon_id, request: gr.Request | None = None):
    """Store (or take back) a thumb on the answer the user clicked."""
    state = state or {}
    try:
        req = thumb_request(data.index, data.liked, list(state.get(ids_key) or []))
    except RatingError as exc:
        gr.Warning(str(exc))
        return
    user = current_user(request, anon_id)
    try:
        with ctx.db() as db:
            if req.kind == "clear_thumb":
                ratings.clear_rating(db, kind="thumb", message_id=req.message_id, user=user)
            else:
                ratings.rate_message(db, kind="thumb", message_id=req.message_id, value=req.value, user=user)
    except Exception as exc:  # noqa: BLE001
        unexpected("Saving a thumb", exc)
        gr.Warning(f"Your thumb was not saved ({html.escape(str(exc))}). Click it again in a moment.")
        return
    gr.Info("Rating removed." if req.kind == "clear_thumb" else f"Thanks: thumb {req.value} saved.")


def correction_choices(history, ids, side: str = "") -> list[tuple[str, int]]:
    return answer_choices(list(history or []), aligned(ids, history), side)


def save_correction(ctx: AppContext, message_id, text, anon_id, request: gr.Request | None = None):
    try:
        req = correction_request(int(message_id) if message_id not in (None, "") else None, text)
    except RatingError as exc:
        raise fail(str(exc))
    user = current_user(request, anon_id)
    with ctx.db() as db:
        try:
            ratings.rate_message(db, kind="correction", message_id=req.message_id, value=req.value, user=user)
        except ratings.InvalidRating as exc:
            raise fail(str(exc))
        except Exception as exc:  # noqa: BLE001
            raise unexpected("Saving the correction", exc)
    gr.Info("Correction saved. It will be used as a training example.")
    return "", "Correction saved (saving again replaces it)."


# ------------------------------------------------------------------ layout

def correction_box(prefix: str):
    with gr.Accordion("Correct an answer", open=False):
        gr.Markdown("Type the answer the model should have given. Corrections become training examples.")
        target = gr.Dropdown([], label="Answer to correct", elem_id=f"{prefix}-correct-target")
        text = gr.Textbox(label="Better answer", lines=3, elem_id=f"{prefix}-correct-text")
        with gr.Row():
            save = gr.Button("Save correction", size="sm", scale=0, min_width=160, elem_id=f"{prefix}-correct-save")
            status = gr.Markdown()
    return target, text, save, status


def restored_settings(settings: dict, fallback: tuple) -> tuple:
    """(system, temperature, top_p, max tokens) of a restored chat's last answer, `fallback`'s where missing."""
    system, temperature, max_tokens = fallback
    return (settings.get("system_prompt", system), settings.get("temperature", temperature),
            settings.get("top_p", 1.0), settings.get("max_tokens", max_tokens))


def load_chat(ctx: AppContext, current, anon_id, request: gr.Request | None = None):
    """On page load: the model pickers, and the user's open chat from the store (a reload loses nothing)."""
    from serving.open_chats import open_chat
    from ui.web.chat_view import shown_answer as show

    choices, base, _newest, note = model_options(ctx)
    values = {v for _, v in choices}
    username = getattr(request, "username", None) if request is not None else None
    opened = None
    if username or anon_id:  # a browser with no identity yet has nothing stored
        with ctx.db() as db:
            opened = open_chat(db, current_user(request, anon_id))
    if opened is None:
        model = current if current in values else base
        system, temperature, max_tokens = model_defaults(ctx, model)
        return (gr.update(choices=choices, value=model), note, gr.skip(), gr.skip(), system, temperature, gr.skip(),
                max_tokens, gr.skip())
    model = opened.model if opened.model in values else base
    if opened.model and opened.model not in values:
        note = (note + " " if note else "") + (f"Your last chat was with {html.escape(opened.model)}, which is not "
                                               "served now: the next message goes to the model picked above.")
    history = [{"role": m["role"], "content": show(m["content"]) if m["role"] == "assistant" else m["content"]}
               for m in opened.messages]
    system, temperature, top_p, max_tokens = restored_settings(opened.settings, model_defaults(ctx, model))
    choices_now = correction_choices(history, opened.ids)
    return (gr.update(choices=choices, value=model), note,
            gr.update(value=history, feedback_value=feedback_values(history, opened.ids, opened.thumbs)),
            {"session_id": opened.session_id, "ids": opened.ids}, system, temperature, top_p, max_tokens,
            gr.update(choices=choices_now, value=first_choice(choices_now)))


def render_chat(ctx: AppContext, anon_id: gr.BrowserState, loads: list | None = None):
    """The tab; `loads` gets the page-load event that restores the user's open chat."""
    state = gr.State(new_chat_state())
    with gr.Row():
        model = gr.Dropdown([], label="Model", scale=3, elem_id="chat-model",
                            info="The base model or an adapter loaded on the server. Changing it starts a new chat.")
        new = gr.Button("New chat", scale=0, min_width=120)
    server_note = gr.Markdown()
    system, temperature, top_p, max_tokens = settings_panel("chat")
    chatbot = gr.Chatbot(label="Chat", height=420, elem_id="chat-bot", buttons=["copy"],
                         placeholder="Ask something a customer would ask. Rate answers with the thumbs.")
    with gr.Row():
        box = gr.Textbox(show_label=False, placeholder="Type a message and press Enter", scale=6,
                         elem_id="chat-input", lines=1, max_lines=6)
        send = gr.Button("Send", variant="primary", scale=0, min_width=90, elem_id="chat-send")
        stop = gr.Button("Stop", scale=0, min_width=80)
    target, text, save, status = correction_box("chat")

    inputs = [box, chatbot, state, model, system, temperature, top_p, max_tokens, anon_id]
    def send_fn(message, history, st, mdl, sys_prompt, temp, tp, mt, anon, request: gr.Request):
        yield from chat_send(ctx, message, history, st, mdl, sys_prompt, temp, tp, mt, anon, request)

    ev1 = box.submit(send_fn, inputs, [chatbot, box, state], api_name="chat_send", concurrency_limit=None,
                     show_progress="minimal")
    ev2 = send.click(send_fn, inputs, [chatbot, box, state], api_visibility="private", concurrency_limit=None,
                     show_progress="minimal")
    stop.click(None, None, None, cancels=[ev1, ev2])
    for ev in (ev1, ev2):
        ev.then(lambda h, s: gr.update(choices=correction_choices(h, s.get("ids")),
                                       value=first_choice(correction_choices(h, s.get("ids")))),
                [chatbot, state], [target], show_progress="hidden")
    new.click(lambda: ([], new_chat_state(), gr.update(choices=[], value=None)), None, [chatbot, state, target],
              cancels=[ev1, ev2])
    # `input`: only a person's pick starts a new chat (restoring the open chat on load sets the picker too),
    # with the picked model's generation defaults.
    model.input(lambda m: ([], new_chat_state(), gr.update(choices=[], value=None), *model_defaults(ctx, m)),
                [model], [chatbot, state, target, system, temperature, max_tokens])
    chatbot.clear(lambda: (new_chat_state(), gr.update(choices=[], value=None)), None, [state, target],
                  cancels=[ev1, ev2])

    def like(data: gr.LikeData, st, anon, request: gr.Request = None):
        on_like(ctx, "ids", data, st, anon, request)

    chatbot.like(like, [state, anon_id], None, show_progress="hidden")
    def correct(message_id, better, anon, request: gr.Request):
        return save_correction(ctx, message_id, better, anon, request)

    save.click(correct, [target, text, anon_id], [text, status])

    def refresh(current):
        choices, base, _newest, note = model_options(ctx)
        keep = current if any(v == current for _, v in choices) else base
        return gr.update(choices=choices, value=keep), note

    if loads is not None:
        def on_load(current, anon, request: gr.Request):
            return load_chat(ctx, current, anon, request)

        loads.append((on_load, [model, anon_id], [model, server_note, chatbot, state, system, temperature, top_p,
                                                   max_tokens, target]))
    return refresh, [model], [model, server_note]


def first_choice(choices: list) -> object:
    return choices[0][1] if choices else None
