"""The Review tab: the answers the deployed bot gave through /v1, to read in context, rate, correct or add to an eval set.

Filters pick what to review (deployment, adapter, dates, unrated / rated / thumbs down, low judge
score, free text); one answer at a time is shown with its whole conversation. Keys: U thumbs up and
next, D thumbs down and next, J next, K previous, C to type a correction. Ratings are stored like the
Chat tab's (store.traffic.as_chat_message, then store.ratings), so `feedback build` trains on them.
Below: a deployment's canary (arms, rates with 95% intervals, end or promote) and the API keys
(admins only when logins are on).

    .venv/bin/python -m pytest tests/test_web_review.py -q
"""

from __future__ import annotations

import html
import json

import gradio as gr
import pandas as pd

from store import api_keys, ratings, traffic
from store.adapters import list_adapters
from store.evaluations import NewEvalItem, create_eval_set_version, list_eval_sets
from ui.text import short_time
from ui.web.context import AppContext, current_user, fail, is_admin
from ui.web.html import conversation_html

SHOW = ("Waiting (unrated)", "Rated", "Thumbs down", "All")
COLUMNS = ["When (UTC)", "Deployment", "Answered by", "Question", "Answer", "Rating"]
KEY_COLUMNS = ["Name", "State", "Requests", "Last use (UTC)", "Created (UTC)"]
ARM_COLUMNS = ["Arm", "Model", "Requests", "Thumbs up (95% CI)", "Corrected (95% CI)"]
ALL = "(all)"
# Key bindings for the common verdicts; ignored while typing in a field. Registered once per page.
SHORTCUTS_JS = """
if (!window.__tlReviewKeys) {
  window.__tlReviewKeys = true;
  const ids = {u: "rv-up", d: "rv-down", j: "rv-next", k: "rv-prev"};
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target, tag = (t && t.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || (t && t.isContentEditable)) return;
    const panel = document.getElementById("rv-panel");
    if (!panel || panel.offsetParent === null) return;  // the Review tab is not open
    const key = e.key.toLowerCase();
    if (key === "c") { const box = document.querySelector("#rv-correction textarea"); if (box) { e.preventDefault(); box.focus(); } return; }
    const id = ids[key];
    if (!id) return;
    const button = document.getElementById(id);
    if (button) { e.preventDefault(); button.click(); }
  });
}
"""


def review_filter(deployment: str | None, adapter: str | None, since: str, until: str, show: str,
                  judge_below: str | None, text: str, *, limit: int = 200) -> traffic.CaptureFilter:
    """The form's values as a store filter; ValueError naming the field for a date or score that is not one."""
    judge_text = (judge_below or "").strip()
    try:
        judge_value = float(judge_text) if judge_text else None
    except ValueError:
        raise ValueError(f"Judge score below: write a number from 0 to 1, not {judge_text!r}") from None
    for label, value in (("From", since), ("To", until)):
        value = (value or "").strip()
        if value and not (len(value) >= 10 and value[4] == "-" and value[7] == "-" and value[:4].isdigit()):
            raise ValueError(f"{label}: write a date as YYYY-MM-DD, not {value!r}")
    return traffic.CaptureFilter(
        deployment=None if deployment in (None, "", ALL) else deployment,
        adapter=None if adapter in (None, "", ALL) else adapter,
        since=(since or "").strip() or None, until=(until or "").strip() or None,
        rated={"Waiting (unrated)": False, "Rated": True}.get(show), thumbs_down=show == "Thumbs down",
        judge_below=judge_value, text=(text or "").strip() or None,
        status=None, limit=limit)


def counts_text(c: dict) -> str:
    per = ", ".join(f"{name or 'direct model names'}: {n}" for name, n in c["per_deployment"].items())
    return (f"**{c['unrated']} answers waiting for review** ({per or 'none'}) · {c['thumbs_down']} thumbs down · "
            f"{c['corrected']} corrected · {c['partial']} cut off by the client · {c['total']} captured in all")


def rows_table(rows: list[dict]) -> pd.DataFrame:
    data = [[short_time(r["created_at"]), r["deployment"] or "-", r["adapter"] or r["model"], _clip(r["question"], 90),
             _clip(r["answer"], 120), _rating(r)] for r in rows]
    return pd.DataFrame(data, columns=COLUMNS)


def _rating(r: dict) -> str:
    parts = []
    if r.get("thumb"):
        parts.append("thumbs up" if r["thumb"] == "up" else "thumbs down")
    if r.get("corrected"):
        parts.append("corrected")
    if r.get("status") == "partial":
        parts.append("cut off")
    return " ".join(parts) or "-"


