"""The Compare A/B tab: two models answer the same message side by side (optionally blind); the user votes.

The session rules (sides, blind mode, reveal, stored ids lined up with what each side shows) are
serving.ab_session's; this module streams both answers, stores each turn (store.chats) and votes
(store.ratings), and lays out the tab. In blind mode the names show once the user has voted.
"""

from __future__ import annotations

import html

import gradio as gr

from serving.ab_session import (aligned, begin_turn, is_blind_now, last_saved, new_session, record_turn,
                                record_vote, side_labels)
from store import chats, ratings
from ui.web.chat_view import prompt_messages, shown_answer
from ui.web.context import AppContext, current_user, fail, unexpected
from ui.web.rating_payloads import VERDICT_LABELS, RatingError, verdict_request
from ui.web.streaming import stream_together
from ui.web.tabs.chat import (correction_box, correction_choices, first_choice, model_defaults, model_options,
                              not_saved, on_like, restored_settings, save_correction, sampling, settings_dict,
                              settings_panel, shown, stored_context, thumbs_of)


def ab_send(ctx: AppContext, message, hist_a, hist_b, state, model_1, model_2, blind, system, temperature,
            top_p, max_tokens, anon_id, request: gr.Request | None = None):
    """Ask both models at once and stream both answers side by side; store the turn when both are done."""
    message = (message or "").strip()
    hist_a, hist_b = list(hist_a or []), list(hist_b or [])
    state = dict(state or new_session())
    state.pop("streaming", None)
    if not message:
        raise fail("Type a message first.")
    if not model_1 or not model_2:
        raise fail("Pick the two models to compare.")
    params = sampling(temperature, top_p, max_tokens)
    state = begin_turn(state, model_1, model_2, blind)
    models = state["models"]
    ids_a, ids_b = aligned(state.get("ids_a"), hist_a), aligned(state.get("ids_b"), hist_b)
    user = current_user(request, anon_id)
    thumbs = thumbs_of(ctx, user, ids_a + ids_b)
    prompt_a = prompt_messages(stored_context(ctx, ids_a), hist_a, system, message)
    prompt_b = prompt_messages(stored_context(ctx, ids_b), hist_b, system, message)
    hist_a += [{"role": "user", "content": message}, {"role": "assistant", "content": ""}]
    hist_b += [{"role": "user", "content": message}, {"role": "assistant", "content": ""}]
    ids_a += [None, None]
    ids_b += [None, None]
    label_a, label_b = side_labels(state)
    busy = {**state, "streaming": True}  # the browser's copy while answers stream: votes wait for the end
    yield ({**shown(hist_a, ids_a, thumbs), "label": label_a}, {**shown(hist_b, ids_b, thumbs), "label": label_b},
           "", busy, "Both models are answering…")
    final = None
    for snap in stream_together({
        "a": lambda: ctx.server.stream(models["a"], prompt_a, params),
        "b": lambda: ctx.server.stream(models["b"], prompt_b, params),
    }):
        final = snap
        for side, hist in (("a", hist_a), ("b", hist_b)):
            end = snap[side].end
            hist[-1] = {"role": "assistant", "content": shown_answer(
                snap[side].text, cut_off=bool(end is not None and end.cut_off), max_tokens=params.max_tokens)}
        yield shown(list(hist_a), ids_a, thumbs), shown(list(hist_b), ids_b, thumbs), "", busy, \
            "Both models are answering…"
    errors = {side: s.error for side, s in (final or {}).items() if s.error is not None}
    if errors or not final:
        from serving.chat import ChatError

        for side, exc in errors.items():
            text = str(exc) if isinstance(exc, ChatError) else f"{exc.__class__.__name__}: {exc}"
            if not isinstance(exc, ChatError):
                unexpected("Comparing", exc)
            gr.Warning(f"Side {side.upper()} failed: {html.escape(text)}. Your message is back in the box.")
        state.update(ids_a=ids_a[:-2], ids_b=ids_b[:-2])
        yield (shown(hist_a[:-2], ids_a[:-2], thumbs), shown(hist_b[:-2], ids_b[:-2], thumbs), message, state,
               "Nothing was saved; send again.")
        return
    if not final["a"].text.strip() or not final["b"].text.strip():
        gr.Warning("A model gave an empty answer, so this turn cannot be compared and was not saved. Send again.")
        state.update(ids_a=ids_a, ids_b=ids_b)
        yield shown(hist_a, ids_a, thumbs), shown(hist_b, ids_b, thumbs), "", state, "Not saved: an answer was empty."
        return
    blind_now = is_blind_now(state)
    try:
        with ctx.db() as db:
            turn = chats.record_ab_turn(
                db, session_id=state.get("session_id"), user=user, question=message,
                parent_a=last_saved(state.get("ids_a")), answer_a=final["a"].text, model_a=models["a"],
                parent_b=last_saved(state.get("ids_b")), answer_b=final["b"].text, model_b=models["b"],
                settings=settings_dict(system, temperature, top_p, max_tokens), blind=blind_now)
    except Exception as exc:  # noqa: BLE001
        not_saved(exc)
        state.update(ids_a=ids_a, ids_b=ids_b)
        yield (shown(hist_a, ids_a, thumbs), shown(hist_b, ids_b, thumbs), "", state,
               "Not saved, so this turn cannot be voted on; send again.")
        return
    ids_a[-2:] = [turn.side_a.user_message_id, turn.side_a.answer_id]
    ids_b[-2:] = [turn.side_b.user_message_id, turn.side_b.answer_id]
    state = record_turn(state, session_id=turn.session_id, ab_turn_id=turn.ab_turn_id, ids_a=ids_a, ids_b=ids_b)
    thumbs = thumbs_of(ctx, user, ids_a + ids_b)
    yield (shown(hist_a, ids_a, thumbs), shown(hist_b, ids_b, thumbs), "", state,
           "Which answer is better? Vote below (you can change your vote).")


