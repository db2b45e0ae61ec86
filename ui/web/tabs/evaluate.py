"""The Evaluate tab: eval sets, evaluations with progress, every run's figures side by side, the per-item view,
the leaderboard, the learning curve, and deployments (promote through the gate, force with a reason, roll back).

The rules live below the tab: eval sets in training.evalsets, runs in serving.evaluation.runner,
the gate and deployments in serving.deployments, the curve in serving.evaluation.curve. This tab
reads inputs, calls them and renders (ui.web.eval_views). An evaluation runs on a worker thread
(execute_eval_run opens its own database connection) and writes each item to the store; a gr.Timer
reads the store back, so reloading the page shows the run where it is and loses nothing.

    .venv/bin/python -m pytest tests/test_web_evaluate.py -q
"""

from __future__ import annotations

import html
import logging
import threading
from pathlib import Path

import gradio as gr
import pandas as pd

from serving.evaluation.runner import EvalError, EvalSettings
from store import evaluations as ev
from store.adapters import list_adapters
from store.deployments import list_deployments
from store.runs import list_runs
from ui.web import eval_views as views
from ui.web.context import AppContext, current_user, fail, unexpected
from ui.web.html import progress_bar_html

log = logging.getLogger("tuneloop.ui")

TICK_S = 2.0
LATEST = "latest"
DEFAULT_BUDGET = 20
SOURCES = [("Held out by a training run", "heldout"), ("An uploaded file (any import format)", "file"),
           ("Corrected answers from ratings", "corrections"), ("Written here by hand", "manual")]
CHECK_KINDS = [("must mention", "must_mention"), ("must not mention", "must_not_mention"),
               ("must match (regular expression)", "regex")]
CHECK_ROWS = 3
SHOWN_SET_ITEMS = 50

_stops: dict[int, threading.Event] = {}  # run id -> its Stop button's flag, while its thread runs
_embedders: dict[str, object] = {}
_embedder_lock = threading.Lock()


# ------------------------------------------------------------------ eval sets

def parse_check_rows(rows: list[tuple[str, str, str]]) -> list[dict]:
    """The check rows of the form -> validated checks (store.evaluations.normalise_checks); blank rows are skipped.

    Several phrases in one value are separated by ';' (any one passes must-mention; none may appear
    for must-not-mention); a regular expression is kept whole.
    """
    checks = []
    for i, (name, kind, value) in enumerate(rows, 1):
        name, value = (name or "").strip(), (value or "").strip()
        if not name and not value:
            continue
        if not name or not value:
            raise fail(f"Check {i}: give both a name (what it tests, e.g. “states the 30-day refund rule”) and "
                       "the words to look for. Nothing was saved.")
        values = [value] if kind == "regex" else [v.strip() for v in value.split(";") if v.strip()]
        checks.append({"name": name, "kind": kind, "value": values})
    try:
        return ev.normalise_checks(checks, "checks")
    except ev.InvalidCheck as exc:
        raise fail(f"Check not valid: {html.escape(str(exc))}. Nothing was saved.")


def heldout_run_choices(db) -> list[tuple[str, str]]:
    """Finished training runs that held conversations out (the only ones with a held-out split)."""
    out = []
    for r in list_runs(db, status="completed", limit=100):
        fraction = float((r.get("config") or {}).get("eval_fraction") or 0)
        if fraction > 0 and (r.get("config") or {}).get("dataset_version_id"):
            made = f" · made {r['adapter_name']}" if r.get("adapter_name") else ""
            out.append((f"Run {r['id']} · {r['config'].get('dataset', '?')} · {fraction:.0%} held out{made}",
                        str(r["id"])))
    return out


