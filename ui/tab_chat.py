"""The Chat tab (one model) and the Compare tab (two models side by side, optionally blind).

Answers stream from the model server; once an answer is complete, the question and the answer are
stored together (store.chats), and only then can they be rated. Thumbs go through the chatbot's
like buttons; the Compare tab adds the verdict buttons; both have a box to correct an answer.
In blind mode the two models are put on random sides under the names A and B, and their names are
shown once the user has voted.

Per-browser state (gr.State) is only the list of stored message ids that lines up with what the
chatbots show; everything else lives in the database.

    .venv/bin/python -m pytest tests/test_ui_chat.py -q
"""

from __future__ import annotations

import html
import random

import gradio as gr

from serving.history import to_openai_messages
from store import chats, ratings
from ui.context import AppContext, current_user, fail, unexpected
from ui.rating_payloads import (
    VERDICT_LABELS, RatingError, answer_choices, correction_request, thumb_request, verdict_request,
)
from ui.streaming import stream_together

DEFAULT_MAX_TOKENS = 256


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


def _aligned(ids: list, history: list) -> list:
    """Stored ids padded with None for messages that were shown but not stored (a stopped answer)."""
    ids = list(ids or [])
    return ids + [None] * (len(history or []) - len(ids))


def _last_saved(ids: list) -> int | None:
    return next((i for i in reversed(ids or []) if i is not None), None)


def settings_panel(prefix: str):
    with gr.Accordion("System prompt and sampling", open=False):
        system = gr.Textbox(label="System prompt", lines=2, elem_id=f"{prefix}-system",
                            placeholder="You are a friendly support agent for ACME. Answer briefly.",
                            info="Instructions the model gets before the conversation.")
        with gr.Row():
            temperature = gr.Slider(0, 2, value=0.7, step=0.05, label="Temperature",
                                    info="0 = always the most likely words; 0.7 usual; above 1 erratic.")
            top_p = gr.Slider(0.05, 1, value=1.0, step=0.05, label="Top-p",
                              info="Only sample from the most likely words covering this share; 0.9–1 usual.")
            max_tokens = gr.Slider(16, 2048, value=DEFAULT_MAX_TOKENS, step=16, label="Max answer length (tokens)",
                                   info="Longest answer; about 0.75 words per token.")
    return system, temperature, top_p, max_tokens


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
    ids = _aligned(state.get("ids"), history)
    prompt = to_openai_messages(history, system, message)
    history += [{"role": "user", "content": message}, {"role": "assistant", "content": ""}]
    ids += [None, None]
    yield history, "", state
    answer = ""
    try:
        for piece in ctx.server.stream(model, prompt, params):
            answer += piece
            history[-1] = {"role": "assistant", "content": answer}
            yield list(history), "", state
    except Exception as exc:  # noqa: BLE001 - ChatError carries a message for the user
        _chat_failed(exc)
        yield history[:-2], message, {**state, "ids": ids[:-2]}
        return
    if not answer.strip():
        gr.Warning("The model gave an empty answer; it was not saved. Try again or raise the answer length.")
        yield history, "", {**state, "ids": ids}
        return
    user = current_user(request, anon_id)
    try:
        with ctx.db() as db:
            ex = chats.record_exchange(db, session_id=state.get("session_id"), user=user,
                                       parent_id=_last_saved(state.get("ids")), question=message, answer=answer,
                                       model=model, settings=settings_dict(system, temperature, top_p, max_tokens))
    except Exception as exc:  # noqa: BLE001 - the answer stays visible; only rating it is not possible
        _not_saved(exc)
        yield history, "", {**state, "ids": ids}
        return
    ids[-2:] = [ex.user_message_id, ex.answer_id]
    yield history, "", {"session_id": ex.session_id, "ids": ids}


def _chat_failed(exc: BaseException) -> None:
    from serving.chat import ChatError

    if isinstance(exc, ChatError):
        gr.Warning(html.escape(str(exc)) + ". Your message is back in the box to send again.")
    else:
        unexpected("Chatting", exc)  # logs the trace
        gr.Warning(f"The answer failed ({html.escape(exc.__class__.__name__)}: {html.escape(str(exc))}). "
                   "Your message is back in the box to send again.")


def _not_saved(exc: BaseException) -> None:
    unexpected("Saving the conversation", exc)  # logs the trace for the administrator
    gr.Warning(f"The answer could not be saved ({html.escape(str(exc))}), so it cannot be rated. "
               "Try sending again in a moment.")