def ab_vote(ctx: AppContext, choice: str, state, anon_id, request: gr.Request | None = None):
    state = dict(state or new_session())
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
    state, changed, revealed_now = record_vote(state, req.ab_turn_id, req.value)
    models = state["models"]
    label_a, label_b = side_labels(state)
    reveal = f" A was **{html.escape(models['a'])}**, B was **{html.escape(models['b'])}**." if revealed_now else ""
    status = f"{'Vote changed' if changed else 'Saved'}: {VERDICT_LABELS[req.value]}.{reveal}"
    gr.Info(f"Vote saved: {VERDICT_LABELS[req.value]}")
    return gr.update(label=label_a), gr.update(label=label_b), state, status


def ab_reset(model_1, model_2, blind):
    """Empty both chats and forget the sides: the next message starts a new comparison."""
    if not model_1 or not model_2:
        note = "New comparison: pick the two models to compare above, then send a message."
    elif blind:
        note = "New comparison: the two models will be on random sides, named after your vote."
    else:
        note = f"New comparison: A is {html.escape(model_1)}, B is {html.escape(model_2)}."
    return (gr.update(value=[], label="A"), gr.update(value=[], label="B"), new_session(), note,
            gr.update(choices=[], value=None))


# ------------------------------------------------------------------ layout

def load_compare(ctx: AppContext, current_1, current_2, anon_id, request: gr.Request | None = None):
    """On page load: the model pickers, and the user's open comparison from the store, as it was left."""
    from serving.open_chats import open_comparison

    m1, m2, note = pick_models(ctx, current_1, current_2)
    username = getattr(request, "username", None) if request is not None else None
    opened = None
    if username or anon_id:
        with ctx.db() as db:
            opened = open_comparison(db, current_user(request, anon_id))
    if opened is None:
        system, temperature, max_tokens = model_defaults(ctx, m2["value"])
        return (m1, m2, note, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), system, temperature, gr.skip(),
                max_tokens, gr.skip())
    st = opened.state
    models = st["models"]
    # The pickers show the pair as it was picked (in blind mode the sides are random: keep the pick as is).
    if not st["blind"]:
        m1, m2 = {**m1, "value": models["a"]}, {**m2, "value": models["b"]}
    hists = [[{"role": m["role"], "content": shown_answer(m["content"]) if m["role"] == "assistant" else m["content"]}
              for m in msgs] for msgs in (opened.messages_a, opened.messages_b)]
    label_a, label_b = side_labels(st)
    system, temperature, top_p, max_tokens = restored_settings(opened.settings, model_defaults(ctx, models["b"]))
    voted = str(st["turns"][-1]) in st["votes"]
    status = ("Your comparison is back as you left it. " +
              ("Send the next message, or start a new comparison." if voted else
               "Which answer is better? Vote below (you can change your vote)."))
    choices = (correction_choices(hists[0], st["ids_a"], "A") + correction_choices(hists[1], st["ids_b"], "B"))
    return (m1, m2, note, {**shown(hists[0], st["ids_a"], opened.thumbs), "label": label_a},
            {**shown(hists[1], st["ids_b"], opened.thumbs), "label": label_b}, st, status, gr.update(value=st["blind"]),
            system, temperature, top_p, max_tokens, gr.update(choices=choices, value=first_choice(choices)))