def build_set(ctx: AppContext, user: str, name: str, source: str, run_id: str | None, file, question: str,
              reference: str, *check_fields) -> str:
    """Write a new eval set version from the chosen source; returns what was made. Refusals write nothing."""
    from training import evalsets
    from store.runs import RunNotFound

    try:
        name = ev.validate_set_name(name)
    except ValueError:
        raise fail("Eval set name: use 1–64 characters without '@', slashes or line breaks, e.g. “refunds”.")
    rows = [tuple(check_fields[i:i + 3]) for i in range(0, len(check_fields), 3)]
    checks = parse_check_rows(rows)
    report = None
    try:
        with ctx.db() as db:
            if source == "heldout":
                if not run_id:
                    raise fail("Pick the training run whose held-out conversations to use.")
                ref = evalsets.build_from_run(db, name, int(run_id), created_by=user, checks=checks)
            elif source == "file":
                path = getattr(file, "name", file)
                if not path:
                    raise fail("Upload a file of conversations first.")
                ref, report = evalsets.build_from_file(db, name, Path(path), created_by=user, checks=checks)
            elif source == "corrections":
                ref = evalsets.build_from_corrections(db, name, created_by=user, checks=checks)
            elif source == "manual":
                if not (question or "").strip():
                    raise fail("Write the customer's question first.")
                item = evalsets.manual_item(question.strip(), reference=(reference or "").strip() or None,
                                            checks=checks)
                ref = evalsets.build_manual(db, name, [item], created_by=user)
            else:
                raise fail("Pick where the items come from.")
            count = next((v["items"] for s in ev.list_eval_sets(db) for v in s["versions"] if v["id"] == ref.id), 0)
    except gr.Error:
        raise
    except (evalsets.NoEvalItems, ev.InvalidCheck, RunNotFound) as exc:
        raise fail(f"No eval set was made: {html.escape(str(exc))}.")
    except ValueError as exc:  # a bad item (empty question) or an import file that cannot be read
        raise fail(f"No eval set was made: {html.escape(str(exc))}.")
    except Exception as exc:  # noqa: BLE001
        raise unexpected("Building the eval set", exc)
    extra = ""
    if report:
        extra = (f" from {html.escape(report['file'])} ({html.escape(str(report['format']))}; "
                 f"{report['rejected']} rejected, {report['without_answer']} without an answer)")
    gr.Info(f"Made eval set {ref} ({count} items).")
    return (f"Made **{html.escape(str(ref))}**: {count} item(s){extra}. Its items are left out of every training "
            "run from now on, so an adapter is never trained on what it is judged on.")


def set_items(ctx: AppContext, ref: str | None) -> str:
    if not ref:
        return '<div class="tl-empty">No eval set yet: build one above.</div>'
    with ctx.db() as db:
        try:
            version = ev.resolve_set(db, ref)
        except (ev.EvalSetNotFound, ValueError) as exc:
            return f'<div class="tl-empty">{html.escape(str(exc))}</div>'
        items = list(ev.iter_eval_items(db, version.id, limit=SHOWN_SET_ITEMS))
        total = next((v["items"] for s in ev.list_eval_sets(db) for v in s["versions"] if v["id"] == version.id),
                     len(items))
    return views.set_items_html(str(version), items, total)


# ------------------------------------------------------------------ running an evaluation

def embedder_for(ctx: AppContext):
    """all-MiniLM-L6-v2, loaded once per app; None when `tuneloop setup` has not extracted it (the run says so)."""
    from serving.evaluation.embedding import Embedder, EmbeddingModelMissing

    key = str(ctx.settings.embedding_model_dir)
    with _embedder_lock:
        if key not in _embedders:
            try:
                _embedders[key] = Embedder(key)
            except EmbeddingModelMissing as exc:
                log.warning("evaluation without reference similarity: %s", exc)
                return None
        return _embedders[key]


def baseline_choices(db, base_name: str) -> list[tuple[str, str]]:
    out = [("Its parent (the adapter it continued from)", "parent"),
           (f"The base model ({base_name})", "base")]
    for d in list_deployments(db):
        out.append((f"Deployment {d['name']} (now {d['target'] or base_name})", f"deployment {d['name']}"))
    out += [(f"Adapter {a['name']}", a["name"]) for a in list_adapters(db, include_archived=False)]
    return out


def start_eval(ctx: AppContext, user: str, candidate: str | None, against: str | None, eval_set: str | None,
               judge_url: str, judge_model: str, judge_key: str, budget, on_judge_error: str) -> int:
    """Plan the run (refusals raise gr.Error, nothing queued) and start it on a worker thread; returns its id."""
    from serving.evaluation.baseline import UnknownBaseline, resolve_baseline
    from serving.evaluation.judge import JudgeConfig
    from serving.evaluation.runner import plan_eval_run

    if not candidate:
        raise fail("Pick the adapter to evaluate (train one in the Train tab first).")
    if not eval_set:
        raise fail("Pick an eval set (build one in “Eval sets” first).")
    judge = None
    if (judge_url or "").strip() or (judge_model or "").strip():
        if not (judge_url or "").strip() or not (judge_model or "").strip():
            raise fail("Judge: give both the endpoint URL and the model name, or leave both empty to run without "
                       "a judge.")
        judge = JudgeConfig(base_url=judge_url.strip(), model=judge_model.strip(), api_key=(judge_key or "").strip())
    items = int(budget or 0)
    if items < 0:
        raise fail("Items to evaluate: 0 (all of them) or more.")
    settings = EvalSettings(max_tokens=ctx.settings.eval_max_tokens, on_judge_error=on_judge_error or "continue",
                            max_items=items or None)
    with ctx.db() as db:
        try:
            baseline = resolve_baseline(db, candidate, against, base_name=ctx.base_model)
        except UnknownBaseline as exc:
            raise fail(f"Compare against: {html.escape(str(exc))}.")
        if baseline == candidate:
            raise fail(f"{html.escape(candidate)} would be compared with itself: pick another model to compare "
                       "against.")
        try:
            run_id = plan_eval_run(db, candidate=candidate, baseline=baseline, eval_set=eval_set, judge=judge,
                                   settings=settings, created_by=user)
        except (ev.EvalSetNotFound, EvalError, ValueError) as exc:
            raise fail(f"Not started: {html.escape(str(exc))}.")
    stop = threading.Event()
    _stops[run_id] = stop
    threading.Thread(target=run_in_background, args=(ctx, run_id, judge.api_key if judge else "", stop),
                     name=f"eval-{run_id}", daemon=True).start()
    return run_id