# ------------------------------------------------------------------ compare (A/B)

def new_ab_state() -> dict:
    return {"session_id": None, "models": None, "blind": False, "revealed": False,
            "ids_a": [], "ids_b": [], "turns": [], "votes": {}}


def ab_labels(state: dict, blind: bool) -> tuple[str, str]:
    models = state.get("models")
    if not models or (blind and not state.get("revealed")):
        return "A", "B"
    return f"A: {models['a']}", f"B: {models['b']}"


def assign_sides(model_1: str, model_2: str, blind: bool, rng: random.Random | None = None) -> dict:
    """Which model answers on which side: as picked, or at random in blind mode."""
    pair = [model_1, model_2]
    if blind:
        (rng or random).shuffle(pair)
    return {"a": pair[0], "b": pair[1]}


def ab_send(ctx: AppContext, message, hist_a, hist_b, state, model_1, model_2, blind, system, temperature,
            top_p, max_tokens, anon_id, request: gr.Request | None = None):
    """Ask both models at once and stream both answers side by side; store the turn when both are done."""
    message = (message or "").strip()
    hist_a, hist_b = list(hist_a or []), list(hist_b or [])
    state = dict(state or new_ab_state())
    state.pop("streaming", None)
    if not message:
        raise fail("Type a message first.")
    if not model_1 or not model_2:
        raise fail("Pick the two models to compare.")
    params = sampling(temperature, top_p, max_tokens)
    if not state.get("models"):
        state.update(models=assign_sides(model_1, model_2, bool(blind)), blind=bool(blind), revealed=False)
    models = state["models"]
    ids_a, ids_b = _aligned(state.get("ids_a"), hist_a), _aligned(state.get("ids_b"), hist_b)
    prompt_a = to_openai_messages(hist_a, system, message)
    prompt_b = to_openai_messages(hist_b, system, message)
    hist_a += [{"role": "user", "content": message}, {"role": "assistant", "content": ""}]
    hist_b += [{"role": "user", "content": message}, {"role": "assistant", "content": ""}]
    ids_a += [None, None]
    ids_b += [None, None]
    label_a, label_b = ab_labels(state, state["blind"])
    busy = {**state, "streaming": True}  # the browser's copy while answers stream: votes wait for the end
    yield (gr.update(value=hist_a, label=label_a), gr.update(value=hist_b, label=label_b), "", busy,
           "Both models are answering…")
    final = None
    for snap in stream_together({
        "a": lambda: ctx.server.stream(models["a"], prompt_a, params),
        "b": lambda: ctx.server.stream(models["b"], prompt_b, params),
    }):
        final = snap
        hist_a[-1] = {"role": "assistant", "content": snap["a"].text}
        hist_b[-1] = {"role": "assistant", "content": snap["b"].text}
        yield list(hist_a), list(hist_b), "", busy, "Both models are answering…"
    errors = {side: s.error for side, s in (final or {}).items() if s.error is not None}
    if errors or not final:
        from serving.chat import ChatError

        for side, exc in errors.items():
            text = str(exc) if isinstance(exc, ChatError) else f"{exc.__class__.__name__}: {exc}"
            if not isinstance(exc, ChatError):
                unexpected("Comparing", exc)
            gr.Warning(f"Side {side.upper()} failed: {html.escape(text)}. Your message is back in the box.")
        state.update(ids_a=ids_a[:-2], ids_b=ids_b[:-2])
        yield hist_a[:-2], hist_b[:-2], message, state, "Nothing was saved; send again."
        return
    if not final["a"].text.strip() or not final["b"].text.strip():
        gr.Warning("A model gave an empty answer, so this turn cannot be compared and was not saved. Send again.")
        state.update(ids_a=ids_a, ids_b=ids_b)
        yield hist_a, hist_b, "", state, "Not saved: an answer was empty."
        return
    user = current_user(request, anon_id)
    blind_now = bool(state["blind"] and not state["revealed"])
    try:
        with ctx.db() as db:
            turn = chats.record_ab_turn(
                db, session_id=state.get("session_id"), user=user, question=message,
                parent_a=_last_saved(state.get("ids_a")), answer_a=final["a"].text, model_a=models["a"],
                parent_b=_last_saved(state.get("ids_b")), answer_b=final["b"].text, model_b=models["b"],
                settings=settings_dict(system, temperature, top_p, max_tokens), blind=blind_now)
    except Exception as exc:  # noqa: BLE001
        _not_saved(exc)
        state.update(ids_a=ids_a, ids_b=ids_b)
        yield hist_a, hist_b, "", state, "Not saved, so this turn cannot be voted on; send again."
        return
    ids_a[-2:] = [turn.side_a.user_message_id, turn.side_a.answer_id]
    ids_b[-2:] = [turn.side_b.user_message_id, turn.side_b.answer_id]
    state.update(session_id=turn.session_id, ids_a=ids_a, ids_b=ids_b, turns=[*state.get("turns", []),
                                                                             turn.ab_turn_id])
    yield hist_a, hist_b, "", state, "Which answer is better? Vote below (you can change your vote)."