def pick_models(ctx: AppContext, current_1, current_2):
    """(Model 1 update, Model 2 update, note): keep what the user picked while it is served; otherwise base vs
    the newest adapter."""
    choices, base, newest, note = model_options(ctx)
    values = {v for _, v in choices}
    if not newest:
        note = (note + " " if note else "") + ("No adapter is loaded yet: train one in the Train tab, "
                                               "or load one in the Adapters tab, to compare it with the base.")
    first = current_1 if current_1 in values else base
    second = current_2 if current_2 in values and current_2 != current_1 else (newest or base)
    if current_2 == base and newest and current_1 == base:
        second = newest  # an adapter appeared since the page opened: offer it
    return gr.update(choices=choices, value=first), gr.update(choices=choices, value=second), note


def render_compare(ctx: AppContext, anon_id: gr.BrowserState, loads: list | None = None):
    """The tab; `loads` gets the page-load event that restores the user's open comparison."""
    state = gr.State(new_session())
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
    target, text, save, corr_status = correction_box("ab")

    inputs = [box, bot_a, bot_b, state, model_1, model_2, blind, system, temperature, top_p, max_tokens, anon_id]
    outputs = [bot_a, bot_b, box, state, status]
    def send_fn(message, ha, hb, st, m1, m2, bl, sys_prompt, temp, tp, mt, anon, request: gr.Request):
        yield from ab_send(ctx, message, ha, hb, st, m1, m2, bl, sys_prompt, temp, tp, mt, anon, request)

    ev1 = box.submit(send_fn, inputs, outputs, api_name="ab_send", concurrency_limit=None, show_progress="minimal")
    ev2 = send.click(send_fn, inputs, outputs, api_visibility="private", concurrency_limit=None,
                     show_progress="minimal")
    stop.click(lambda st: {**(st or new_session()), "streaming": False}, [state], [state], cancels=[ev1, ev2])

    def choices_for(ha, hb, st):
        st = st or {}
        return (correction_choices(ha, st.get("ids_a"), "A") + correction_choices(hb, st.get("ids_b"), "B"))

    for ev in (ev1, ev2):
        ev.then(lambda ha, hb, st: gr.update(choices=choices_for(ha, hb, st), value=first_choice(choices_for(ha, hb, st))),
                [bot_a, bot_b, state], [target], show_progress="hidden")
    def make_vote(value: str):
        def vote(st, anon, request: gr.Request):
            return ab_vote(ctx, value, st, anon, request)
        return vote

    for value, btn in vote_btns.items():
        btn.click(make_vote(value), [state, anon_id], [bot_a, bot_b, state, status], api_name=f"ab_vote_{value}")

    # `input`, not `change`: only a person's pick starts a new comparison. The pickers are also set on page load
    # (restoring the open comparison) and on refresh, and a reset raced those updates ("B is ?").
    for trigger in (new.click, model_1.input, model_2.input, blind.input, bot_a.clear, bot_b.clear):
        trigger(ab_reset, [model_1, model_2, blind], [bot_a, bot_b, state, status, target], cancels=[ev1, ev2])
    for picker in (model_1, model_2):  # both sides answer with the adapter's (Model 2's) generation defaults
        picker.input(lambda m: model_defaults(ctx, m), [model_2], [system, temperature, max_tokens],
                     show_progress="hidden")

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
        return pick_models(ctx, current_1, current_2)

    if loads is not None:
        def on_load(current_1, current_2, anon, request: gr.Request):
            return load_compare(ctx, current_1, current_2, anon, request)

        loads.append((on_load, [model_1, model_2, anon_id],
                      [model_1, model_2, server_note, bot_a, bot_b, state, status, blind, system, temperature, top_p,
                       max_tokens, target]))
    return refresh, [model_1, model_2], [model_1, model_2, server_note]