def run_in_background(ctx: AppContext, run_id: int, judge_key: str, stop: threading.Event) -> None:
    """The worker thread: load the two models on the server if needed, then run the evaluation to its end.

    Its outcome (done, stopped, failed and why) is in the store; the tab's timer shows it.
    """
    from serving.evaluation.runner import execute_eval_run, fail_unstarted
    from serving.fleet import model_server_url

    try:
        with ctx.db() as db:
            run = ev.get_eval_run(db, run_id)
        ensure_loaded(ctx, [run["candidate"], run["baseline"]])
        execute_eval_run(ctx.settings.db_path, run_id, base_url=model_server_url(ctx.settings, first_up=True),
                         judge_api_key=judge_key, embedder=embedder_for(ctx), should_stop=stop.is_set)
    except EvalError as exc:  # recorded on the run by the runner
        log.info("eval run %d ended: %s", run_id, exc)
    except Exception as exc:  # noqa: BLE001 - the thread must not die silently, nor leave the run queued
        log.exception("eval run %d", run_id)
        fail_unstarted(ctx.settings.db_path, run_id, exc)
    finally:
        _stops.pop(run_id, None)


def ensure_loaded(ctx: AppContext, names: list[str]) -> None:
    """Hot-load adapters the server does not serve yet; a failure is left to the run, which says which model."""
    try:
        statuses = {m.name: m for m in ctx.server.models(include_archived=False)}
    except Exception:  # noqa: BLE001
        return
    for name in names:
        st = statuses.get(name)
        if st is not None and st.kind == "adapter" and st.status != "loaded":
            try:
                ctx.server.load(name)
            except Exception as exc:  # noqa: BLE001
                log.warning("could not load %s for an evaluation: %s", name, exc)


def stop_eval(ctx: AppContext, selected: str | None) -> None:
    with ctx.db() as db:
        run = pick_run(db, selected)
    if run is None or run["status"] not in ("queued", "running"):
        raise fail("There is no running evaluation to stop here.")
    flag = _stops.get(run["id"])
    if flag is None:
        raise fail("This evaluation is run by the server's own queue (automatic evaluations), not this page: it "
                   "cannot be stopped from here.")
    flag.set()
    gr.Info(f"Evaluation {run['id']} stops after the items in flight; what is done is kept.")


# ------------------------------------------------------------------ reading runs

def pick_run(db, selected: str | None) -> dict | None:
    """The chosen run, or for 'latest' the newest running one, else the newest."""
    if selected and selected != LATEST:
        try:
            return ev.get_eval_run(db, int(selected))
        except (ev.EvalRunNotFound, ValueError):
            return None
    for status in ("running", None):
        runs = ev.list_eval_runs(db, status=status, limit=1)
        if runs:
            return runs[0]
    return None


def run_choices(db) -> list[tuple[str, str]]:
    return [("Latest evaluation (follows new ones)", LATEST)] + [
        (views.run_label(r), str(r["id"])) for r in ev.list_eval_runs(db, limit=100)]


def poll(ctx: AppContext, selected: str | None, item_filter: str, last_sig):
    """Everything the run panel shows, fresh from the store (the timer calls it every couple of seconds)."""
    from serving.evaluation.summary import EvalSummary

    with ctx.db() as db:
        run = pick_run(db, selected)
        if run is None:
            sig = "empty"
            if sig == last_sig:
                return (gr.skip(),) * 6 + (sig,)
            return ("No evaluation yet: pick an adapter, what to compare it with and an eval set, then press "
                    "“Run evaluation”.", progress_bar_html(0, "No evaluation"), views.figures_frame(None),
                    '<div class="tl-empty">The answers of both models, item by item, show here.</div>',
                    gr.update(interactive=False), views.runs_frame([]), sig)
        sig = f"{run['id']}:{run['status']}:{run['done']}:{item_filter}"
        if sig == last_sig:
            return (gr.skip(),) * 6 + (sig,)
        rows = ev.item_results(db, run["id"])
        runs = ev.list_eval_runs(db, limit=100)
    summary = EvalSummary.from_json(run["summary"]) if run.get("summary") else None
    fraction, label = views.progress_of(run)
    return (views.run_status_md(run, summary), progress_bar_html(fraction, label), views.figures_frame(summary),
            views.items_html(run, rows, item_filter or "all"),
            gr.update(interactive=run["status"] in ("queued", "running") and run["id"] in _stops),
            views.runs_frame(runs), sig)


