"""The rooms stay as docs/architecture.md draws them: one-way arrows, no import circle, CLI commands at module
level, SQL only in store/, one home for the shared vocabulary."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROOMS = ("store", "training", "serving", "ui")
ALLOWED = {"store": set(), "training": {"store"}, "serving": {"store"}, "ui": {"store", "training", "serving"}}


def modules() -> dict[str, Path]:
    out = {}
    for room in ROOMS:
        for path in (ROOT / room).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(path: Path, module: str) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import of our packages in `path`."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] in ROOMS:
                found.append((name, node.lineno, id(node) in top))
    return found


def test_arrows_point_one_way():
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {name}"
             for module, path in modules().items() for name, line, _ in imports(path, module)
             if name.split(".")[0] != module.split(".")[0] and name.split(".")[0] not in ALLOWED[module.split(".")[0]]]
    assert not wrong


def test_no_import_circle_between_modules():
    mods = modules()
    graph = {m: {n for name, _, _ in imports(p, m) for n in (name, name.rsplit(".", 1)[0]) if n in mods and n != m}
             for m, p in mods.items()}
    # A package's __init__ importing its own submodules is how packages are built, not a circle.
    graph = {m: {n for n in deps if not n.startswith(m + ".")} for m, deps in graph.items()}
    circles = []
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                circles.append(" -> ".join(stack[stack.index(n):] + [n]))
            elif n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not circles


def test_cli_commands_are_defined_at_module_level():
    nested = []
    for path in (ROOT / "ui" / "cli").glob("*.py"):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(fn):
                    if inner is not fn and isinstance(inner, ast.FunctionDef) and any(
                            isinstance(d, ast.Call) and getattr(d.func, "attr", "") in ("command", "callback")
                            for d in inner.decorator_list):
                        nested.append(f"{path.name}: {inner.name} inside {fn.name}")
    assert not nested


SQL = re.compile(r"^\s*(select|insert|update|delete|create|drop|alter|pragma|begin|with)\b", re.I)


def test_sql_lives_only_in_store():
    found = []
    for room in ("training", "serving", "ui"):
        for path in (ROOT / room).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in (
                        "execute", "executemany", "executescript", "query"):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
                elif isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.match(node.value) \
                        and " from " in node.value.lower():
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found


@pytest.mark.parametrize("name", ["parse_pairs", "log_tail", "tail", "duration", "format_seconds", "json_type",
                                  "short_time", "loss_bits"])
def test_shared_helpers_are_defined_once(name):
    defined = [f"{p.relative_to(ROOT)}" for room in ROOMS for p in (ROOT / room).rglob("*.py")
               for node in ast.parse(p.read_text()).body
               if isinstance(node, ast.FunctionDef) and node.name == name]
    # ui.web.tabs.data.parse_pairs and ui.cli.common.parse_pairs are each door's reading of its input
    # (comma-separated text, repeated options); both call training.importers' rule.
    allowed = {"parse_pairs": 3, "log_tail": 1}
    assert len(defined) <= allowed.get(name, 1), defined


def test_method_and_format_names_have_one_home():
    """The vocabulary is spelled out once (training.feedback_dataset.METHODS, training.importers FORMATS)."""
    spelled = []
    for room in ROOMS:
        for path in (ROOT / room).rglob("*.py"):
            if path.relative_to(ROOT).as_posix() in ("training/feedback_dataset.py", "training/importers/model.py"):
                continue
            text = path.read_text()
            if re.search(r'"sft", "kto", "dpo"|"openai", "sharegpt", "alpaca"', text):
                spelled.append(str(path.relative_to(ROOT)))
    assert not spelled


def test_run_metric_keys_read_outside_training_are_fields_of_the_typed_result():
    """store/ and serving/ cannot import training.results, so the keys they read are named once in store/ and
    checked here against the dataclass that writes them."""
    from dataclasses import fields

    from store.lineage import KEY_METRICS
    from store.runs import HELD_OUT_LOSS_END, HELD_OUT_LOSS_START
    from training.results import RunMetrics

    names = {f.name for f in fields(RunMetrics)}
    assert {HELD_OUT_LOSS_START, HELD_OUT_LOSS_END, *KEY_METRICS} <= names