def _clip(text: str | None, n: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def detail_html(capture: dict | None, position: str = "") -> str:
    if capture is None:
        return "<div class='tl-empty'>Nothing to review with these filters.</div>"
    messages = traffic.conversation_of(capture) + [{"role": "assistant", "content": capture["answer"] or ""}]
    who = capture["deployment"] or capture["model"]
    title = f"{who} → {capture['adapter']}" + (f" ({capture['arm']} arm)" if capture.get("arm") else "")
    facts = [f"id {capture['id']}", f"{short_time(capture['created_at'])} UTC", f"key {capture['api_key'] or '-'}"]
    if capture.get("user"):
        facts.append(f"user {capture['user']}")
    if capture.get("metadata"):
        facts.append("metadata " + json.dumps(capture["metadata"], ensure_ascii=False)[:200])
    if capture.get("latency_ms") is not None:
        facts.append(f"{capture['latency_ms']:.0f} ms")
    if capture.get("judge_score") is not None:
        facts.append(f"judge score {capture['judge_score']:.2f}")
    if capture.get("completion_tokens") is not None:
        facts.append(f"{capture['completion_tokens']} tokens")
    if capture["status"] == "partial":
        facts.append("<b>cut off: the client went away before the answer ended</b>")
    rated = [(f"thumbs {r['value']}" if r["kind"] == "thumb" else f"corrected to “{_clip(r['value'], 80)}”")
             + f" by {r['user']}" for r in capture.get("ratings", [])]
    head = f"<div class='tl-hint' id='rv-facts'>{position} · " + html.escape(" · ".join(f for f in facts if '<b>' not in f))
    head += (" · " + facts[-1] if "<b>" in facts[-1] else "") + "</div>"
    if rated:
        head += "<div class='tl-hint' id='rv-rated'>Rated: " + html.escape("; ".join(rated)) + "</div>"
    return head + conversation_html(messages, title=title)


def render(ctx: AppContext, anon_id):
    with gr.Column(elem_id="rv-panel"):
        gr.Markdown("Answers your bot gave through the API (`/v1`). Rate them as you read: **U** thumbs up, **D** "
                    "thumbs down (each moves on), **J**/**K** next/previous, **C** to type a correction. Ratings "
                    "and corrections feed the next round (Feedback tab) like those from Chat.")
        counts = gr.Markdown(elem_id="rv-counts")
        with gr.Row():
            deployment = gr.Dropdown([ALL], value=ALL, label="Deployment", elem_id="rv-deployment", scale=1)
            adapter = gr.Dropdown([ALL], value=ALL, label="Answered by", elem_id="rv-adapter", scale=1)
            show = gr.Radio(list(SHOW), value=SHOW[0], label="Show", elem_id="rv-show", scale=2)
        with gr.Row():
            since = gr.Textbox(label="From (YYYY-MM-DD)", elem_id="rv-since", scale=1)
            until = gr.Textbox(label="To (YYYY-MM-DD)", elem_id="rv-until", scale=1)
            judge = gr.Textbox(label="Judge score below (0-1; scored by `tuneloop traffic judge`)",
                               elem_id="rv-judge", scale=1)
            text = gr.Textbox(label="Search questions and answers", elem_id="rv-search", scale=2)
            apply_btn = gr.Button("Filter", elem_id="rv-filter", scale=0, min_width=100)
        table = gr.Dataframe(rows_table([]), interactive=False, wrap=True, max_height=280, elem_id="rv-table",
                             elem_classes=["tl-table"], column_widths=["12%", "11%", "13%", "24%", "30%", "10%"])
        ids = gr.State([])
        index = gr.State(0)
        detail = gr.HTML(detail_html(None), elem_id="rv-detail")
        with gr.Row():
            prev_btn = gr.Button("◀ Previous (K)", elem_id="rv-prev", size="sm")
            up_btn = gr.Button("Good (U)", elem_id="rv-up", size="sm", variant="primary")
            down_btn = gr.Button("Bad (D)", elem_id="rv-down", size="sm")
            next_btn = gr.Button("Next ▶ (J)", elem_id="rv-next", size="sm")
        with gr.Row():
            correction = gr.Textbox(label="Corrected answer (C)", lines=3, elem_id="rv-correction", scale=3)
            with gr.Column(scale=1):
                correct_btn = gr.Button("Save correction", elem_id="rv-correct")
                eval_set = gr.Dropdown([], value=None, allow_custom_value=True, label="Eval set (pick or type a new name)",
                                       elem_id="rv-evalset")
                eval_btn = gr.Button("Add to eval set", elem_id="rv-add-eval", size="sm")
        status = gr.Markdown(elem_id="rv-status")
        gr.HTML("", js_on_load=SHORTCUTS_JS, elem_id="rv-keys", padding=False)

    filters = [deployment, adapter, since, until, show, judge, text]

    def load(dep, ad, fr, to, sh, jb, tx, keep_id=None):
        try:
            f = review_filter(dep, ad, fr, to, sh, jb, tx)
        except ValueError as exc:
            raise fail(str(exc)) from None
        with ctx.db() as db:
            rows = traffic.find_captures(db, f)
            c = traffic.waiting_counts(db)
            choices = traffic.filter_choices(db)
            sets = [s["name"] for s in list_eval_sets(db)]
        found = [r["id"] for r in rows]
        i = found.index(keep_id) if keep_id in found else 0
        return (counts_text(c), rows_table(rows), found, i, _detail(found, i),
                gr.update(choices=[ALL, *choices["deployment"]]), gr.update(choices=[ALL, *choices["adapter"]]),
                gr.update(choices=sets))

    def _detail(found: list[str], i: int) -> str:
        if not found:
            return detail_html(None)
        i = max(0, min(i, len(found) - 1))
        with ctx.db() as db:
            try:
                capture = traffic.get_capture(db, found[i])
            except traffic.CompletionNotFound:
                return detail_html(None)
        return detail_html(capture, f"{i + 1} of {len(found)}")

    outputs = [counts, table, ids, index, detail, deployment, adapter, eval_set]
    apply_btn.click(lambda *v: load(*v), filters, outputs, api_name="review_filter")
    text.submit(lambda *v: load(*v), filters, outputs, api_visibility="private")

    def move(found, i, step):
        i = max(0, min(i + step, len(found) - 1)) if found else 0
        return i, _detail(found, i), ""

    prev_btn.click(lambda f, i: move(f, i, -1), [ids, index], [index, detail, correction], api_visibility="private")
    next_btn.click(lambda f, i: move(f, i, 1), [ids, index], [index, detail, correction], api_visibility="private")

    def pick(found, evt: gr.SelectData):
        i = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return move(found, int(i), 0)

    table.select(pick, [ids], [index, detail, correction], api_visibility="private")

    def rate(found, i, kind, value, anon, request: gr.Request):
        if not found:
            raise fail("nothing selected: filter the answers first")
        user = current_user(request, anon)
        try:
            with ctx.db() as db:
                mid = traffic.as_chat_message(db, found[i], user=user)
                ratings.rate_message(db, kind=kind, message_id=mid, value=value, user=user)
                waiting = counts_text(traffic.waiting_counts(db))
        except (ratings.InvalidRating, ValueError, traffic.CompletionNotFound) as exc:
            raise fail(str(exc)) from None
        if kind == "thumb":  # a verdict moves on to the next answer
            nxt = min(i + 1, len(found) - 1)
            return nxt, _detail(found, nxt), "", f"Rated thumbs {value}.", waiting
        return (i, _detail(found, i), value, "Correction saved: it becomes a training example in the next round.",
                waiting)

    def thumb_up(f, i, a, request: gr.Request):
        return rate(f, i, "thumb", "up", a, request)

    def thumb_down(f, i, a, request: gr.Request):
        return rate(f, i, "thumb", "down", a, request)

    def correct(f, i, t, a, request: gr.Request):
        return rate(f, i, "correction", t, a, request)

    rated = [index, detail, correction, status, counts]
    up_btn.click(thumb_up, [ids, index, anon_id], rated, api_name="review_up")
    down_btn.click(thumb_down, [ids, index, anon_id], rated, api_name="review_down")
    correct_btn.click(correct, [ids, index, correction, anon_id], rated, api_name="review_correct")

    def add_to_eval(found, i, name, corrected, anon, request: gr.Request):
        if not found:
            raise fail("nothing selected: filter the answers first")
        if not (name or "").strip():
            raise fail("Eval set: pick one or type a new name")
        user = current_user(request, anon)
        with ctx.db() as db:
            capture = traffic.get_capture(db, found[i])
            prompt = traffic.conversation_of(capture)
            reference = (corrected or "").strip() or capture["answer"]
            try:
                ref = create_eval_set_version(
                    db, name.strip(), [NewEvalItem(prompt, reference, [], {"source": "traffic",
                                                                          "completion_id": capture["id"]})],
                    source_kind="manual", source_ref=json.dumps({"completion_id": capture["id"]}), created_by=user)
            except ValueError as exc:
                raise fail(f"Eval set: {exc}") from None
        which = "your correction" if (corrected or "").strip() else "this answer"
        return f"Added to eval set **{ref}** with {which} as the reference."

    eval_btn.click(add_to_eval, [ids, index, eval_set, correction, anon_id], [status], api_name="review_add_eval")

    canary_refresh = _render_canary(ctx)
    keys_refresh = _render_keys(ctx, anon_id)

    def refresh(dep, ad, fr, to, sh, jb, tx, anon, request: gr.Request):
        return (*load(dep, ad, fr, to, sh, jb, tx), *canary_refresh(), *keys_refresh[0](anon, request))

    refresh_outputs = outputs + canary_refresh.outputs + keys_refresh[1]
    return refresh, [*filters, anon_id], refresh_outputs


# ------------------------------------------------------------------ canary

def arm_rows(report) -> pd.DataFrame:
    from serving.canary import rate_text

    data = [[a.arm, a.model, a.requests, f"{rate_text(a.thumbs_up_rate, a.thumbs_up_interval)} of {a.thumbs}",
             rate_text(a.correction_rate, a.correction_interval)]
            for a in report.arms.values() if a.arm == "main" or report.canary]
    return pd.DataFrame(data, columns=ARM_COLUMNS)


def _render_canary(ctx: AppContext):
    from serving import canary as c
    from serving.deployments import GateRefused
    from store.deployments import list_deployments

    with gr.Accordion("Canary: try a second adapter on a share of a deployment's traffic", open=False,
                      elem_id="rv-canary"):
        gr.Markdown("A canary sends a share of a deployment's requests to another adapter (the same customer, by "
                    "the request's `user`, always gets the same one). Compare the arms below, then promote the "
                    "canary's adapter (through the same evaluation gate as the Evaluate tab's promotion) or end the "
                    "canary.", elem_classes=["tl-hint"])
        with gr.Row():
            dep = gr.Dropdown([], label="Deployment", elem_id="cn-deployment")
            model = gr.Dropdown([], label="Canary adapter", elem_id="cn-adapter", allow_custom_value=True)
            share = gr.Number(value=0.1, label="Share (0-1)", elem_id="cn-share", minimum=0, maximum=1)
            reason = gr.Textbox(label="Force reason (only to promote past a refusing gate; recorded)",
                                elem_id="cn-force-reason")
        with gr.Row():
            start_btn = gr.Button("Start canary", elem_id="cn-start", size="sm")
            promote_btn = gr.Button("Promote canary", elem_id="cn-promote", size="sm", variant="primary")
            end_btn = gr.Button("End canary", elem_id="cn-end", size="sm")
        state = gr.Markdown(elem_id="cn-state")
        arms = gr.Dataframe(pd.DataFrame([], columns=ARM_COLUMNS), interactive=False, elem_id="cn-arms",
                            elem_classes=["tl-table"])

    def show(name):
        with ctx.db() as db:
            names = [d["name"] for d in list_deployments(db)]
            adapters = [ctx.base_model] + [a["name"] for a in list_adapters(db, include_archived=False)]
            if not name or name not in names:
                name = names[0] if names else None
            if name is None:
                return (gr.update(choices=[], value=None), gr.update(choices=adapters),
                        "No deployments yet: promote an adapter to a deployment first.",
                        pd.DataFrame([], columns=ARM_COLUMNS))
            rep = c.report(db, name, base_model_name=ctx.base_model)
        text = (f"**{name}** serves {rep.main}; canary: {rep.share:.0%} to **{rep.canary}** since "
                f"{short_time(rep.started_at)} UTC" if rep.canary else f"**{name}** serves {rep.main}; no canary running.")
        return gr.update(choices=names, value=name), gr.update(choices=adapters), text, arm_rows(rep)

    outs = [dep, model, state, arms]

    def act(action, name, adapter_name, share_value, request: gr.Request, force_reason: str = ""):
        if not name:
            raise fail("Deployment: pick one")
        by = getattr(request, "username", None) or ""
        try:
            with ctx.db() as db:
                if action == "start":
                    if not adapter_name:
                        raise fail("Canary adapter: pick one")
                    c.start(db, name, adapter_name, share=float(share_value or 0), by=by, base_model_name=ctx.base_model)
                elif action == "end":
                    c.end(db, name)
                else:
                    change = c.promote_canary(db, name, by=by, base_model_name=ctx.base_model,
                                              force_reason=(force_reason or "").strip() or None)
                    gr.Info(f"{name} now answers with {change.to_target or ctx.base_model}"
                            + (" (forced past the gate, reason recorded)." if change.action == "force" else "."))
        except GateRefused as exc:
            rules = "; ".join(r.message for r in exc.decision.failing)
            raise fail(f"Not promoted: the gate refused it: {html.escape(rules)}. Evaluate it against the "
                       "deployment's adapter (Evaluate tab), or write a “Force reason” and press “Promote "
                       "canary” again to overrule the gate (the reason is recorded).") from None
        except c.CanaryError as exc:
            label = {"share": "Share", "adapter": "Canary adapter"}.get(exc.field, "Deployment")
            raise fail(f"{label}: {exc}") from None
        except ValueError as exc:
            raise fail(str(exc)) from None
        return show(name)

    dep.change(show, [dep], outs, api_visibility="private")
    def start(n, m, s, request: gr.Request):
        return act("start", n, m, s, request)

    def end(n, m, s, request: gr.Request):
        return act("end", n, m, s, request)

    def promote(n, m, s, why, request: gr.Request):
        return act("promote", n, m, s, request, force_reason=why)

    for button, fn, inputs in ((start_btn, start, [dep, model, share]), (end_btn, end, [dep, model, share]),
                               (promote_btn, promote, [dep, model, share, reason])):
        button.click(fn, inputs, outs, api_name=f"canary_{fn.__name__}")

    def refresh():
        return show(None)

    refresh.outputs = outs
    return refresh


# ------------------------------------------------------------------ API keys

def key_rows(rows: list[dict]) -> pd.DataFrame:
    data = [[k["name"] + (" (TUNELOOP_API_KEY)" if k["source"] == "env" else ""),
             f"revoked {short_time(k['revoked_at'])}" if k["revoked_at"] else "active", k["use_count"],
             short_time(k["last_used_at"]) if k["last_used_at"] else "-", short_time(k["created_at"])] for k in rows]
    return pd.DataFrame(data, columns=KEY_COLUMNS)


def _render_keys(ctx: AppContext, anon_id):
    with gr.Accordion("API keys for /v1 (admins)", open=False, elem_id="rv-keys-panel"):
        note = gr.Markdown(elem_classes=["tl-hint"], elem_id="ak-note")
        with gr.Row():
            name = gr.Textbox(label="Key name (what it is for)", elem_id="ak-name")
            create_btn = gr.Button("Create key", elem_id="ak-create", size="sm")
            revoke_btn = gr.Button("Revoke key", elem_id="ak-revoke", size="sm", variant="stop")
        shown = gr.Textbox(label="New key (shown once: copy it now)", interactive=False, elem_id="ak-key",
                           buttons=["copy"])
        table = gr.Dataframe(key_rows([]), interactive=False, elem_id="ak-table", elem_classes=["tl-table"])

    def listing(anon, request: gr.Request):
        if not is_admin(ctx, request):
            return "Only the administrators (TUNELOOP_ADMINS) manage API keys.", key_rows([])
        with ctx.db() as db:
            api_keys.sync_env_key(db, ctx.settings.api_key)
            rows = api_keys.list_keys(db)
        return ("Clients send a key as `Authorization: Bearer <key>`. A revoked key is refused at once.",
                key_rows(rows))

    def change(action, key_name, anon, request: gr.Request):
        if not is_admin(ctx, request):
            raise fail("Only the administrators (TUNELOOP_ADMINS) manage API keys.")
        by = current_user(request, anon)
        try:
            with ctx.db() as db:
                if action == "create":
                    key = api_keys.create_key(db, key_name, by=by)
                else:
                    api_keys.revoke_key(db, (key_name or "").strip(), by=by)
                    key = ""
        except api_keys.ApiKeyError as exc:
            raise fail(f"Key name: {exc}") from None
        return (key, *listing(anon, request))

    def create(n, a, request: gr.Request):
        return change("create", n, a, request)

    def revoke(n, a, request: gr.Request):
        return change("revoke", n, a, request)

    create_btn.click(create, [name, anon_id], [shown, note, table], api_visibility="private")
    revoke_btn.click(revoke, [name, anon_id], [shown, note, table], api_visibility="private")
    return listing, [note, table]