# ------------------------------------------------------------------ leaderboard and learning curve

def leaderboard(ctx: AppContext, sources: list[str] | None):
    from serving.evaluation.board import store_leaderboard

    sources = list(sources or [])
    with ctx.db() as db:
        ratings = store_leaderboard(db, sources=sources) if sources else []
    return views.board_frame(ratings), views.board_note(ratings, sources)


def lineage_choices(db) -> list[tuple[str, str]]:
    out = [(f"Deployment {d['name']}", f"deployment:{d['name']}") for d in list_deployments(db)]
    families = sorted({a["family"] for a in list_adapters(db) if a.get("family")})
    return out + [(f"Adapter family {f}", f"family:{f}") for f in families]


def curve(ctx: AppContext, lineage: str | None):
    from serving.evaluation.curve import curve_points, deployment_chain, family_chain

    if not lineage:
        return views.curve_frame([]), views.curve_note([], [])
    kind, _, name = lineage.partition(":")
    with ctx.db() as db:
        chain = (deployment_chain(db, name, base_name=ctx.base_model) if kind == "deployment" else
                 family_chain(db, name, base_name=ctx.base_model))
        points = curve_points(chain, ev.list_eval_runs(db, status="done"))
    return views.curve_frame(points), views.curve_note(chain, points)


# ------------------------------------------------------------------ deployments

def deployment_tables(ctx: AppContext):
    with ctx.db() as db:
        rows = list_deployments(db)
    return views.deployments_frame(rows, ctx.base_model), views.history_frame(rows, ctx.base_model)


def promote(ctx: AppContext, user: str, adapter: str | None, to: str | None, eval_run: str | None,
            force_reason: str | None = None) -> str:
    """Promote through the gate; returns the gate panel (HTML). A refusal shows every failing rule with its
    figures (and a gr.Warning); a forced promotion needs a reason, which is recorded."""
    from serving.deployments import DeploymentError, GateRefused
    from serving.deployments import promote as do_promote

    if not adapter:
        raise fail("Pick the adapter to put live.")
    to = (to or "").strip()
    if not to:
        raise fail("Deployment: give the stable name your bot uses, e.g. “support”.")
    if force_reason is not None and not force_reason.strip():
        raise fail("Forcing past the gate needs a reason (it is kept in the history): write why, then press "
                   "“Force promote” again.")
    run_id = int(eval_run) if eval_run not in (None, "", LATEST) else None
    with ctx.db() as db:
        try:
            change = do_promote(db, adapter, to=to, by=user, base_model_name=ctx.base_model, eval_run_id=run_id,
                                force_reason=force_reason)
        except GateRefused as exc:
            current = next((d["target"] for d in list_deployments(db) if d["name"] == to), None)
            gr.Warning(f"The gate refused {html.escape(adapter)}: see the failing rules below.")
            return views.gate_html(exc.decision, candidate=adapter, baseline=current or ctx.base_model, refused=True)
        except (DeploymentError, LookupError) as exc:
            raise fail(f"Not promoted: {html.escape(str(exc))}.")
    was = change.from_target or ctx.base_model
    now = change.to_target or ctx.base_model
    verb = "forced past the gate (reason recorded)" if change.action == "force" else "promoted"
    gr.Info(f"{to} now answers with {now}.")
    head = (f'<div id="ev-deploy-done"><b>{html.escape(to)}</b>: {html.escape(was)} → <b>{html.escape(now)}</b>, '
            f"{verb} by {html.escape(user)}. API clients asking for “{html.escape(to)}” get it from their next "
            "request.</div>")
    if change.decision is None:
        return head
    return head + views.gate_html(change.decision, candidate=now, baseline=was, refused=not change.decision.passed)


def rollback(ctx: AppContext, user: str, name: str | None) -> str:
    from serving.deployments import DeploymentError
    from serving.deployments import rollback as do_rollback

    if not name:
        raise fail("Pick the deployment to roll back.")
    with ctx.db() as db:
        try:
            change = do_rollback(db, name, by=user, base_model_name=ctx.base_model)
        except DeploymentError as exc:
            raise fail(f"Not rolled back: {html.escape(str(exc))}.")
    now = change.to_target or ctx.base_model
    gr.Info(f"{name} answers with {now} again.")
    return (f'<div id="ev-deploy-done"><b>{html.escape(name)}</b>: {html.escape(change.from_target or ctx.base_model)}'
            f" → <b>{html.escape(now)}</b> (rolled back by {html.escape(user)}), from the next request.</div>")