def ab_vote(ctx: AppContext, choice: str, state, anon_id, request: gr.Request | None = None):
    state = dict(state or new_ab_state())
    if state.get("streaming"):
        raise fail("Wait until both answers are complete, then vote on them.")
    try:
        req = verdict_request(choice, state.get("turns") or [])
    except RatingError as exc:
        raise fail(str(exc))
    user = current_user(request, anon_id)
    try:
        with ctx.db() as db:
            ratings.rate_turn(db, ab_turn_id=req.ab_turn_id, value=req.value, user=user)
    except Exception as exc:  # noqa: BLE001
        raise unexpected("Saving your vote", exc)
    changed = str(req.ab_turn_id) in state.get("votes", {})
    state["votes"] = {**state.get("votes", {}), str(req.ab_turn_id): req.value}
    models = state["models"]
    was_blind = state.get("blind") and not state.get("revealed")
    state["revealed"] = True
    label_a, label_b = ab_labels(state, state.get("blind"))
    reveal = f" A was **{html.escape(models['a'])}**, B was **{html.escape(models['b'])}**." if was_blind else ""
    status = f"{'Vote changed' if changed else 'Saved'}: {VERDICT_LABELS[req.value]}.{reveal}"
    gr.Info(f"Vote saved: {VERDICT_LABELS[req.value]}")
    return gr.update(label=label_a), gr.update(label=label_b), state, status


def ab_reset(model_1, model_2, blind):
    """Empty both chats and forget the sides: the next message starts a new comparison."""
    note = ("New comparison: the two models will be on random sides, named after your vote." if blind else
            f"New comparison: A is {html.escape(model_1 or '?')}, B is {html.escape(model_2 or '?')}.")
    return (gr.update(value=[], label="A"), gr.update(value=[], label="B"), new_ab_state(), note,
            gr.update(choices=[], value=None))


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
    return answer_choices(list(history or []), _aligned(ids, history), side)


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

def _correction_box(prefix: str):
    with gr.Accordion("Correct an answer", open=False):
        gr.Markdown("Type the answer the model should have given. Corrections become training examples.")
        target = gr.Dropdown([], label="Answer to correct", elem_id=f"{prefix}-correct-target")
        text = gr.Textbox(label="Better answer", lines=3, elem_id=f"{prefix}-correct-text")
        with gr.Row():
            save = gr.Button("Save correction", size="sm", scale=0, min_width=160, elem_id=f"{prefix}-correct-save")
            status = gr.Markdown()
    return target, text, save, status


def render_chat(ctx: AppContext, anon_id: gr.BrowserState):
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
    target, text, save, status = _correction_box("chat")

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
                                       value=_first(correction_choices(h, s.get("ids")))),
                [chatbot, state], [target], show_progress="hidden")
    new.click(lambda: ([], new_chat_state(), gr.update(choices=[], value=None)), None, [chatbot, state, target],
              cancels=[ev1, ev2])
    model.change(lambda: ([], new_chat_state(), gr.update(choices=[], value=None)), None, [chatbot, state, target])
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

    return refresh, [model], [model, server_note]


