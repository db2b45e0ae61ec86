"""The Data tab's words for an upload: a person's headline, counts and duplicates, details on demand, and the
unknown-format refusal said once with the next step."""

from __future__ import annotations

from training.importers.model import messages_digest
from ui.web.import_words import FileCount, count_words, detected_line, format_words, unknown_format_line
from ui.web.tabs import data as tab_data
from ui_fakes import app_settings

REASON = ("header has conversation columns (one message per row: speaker='Author', text='Body', "
          "conversation='Ticket ID', order='Created At'; semicolon-separated)")


def test_the_detection_headline_is_a_persons_sentence():
    assert format_words("csv", REASON) == ("CSV, one message per row; conversation id, time, speaker and text "
                                           "columns found")
    assert format_words("openai", "first record has 'messages'") == "OpenAI chat format (JSONL, one conversation per line)"
    line = detected_line("tickets.csv", "csv", REASON, "utf-8", FileCount(conversations=12))
    assert line.startswith("- **tickets.csv**: CSV, one message per row") and "12 conversations" in line
    assert "<details><summary>details</summary>csv: header has" in line  # the importer's words, on demand


def test_counts_name_the_duplicate_lines():
    a, b = ([{"role": "user", "content": text}] for text in "ab")
    c = FileCount()
    c.add("line 1", a)
    c.add("line 2", b)
    c.add_repeats(1, [("line 3", messages_digest(a))])  # what the importer dropped (ImportStream.repeats)
    c.rejected = 1
    assert count_words(c) == ("3 conversations (1 duplicate, imported once: line 3 repeats line 1), 1 record that "
                              "cannot be imported (listed after the import)")
    c.add_repeats(6, [(f"line {n}", messages_digest(b)) for n in range(4, 10)])
    assert count_words(c).startswith("9 conversations (7 duplicates, imported once: line 3 repeats line 1; line 4 "
                                     "repeats line 2; ") and "; and 2 more)" in count_words(c)


def test_an_unknown_format_is_refused_once_in_the_apps_words(tmp_path, monkeypatch, data_dir):
    from ui.web.context import AppContext
    from ui_fakes import FakeServer

    line = unknown_format_line("notes.txt", "Tried openai, sharegpt")
    assert line.count("notes.txt") == 1 and "Import options" in line and "--" not in line
    settings = app_settings(tmp_path, monkeypatch)
    ctx = AppContext(settings=settings, server=FakeServer(settings))
    f = tmp_path / "notes.txt"
    f.write_text("hello world\nnot a chat\n", encoding="utf-8")
    summary, _ = tab_data.preview(ctx, [str(f)], "auto", "", "", "", "")
    assert summary.count("notes.txt") == 1 and "format was not recognised" in summary
    assert "--format" not in summary and "transcript_labels" not in summary and "csv_columns" not in summary
    report = tab_data.run_import(ctx, [str(f)], "support", "auto", "", "", "", "", progress=lambda *a, **k: None)[0]
    assert "could not tell" not in report and "see “Detected”" in report


def test_the_preview_counts_the_whole_file_and_names_its_duplicate_lines(tmp_path, data_dir, monkeypatch):
    import json

    from ui.web.context import AppContext
    from ui_fakes import FakeServer

    settings = app_settings(tmp_path, monkeypatch)
    ctx = AppContext(settings=settings, server=FakeServer(settings))
    chat = lambda q: json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "Ok."}]})
    f = tmp_path / "chats.jsonl"
    f.write_text("\n".join([chat("Where is my order?"), chat("Refund?"), chat("Where is my order?")]) + "\n",
                 encoding="utf-8")
    summary, _ = tab_data.preview(ctx, [str(f)], "auto", "", "", "", "")
    assert "OpenAI chat format" in summary  # before import: the total, and which line repeats which
    assert "3 conversations (1 duplicate, imported once: line 3 repeats line 1)" in summary