def eval_run_choices(db, adapter: str | None, deployment: str | None, base_name: str) -> list[tuple[str, str]]:
    """For the promote form: 'the newest finished run of this pair', then that pair's finished runs."""
    out = [("Newest finished evaluation of this adapter against what the deployment serves now", LATEST)]
    if adapter:
        current = next((d["target"] for d in list_deployments(db) if d["name"] == (deployment or "").strip()), None)
        baseline = current or base_name
        out += [(views.run_label(r), str(r["id"]))
                for r in ev.list_eval_runs(db, candidate=adapter, baseline=baseline, status="done", limit=20)]
    return out


# ------------------------------------------------------------------ layout

def form_state(ctx: AppContext):
    with ctx.db() as db:
        sets = ev.list_eval_sets(db)
        refs = [v["ref"] for s in sets for v in s["versions"]]
        adapters = [a["name"] for a in list_adapters(db, include_archived=False)]
        against = baseline_choices(db, ctx.base_model)
        heldout = heldout_run_choices(db)
        runs = run_choices(db)
        deployments = [d["name"] for d in list_deployments(db)]
        lineages = lineage_choices(db)
    return {"sets": sets, "refs": refs, "adapters": adapters, "against": against, "heldout": heldout, "runs": runs,
            "deployments": deployments, "lineages": lineages}


def _keep(value, choices, default=None):
    values = [c[1] if isinstance(c, tuple) else c for c in choices]
    return value if value in values else (default if default is not None else (values[0] if values else None))