def render_compare(ctx: AppContext, anon_id: gr.BrowserState):
    state = gr.State(new_ab_state())
    with gr.Row():
        model_1 = gr.Dropdown([], label="Model 1", scale=3, elem_id="ab-model-1")
        model_2 = gr.Dropdown([], label="Model 2", scale=3, elem_id="ab-model-2")
        blind = gr.Checkbox(False, label="Blind test", scale=2, elem_id="ab-blind",
                            info="Hide which model is which and put them on random sides; names show after you vote.")
        new = gr.Button("New comparison", scale=0, min_width=150)
    server_note = gr.Markdown()
    system, temperature, top_p, max_tokens = settings_panel("ab")
    gr.Markdown("The system prompt and sampling settings apply to both sides.", elem_classes=["tl-hint"])
    with gr.Row(equal_height=True):
        bot_a = gr.Chatbot(label="A", height=400, elem_id="ab-bot-a", buttons=["copy"])
        bot_b = gr.Chatbot(label="B", height=400, elem_id="ab-bot-b", buttons=["copy"])
    with gr.Row():
        box = gr.Textbox(show_label=False, placeholder="One message, sent to both models", scale=6,
                         elem_id="ab-input", lines=1, max_lines=6)
        send = gr.Button("Send to both", variant="primary", scale=0, min_width=130, elem_id="ab-send")
        stop = gr.Button("Stop", scale=0, min_width=80)
    status = gr.Markdown("Send a message: both models answer at the same time. Then vote below.",
                         elem_id="ab-status")
    with gr.Row(elem_id="ab-votes"):
        vote_btns = {v: gr.Button(label, elem_id=f"ab-vote-{v}") for v, label in VERDICT_LABELS.items()}
    target, text, save, corr_status = _correction_box("ab")

    inputs = [box, bot_a, bot_b, state, model_1, model_2, blind, system, temperature, top_p, max_tokens, anon_id]
    outputs = [bot_a, bot_b, box, state, status]
    def send_fn(message, ha, hb, st, m1, m2, bl, sys_prompt, temp, tp, mt, anon, request: gr.Request):
        yield from ab_send(ctx, message, ha, hb, st, m1, m2, bl, sys_prompt, temp, tp, mt, anon, request)

    ev1 = box.submit(send_fn, inputs, outputs, api_name="ab_send", concurrency_limit=None, show_progress="minimal")
    ev2 = send.click(send_fn, inputs, outputs, api_visibility="private", concurrency_limit=None,
                     show_progress="minimal")
    stop.click(lambda st: {**(st or new_ab_state()), "streaming": False}, [state], [state], cancels=[ev1, ev2])

    def choices_for(ha, hb, st):
        st = st or {}
        return (correction_choices(ha, st.get("ids_a"), "A") + correction_choices(hb, st.get("ids_b"), "B"))

    for ev in (ev1, ev2):
        ev.then(lambda ha, hb, st: gr.update(choices=choices_for(ha, hb, st), value=_first(choices_for(ha, hb, st))),
                [bot_a, bot_b, state], [target], show_progress="hidden")
    def make_vote(value: str):
        def vote(st, anon, request: gr.Request):
            return ab_vote(ctx, value, st, anon, request)
        return vote

    for value, btn in vote_btns.items():
        btn.click(make_vote(value), [state, anon_id], [bot_a, bot_b, state, status], api_name=f"ab_vote_{value}")

    for trigger in (new.click, model_1.change, model_2.change, blind.change, bot_a.clear, bot_b.clear):
        trigger(ab_reset, [model_1, model_2, blind], [bot_a, bot_b, state, status, target], cancels=[ev1, ev2])

    def like_a(data: gr.LikeData, st, anon, request: gr.Request = None):
        on_like(ctx, "ids_a", data, st, anon, request)

    def like_b(data: gr.LikeData, st, anon, request: gr.Request = None):
        on_like(ctx, "ids_b", data, st, anon, request)

    bot_a.like(like_a, [state, anon_id], None, show_progress="hidden")
    bot_b.like(like_b, [state, anon_id], None, show_progress="hidden")
    def correct(message_id, better, anon, request: gr.Request):
        return save_correction(ctx, message_id, better, anon, request)

    save.click(correct, [target, text, anon_id], [text, corr_status])

    def refresh(current_1, current_2):
        choices, base, newest, note = model_options(ctx)
        values = {v for _, v in choices}
        if not newest:
            note = (note + " " if note else "") + ("No adapter is loaded yet: train one in the Train tab, "
                                                   "or load one in the Adapters tab, to compare it with the base.")
        # Keep what the user picked while it is still served; otherwise base vs the newest adapter.
        first = current_1 if current_1 in values else base
        second = current_2 if current_2 in values and current_2 != current_1 else (newest or base)
        if current_2 == base and newest and current_1 == base:
            second = newest  # an adapter appeared since the page opened: offer it
        return gr.update(choices=choices, value=first), gr.update(choices=choices, value=second), note

    return refresh, [model_1, model_2], [model_1, model_2, server_note]


def _first(choices: list) -> object:
    return choices[0][1] if choices else None
