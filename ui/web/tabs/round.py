"""The "next round" panel of the Feedback tab: preview and build the feedback dataset, then train on it.

The work is training.feedback_round's (the same as `tuneloop feedback build` and `feedback train`);
this module only turns its report into something a support lead reads and its refusals into
messages. Building writes a new dataset version; nothing is trained until "Train next round".

    .venv/bin/python -m pytest tests/test_web_round.py -q
"""

from __future__ import annotations

import html

import gradio as gr
import pandas as pd

from store.adapters import AdapterNotFound, list_adapters
from ui.text import method_choices
from ui.web.context import AppContext, current_user, fail, unexpected
from ui.web.tabs.train import FIELD_LABELS

METHOD_CHOICES = method_choices(auto=True)
SINCE_CHOICES = [("Since the last build", "last"), ("All ratings ever given", "all")]
LEFT_OUT_COLUMNS = ["Rating", "Kind", "Who", "Why it was left out"]
BASE_CHOICE = "__base__"
OPTION_LABELS = {"since": "Ratings", "replay_share": "Replay share", "dataset": "Dataset"}
PART_WORDS = {"sft": "answers to learn (SFT)", "kto": "thumbs for KTO", "dpo": "preference pairs (DPO)"}
DPO_PAIRS = ("each A/B vote with a winner gives one pair (the better answer over the other), each correction "
             "one (the corrected text over the answer it corrects); ties and “both bad” give none")
NEED_WORDS = {"sft": "answer(s) to learn (thumbs-up or corrections)", "kto_desirable": "thumbs-up",
              "kto_undesirable": "thumbs-down", "dpo": "preference pair(s) (A/B votes with a winner, or corrections)"}
METHOD_NAMES = {"sft": "SFT", "kto": "KTO", "dpo": "DPO"}


def shortfall_text(tried: dict, closest: str | None) -> str:
    """'Closest: **KTO**, 3 more ratings (1 thumbs-up, 2 thumbs-down). SFT: 2 more ...; DPO: 6 more ...'."""
    from training.feedback_round import shortfall

    def need(build) -> tuple[int, str]:
        s = shortfall(build)
        return sum(s.values()), ", ".join(f"{n} {NEED_WORDS[k]}" for k, n in s.items())

    lines = []
    order = sorted(tried, key=lambda m: (m != closest, need(tried[m])[0]))
    for m in order:
        total, what = need(tried[m])
        name = METHOD_NAMES.get(m, m.upper())
        lines.append(f"- {'closest: ' if m == closest else ''}**{name}** needs {total} more: {what}" if total else
                     f"- **{name}** has enough")
    return "\n".join(lines)


def start_choices(ctx: AppContext) -> tuple[list[tuple[str, str]], str]:
    """The 'continue from' options (newest adapter first, then the base model) and the default."""
    with ctx.db() as db:
        adapters = sorted(list_adapters(db, include_archived=False), key=lambda a: a["id"], reverse=True)
    choices = [(f"{a['name']} (newest)" if i == 0 else a["name"], a["name"]) for i, a in enumerate(adapters)]
    choices.append((f"The base model ({ctx.base_model})", BASE_CHOICE))
    return choices, choices[0][1]


def report_markdown(result) -> str:
    """A RoundBuild as a few lines: what the round will train on and where it comes from."""
    out = result.to_json()
    counts, r = out["counts"], out["ratings"]
    head = ("**Preview** (nothing written yet)" if result.version is None else
            f"**Built {html.escape(str(result.version))}**")
    start = html.escape(result.from_adapter) if result.from_adapter else "the base model"
    auto = " (chosen automatically)" if result.requested_method == "auto" else ""
    paragraphs = [f"{head}: method **{result.method.upper()}**{auto}, continuing from **{start}**.",
                  f"From {html.escape(result.build.scope)}: {r['read']} rating(s) read, {r['used']} used, "
                  f"{r['left_out']} left out."]
    items = []
    for part in result.method.split("+"):
        if part == "sft":
            extra = f" + {counts['replay']} replayed from earlier rounds" if counts["replay"] else ""
            items.append(f"- {counts['sft']} {PART_WORDS['sft']}{extra}")
        elif part == "kto":
            items.append(f"- {counts['kto']} {PART_WORDS['kto']}: {counts['kto_desirable']} good, "
                         f"{counts['kto_undesirable']} bad (weights {out['weights']['desirable']:.2g} / "
                         f"{out['weights']['undesirable']:.2g})")
        else:
            items.append(f"- {counts['dpo']} {PART_WORDS['dpo']}: {DPO_PAIRS}")
    paragraphs.append("\n".join(items))
    by_user = out["report"].get("used_by_user") or {}
    if by_user:
        paragraphs.append("Ratings used, by person: " +
                          ", ".join(f"{html.escape(k)} {v}" for k, v in sorted(by_user.items())))
    paragraphs.append("Press **Build dataset** to keep it." if result.version is None else
                      "Press **Train next round** to train on it, or build again after more ratings.")
    return "\n\n".join(paragraphs)


def left_out_frame(report: dict | None) -> pd.DataFrame:
    from training.feedback_dataset import REASONS

    rows = [[f"#{x['rating_id']}", x["kind"], x["user"] or "(anonymous)",
             REASONS.get(x["reason"], x["reason"]).capitalize() + (f" ({x['detail']})" if x.get("detail") else "")]
            for x in (report or {}).get("left_out", [])]
    return pd.DataFrame(rows, columns=LEFT_OUT_COLUMNS)