def render(ctx: AppContext, anon_id):
    gr.Markdown("Did this round help, and is it safe to put in front of customers? An **evaluation** asks two "
                "models the same held-out questions and measures both answers; the **gate** decides from those "
                "figures whether an adapter may go live under a **deployment** name your bot uses.",
                elem_classes=["tl-hint"])
    with gr.Tabs():
        with gr.Tab("Run and results", id="ev-run-tab"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=4, min_width=320):
                    gr.Markdown("### New evaluation")
                    candidate = gr.Dropdown([], label="Adapter to evaluate", elem_id="ev-candidate")
                    against = gr.Dropdown([], label="Compare against", elem_id="ev-against",
                                          info="Usually its parent (the base model for a first adapter): did "
                                               "this round help?")
                    eval_set = gr.Dropdown([], label="Eval set", elem_id="ev-set",
                                           info="Questions neither model was trained on.")
                    budget = gr.Number(DEFAULT_BUDGET, label="Items to evaluate (0 = all)", precision=0, minimum=0,
                                       elem_id="ev-budget",
                                       info="The first items of the set. On a CPU, 20 items take a few minutes.")
                    with gr.Accordion("Judge (optional): a bigger model that says which answer is better",
                                      open=False, elem_id="ev-judge-box"):
                        judge_url = gr.Textbox(label="Judge endpoint URL", placeholder="http://gpu-box:8000/v1",
                                               elem_id="ev-judge-url",
                                               info="Any OpenAI-compatible server: a bigger local vLLM, a hosted API.")
                        judge_model = gr.Textbox(label="Judge model", placeholder="qwen2.5-32b-instruct",
                                                 elem_id="ev-judge-model")
                        judge_key = gr.Textbox(label="API key (if the endpoint needs one)", type="password",
                                               elem_id="ev-judge-key", info="Used for this run only, never stored.")
                        on_error = gr.Radio([("keep going, and note it on the item", "continue"),
                                             ("stop, and keep the results so far", "stop")], value="continue",
                                            label="If the judge fails or answers nonsense", elem_id="ev-on-error")
                    run_btn = gr.Button("Run evaluation", variant="primary", elem_id="ev-run")
                with gr.Column(scale=7, min_width=420):
                    gr.Markdown("### Evaluation")
                    with gr.Row():
                        picked = gr.Dropdown([(LATEST, LATEST)], value=LATEST, label="Show", scale=4,
                                             elem_id="ev-picked")
                        stop_btn = gr.Button("Stop", variant="stop", scale=0, min_width=100, interactive=False,
                                             elem_id="ev-stop")
                    status = gr.Markdown(elem_id="ev-status")
                    bar = gr.HTML(progress_bar_html(0, ""), elem_id="ev-progress")
                    figures = gr.Dataframe(views.figures_frame(None), interactive=False, wrap=True,
                                           label="Figures side by side", elem_id="ev-figures",
                                           elem_classes=["tl-table"], column_widths=["46%", "27%", "27%"])
            gr.Markdown("### Item by item: why")
            item_filter = gr.Dropdown(views.ITEM_FILTERS, value="all", label="Show", elem_id="ev-item-filter",
                                      scale=0, min_width=360)
            items = gr.HTML(elem_id="ev-items", elem_classes=["tl-scroll"])
            gr.Markdown("### Every evaluation (candidate / baseline)")
            runs_table = gr.Dataframe(views.runs_frame([]), interactive=False, wrap=True, max_height=360,
                                      elem_id="ev-runs", elem_classes=["tl-table"],
                                      column_widths=["4%", "7%", "9%", "10%", "8%", "5%", "7%", "7%", "7%", "7%",
                                                     "6%", "6%", "9%", "8%"])
        with gr.Tab("Eval sets", id="ev-sets-tab"):
            sets_table = gr.Dataframe(views.sets_frame([]), interactive=False, wrap=True, max_height=260,
                                      elem_id="ev-sets", elem_classes=["tl-table"])
            with gr.Row(equal_height=False):
                with gr.Column(scale=5, min_width=340):
                    gr.Markdown("### Build an eval set\nA new version is added when the name exists; versions never "
                                "change, and their items are never trained on.")
                    set_name = gr.Textbox(label="Eval set name", placeholder="refunds", elem_id="ev-set-name")
                    source = gr.Radio(SOURCES, value="manual", label="Items from", elem_id="ev-source")
                    with gr.Group(visible=False) as heldout_box:
                        heldout_run = gr.Dropdown([], label="Training run", elem_id="ev-heldout-run",
                                                  info="Exactly the conversations it held out, cut at the last answer.")
                    with gr.Group(visible=False) as file_box:
                        upload = gr.File(label="Conversation file (JSONL, CSV, transcripts, helpdesk exports)",
                                         file_count="single", elem_id="ev-file")
                    with gr.Group(visible=False) as corrections_box:
                        gr.Markdown("Every corrected answer from Chat and Compare becomes an item: the "
                                    "conversation up to it, and the correction as the reference.")
                    with gr.Group(visible=True) as manual_box:
                        question = gr.Textbox(label="Customer's question", lines=2, elem_id="ev-question")
                        reference = gr.Textbox(label="Reference answer (optional)", lines=2, elem_id="ev-reference",
                                               info="A good answer to compare with. Without one, only checks and "
                                                    "the judge measure it.")
                    gr.Markdown("**Checks (optional)**: each has a name people read in the results. Separate "
                                "alternatives with “;”. They apply to every item this build adds.",
                                elem_classes=["tl-hint"])
                    check_fields = []
                    for i in range(CHECK_ROWS):
                        with gr.Row():
                            check_fields += [
                                gr.Textbox(show_label=i == 0, label="Check name", scale=3,
                                           placeholder="states the 30-day refund rule" if i == 0 else "",
                                           elem_id=f"ev-check-name-{i}"),
                                gr.Dropdown(CHECK_KINDS, value="must_mention", show_label=i == 0, label="Kind",
                                            scale=2, elem_id=f"ev-check-kind-{i}"),
                                gr.Textbox(show_label=i == 0, label="Words or pattern", scale=3,
                                           placeholder="30 days; 30-day" if i == 0 else "",
                                           elem_id=f"ev-check-value-{i}")]
                    build_btn = gr.Button("Build eval set", variant="primary", elem_id="ev-build")
                    build_status = gr.Markdown(elem_id="ev-build-status")
                with gr.Column(scale=6, min_width=400):
                    gr.Markdown("### Items")
                    view_set = gr.Dropdown([], label="Eval set version", elem_id="ev-view-set")
                    set_view = gr.HTML(elem_id="ev-set-items", elem_classes=["tl-scroll"])
        with gr.Tab("Leaderboard and progress", id="ev-board-tab") as board_tab:
            gr.Markdown("### Learning curve: the main figures round by round")
            lineage = gr.Dropdown([], label="Along", elem_id="ev-lineage",
                                  info="A deployment's successive models, or an adapter family's rounds.")
            plot = gr.LinePlot(views.curve_frame([]), x="round", y="value", color="metric",
                               label="Higher is better, except invented links/e-mails/phones", show_label=True,
                               x_title="round · model", y_title="share of answers (or score)",
                               color_title="figure", y_lim=[0, 1], sort="x", tooltip="all", elem_id="ev-curve")
            curve_md = gr.Markdown(elem_id="ev-curve-note")
            gr.Markdown("### Leaderboard")
            board_sources = gr.CheckboxGroup([("People's A/B votes", "people"), ("Judge verdicts", "judge")],
                                             value=["people", "judge"], label="Counting", elem_id="ev-board-sources")
            board_md = gr.Markdown(elem_id="ev-board-note", elem_classes=["tl-hint"])
            board = gr.Dataframe(views.board_frame([]), interactive=False, wrap=True, max_height=360,
                                 elem_id="ev-board", elem_classes=["tl-table"])
        with gr.Tab("Deployments", id="ev-deploy-tab"):
            gr.Markdown("A deployment is a stable model name (e.g. `support`) your bot sends to the API. Promoting "
                        "points it at an adapter, if that adapter's evaluation against what the deployment serves now "
                        "passes the gate. A rollback returns to the previous model. Both reach the next request.",
                        elem_classes=["tl-hint"])
            deploy_table = gr.Dataframe(views.deployments_frame([], ""), interactive=False, wrap=True,
                                        max_height=240, elem_id="ev-deployments", elem_classes=["tl-table"])
            with gr.Row(equal_height=False):
                with gr.Column(scale=6, min_width=360):
                    gr.Markdown("### Promote")
                    with gr.Row():
                        promote_adapter = gr.Dropdown([], label="Adapter", elem_id="ev-promote-adapter")
                        promote_to = gr.Dropdown([], label="Deployment", allow_custom_value=True,
                                                 elem_id="ev-promote-to",
                                                 info="Pick one, or type a new name (e.g. support).")
                    promote_run = gr.Dropdown([], label="Evaluation the gate reads", elem_id="ev-promote-run")
                    promote_btn = gr.Button("Promote through the gate", variant="primary", elem_id="ev-promote")
                    with gr.Accordion("Force past the gate (recorded with your reason)", open=False,
                                      elem_id="ev-force-box"):
                        force_reason = gr.Textbox(label="Reason", elem_id="ev-force-reason",
                                                  placeholder="hotfix for the outage FAQ; approved by Ana")
                        force_btn = gr.Button("Force promote", variant="stop", elem_id="ev-force")
                with gr.Column(scale=4, min_width=280):
                    gr.Markdown("### Roll back")
                    rollback_to = gr.Dropdown([], label="Deployment", elem_id="ev-rollback-name")
                    rollback_btn = gr.Button("Roll back to the previous model", elem_id="ev-rollback")
            gate_panel = gr.HTML(elem_id="ev-gate")
            gr.Markdown("### History")
            history_table = gr.Dataframe(views.history_frame([], ""), interactive=False, wrap=True, max_height=300,
                                         elem_id="ev-history", elem_classes=["tl-table"])

    sig = gr.State(None)
    timer = gr.Timer(TICK_S)
    poll_outputs = [status, bar, figures, items, stop_btn, runs_table, sig]

    timer.tick(lambda s, f, last: poll(ctx, s, f, last), [picked, item_filter, sig], poll_outputs,
               show_progress="hidden", api_visibility="private")
    picked.change(lambda s, f: poll(ctx, s, f, None), [picked, item_filter], poll_outputs, show_progress="hidden")
    item_filter.change(lambda s, f: poll(ctx, s, f, None), [picked, item_filter], poll_outputs,
                       show_progress="hidden")

    def do_run(cand, ag, es, ju, jm, jk, bud, oe, anon, request: gr.Request):
        run_id = start_eval(ctx, current_user(request, anon), cand, ag, es, ju, jm, jk, bud, oe)
        gr.Info(f"Evaluation {run_id} started: both models answer every item; this page follows it.")
        with ctx.db() as db:
            choices = run_choices(db)
        return gr.update(choices=choices, value=str(run_id)), *poll(ctx, str(run_id), "all", None)

    run_btn.click(do_run, [candidate, against, eval_set, judge_url, judge_model, judge_key, budget, on_error, anon_id],
                  [picked, *poll_outputs], api_name="eval_run", concurrency_limit=2, concurrency_id="eval-start")
    stop_btn.click(lambda s: stop_eval(ctx, s), [picked], None, api_name="eval_stop")

    # eval sets
    def on_source(src):
        return [gr.update(visible=src == k) for k in ("heldout", "file", "corrections", "manual")]

    source.change(on_source, [source], [heldout_box, file_box, corrections_box, manual_box], show_progress="hidden")

    assert CHECK_ROWS == 3, "do_build names each check field"

    def do_build(name, src, run_id, file, q, ref, n0, k0, v0, n1, k1, v1, n2, k2, v2, anon, request: gr.Request):
        message = build_set(ctx, current_user(request, anon), name, src, run_id, file, q, ref,
                            n0, k0, v0, n1, k1, v1, n2, k2, v2)
        state = form_state(ctx)
        newest = next((s["versions"][0]["ref"] for s in state["sets"] if s["name"] == name.strip()), None)
        return (message, views.sets_frame(state["sets"]), gr.update(choices=state["refs"], value=newest),
                gr.update(choices=state["refs"], value=newest), set_items(ctx, newest), "", "")

    build_btn.click(do_build, [set_name, source, heldout_run, upload, question, reference, *check_fields, anon_id],
                    [build_status, sets_table, view_set, eval_set, set_view, question, reference],
                    api_name="eval_set_build", concurrency_limit=1, concurrency_id="eval-set-build")
    view_set.change(lambda ref: set_items(ctx, ref), [view_set], [set_view], show_progress="hidden")

    # leaderboard and curve
    board_sources.change(lambda s: leaderboard(ctx, s), [board_sources], [board, board_md], show_progress="hidden")
    # The bootstrap fit takes seconds for thousands of comparisons: only when someone opens this part.
    board_tab.select(lambda s: leaderboard(ctx, s), [board_sources], [board, board_md], show_progress="hidden",
                     api_visibility="private")
    lineage.change(lambda x: curve(ctx, x), [lineage], [plot, curve_md], show_progress="hidden")

    # deployments
    def refresh_run_choices(adapter, to, current):
        with ctx.db() as db:
            choices = eval_run_choices(db, adapter, to, ctx.base_model)
        return gr.update(choices=choices, value=_keep(current, choices, LATEST))

    for box in (promote_adapter, promote_to):
        box.change(refresh_run_choices, [promote_adapter, promote_to, promote_run], [promote_run],
                   show_progress="hidden")

    def after_change(panel, name):
        deployments, history = deployment_tables(ctx)
        with ctx.db() as db:
            names = [d["name"] for d in list_deployments(db)]
            lineages = lineage_choices(db)
        picked = name if name in names else gr.skip()
        return (panel, deployments, history, gr.update(choices=names), gr.update(choices=names, value=picked),
                gr.update(choices=lineages))

    deploy_outputs = [gate_panel, deploy_table, history_table, promote_to, rollback_to, lineage]

    def do_promote(adapter, to, run, anon, request: gr.Request):
        return after_change(promote(ctx, current_user(request, anon), adapter, to, run), (to or "").strip())

    def do_force(adapter, to, run, reason, anon, request: gr.Request):
        return after_change(promote(ctx, current_user(request, anon), adapter, to, run, force_reason=reason or ""),
                            (to or "").strip())

    def do_rollback(name, anon, request: gr.Request):
        return after_change(rollback(ctx, current_user(request, anon), name), name)

    promote_btn.click(do_promote, [promote_adapter, promote_to, promote_run, anon_id], deploy_outputs,
                      api_name="deploy_promote", concurrency_limit=1, concurrency_id="deploy")
    force_btn.click(do_force, [promote_adapter, promote_to, promote_run, force_reason, anon_id], deploy_outputs,
                    api_name="deploy_force", concurrency_limit=1, concurrency_id="deploy")
    rollback_btn.click(do_rollback, [rollback_to, anon_id], deploy_outputs, api_name="deploy_rollback",
                       concurrency_limit=1, concurrency_id="deploy")

    def refresh(cand, ag, es, pk, vs, hr, ln, pa, pt, rb, filt):
        s = form_state(ctx)
        adapters, refs = s["adapters"], s["refs"]
        deployments, history = deployment_tables(ctx)
        lineage_value = _keep(ln, s["lineages"])
        plot_frame, curve_text = curve(ctx, lineage_value)
        keep_pick = _keep(pk, s["runs"], LATEST)
        return (gr.update(choices=adapters, value=_keep(cand, adapters)),
                gr.update(choices=s["against"], value=_keep(ag, s["against"], "parent")),
                gr.update(choices=refs, value=_keep(es, refs)),
                gr.update(choices=s["runs"], value=keep_pick),
                gr.update(choices=refs, value=_keep(vs, refs)),
                gr.update(choices=s["heldout"], value=_keep(hr, s["heldout"])),
                views.sets_frame(s["sets"]), set_items(ctx, _keep(vs, refs)),
                gr.update(choices=s["lineages"], value=lineage_value), plot_frame, curve_text,
                gr.update(choices=adapters, value=_keep(pa, adapters)),
                gr.update(choices=s["deployments"], value=pt if pt else _keep(None, s["deployments"])),
                gr.update(choices=s["deployments"], value=_keep(rb, s["deployments"])),
                deployments, history, *poll(ctx, keep_pick, filt, None))

    inputs = [candidate, against, eval_set, picked, view_set, heldout_run, lineage, promote_adapter, promote_to,
              rollback_to, item_filter]
    outputs = [candidate, against, eval_set, picked, view_set, heldout_run, sets_table, set_view, lineage, plot,
               curve_md, promote_adapter, promote_to, rollback_to, deploy_table, history_table, *poll_outputs]
    return refresh, inputs, outputs