def build(ctx: AppContext, method: str, since: str, replay_share: float, start_from: str | None, user: str,
          *, dry_run: bool):
    """(report markdown, left-out table, version ref or None, train button update)."""
    from training.feedback_round import FeedbackOptionError, FeedbackRefused, build_round

    from_adapter = None if start_from in (None, "", BASE_CHOICE) else start_from
    try:
        result = build_round(ctx.settings, method=method or "auto", since="all" if since == "all" else None,
                             replay_share=float(replay_share), from_adapter=from_adapter, user=user,
                             dry_run=dry_run)
    except FeedbackRefused as exc:
        # Not an error window: the reason and what to collect stay on the page next to the report.
        report = exc.build.report if exc.build else None
        head = "**Preview: not enough ratings yet.**" if dry_run else "⚠️ **Not built: not enough ratings yet.**"
        if exc.tried:  # "automatic": how far every method is, the closest first
            text = (f"{head} No method has enough new ratings; here is how many more each needs:\n\n"
                    + shortfall_text(exc.tried, exc.method)
                    + f"\n\n*Preference pairs (DPO): {DPO_PAIRS}.*")
        else:
            text = f"{head} {html.escape(str(exc))}"
            if exc.method and "dpo" in exc.method:
                text += f"\n\n*Preference pairs (DPO): {DPO_PAIRS}.*"
        return text, left_out_frame(report), None, gr.update(interactive=False)
    except FeedbackOptionError as exc:
        raise fail(f"{OPTION_LABELS.get(exc.field, exc.field)}: {html.escape(exc.reason)}")
    except (ValueError, AdapterNotFound) as exc:
        raise fail(html.escape(str(exc)))
    except Exception as exc:  # noqa: BLE001
        raise unexpected("Building the feedback dataset", exc)
    if result.version is not None:
        gr.Info(f"Built {result.version}. Train the next round on it when you are ready.")
    ref = str(result.version) if result.version else None
    return report_markdown(result), left_out_frame(result.report), ref, gr.update(interactive=ref is not None)


def train(ctx: AppContext, ref: str | None) -> str:
    """Start the round on feedback version `ref`: its method and parent adapter come from the build."""
    from training.config import ConfigError

    if ctx.trainer is None:
        raise fail("Training is not available in this app.")
    if not ref:
        raise fail("Build the feedback dataset first.")
    try:
        run_id = ctx.trainer.start(dataset=ref)
    except ConfigError as exc:
        raise fail(f"{FIELD_LABELS.get(exc.field, exc.field)}: {html.escape(exc.reason)}. Nothing was started.")
    except Exception as exc:  # noqa: BLE001
        raise unexpected("Starting the next round", exc)
    gr.Info(f"Run {run_id} started on {ref}. Follow it in the Train tab.")
    return f"Run **{run_id}** is training on **{html.escape(ref)}**: follow it in the **Train** tab."


def render(ctx: AppContext, anon_id):
    """The panel (`anon_id`: the app's browser id, naming who builds without logins).

    Returns (refresh fn, inputs, outputs) for the adapter picker.
    """
    gr.Markdown("### Next training round\n"
                "Turn the ratings into the next dataset version, see what it holds, then train the next "
                "adapter on it, continuing from the current one.")
    with gr.Row():
        method = gr.Dropdown(METHOD_CHOICES, value="auto", label="Method", scale=3, elem_id="round-method",
                             info="SFT learns the liked and corrected answers; KTO and DPO learn from "
                                  "what people preferred. Automatic picks what the ratings support.")
        since = gr.Radio(SINCE_CHOICES, value="last", label="Ratings", scale=2, elem_id="round-since")
    with gr.Row():
        start_from = gr.Dropdown([], label="Continue from", scale=3, elem_id="round-from",
                                 info="The adapter the next round starts from: normally the newest.")
        replay = gr.Slider(0, 0.5, value=0.2, step=0.05, label="Replay share", scale=2, elem_id="round-replay",
                           info="Share of SFT examples taken from earlier rounds' data, so the new "
                                "adapter does not forget what the last one learned.")
    with gr.Row():
        preview_btn = gr.Button("Preview", scale=0, min_width=120, elem_id="round-preview")
        build_btn = gr.Button("Build dataset", variant="primary", scale=0, min_width=160, elem_id="round-build")
        train_btn = gr.Button("Train next round", variant="primary", scale=0, min_width=180, interactive=False,
                              elem_id="round-train")
    report = gr.Markdown(elem_id="round-report")
    with gr.Accordion("Ratings left out, and why", open=False):
        left_out = gr.Dataframe(pd.DataFrame([], columns=LEFT_OUT_COLUMNS), interactive=False, wrap=True,
                                max_height=260, elem_id="round-left-out", elem_classes=["tl-table"],
                                column_widths=["10%", "12%", "14%", "64%"])
    started = gr.Markdown(elem_id="round-started")
    built = gr.State(None)
    fields = [method, since, replay, start_from, anon_id]
    outputs = [report, left_out, built, train_btn]

    def make(dry_run: bool):
        def handler(m, s, r, f, anon, request: gr.Request = None):
            return build(ctx, m, s, r, f, current_user(request, anon), dry_run=dry_run)
        return handler

    preview_btn.click(make(True), fields, outputs, api_name="round_preview")
    build_btn.click(make(False), fields, outputs, api_name="round_build", concurrency_limit=1,
                    concurrency_id="round-build")
    train_btn.click(lambda ref: (train(ctx, ref), gr.update(interactive=False)), [built], [started, train_btn],
                    api_name="round_train", concurrency_limit=1, concurrency_id="train-start")

    def refresh(current_from):
        choices, default = start_choices(ctx)
        keep = current_from if current_from in {v for _, v in choices} else default
        return gr.update(choices=choices, value=keep)

    return refresh, [start_from], [start_from]
