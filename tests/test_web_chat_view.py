"""What the chat tabs show of an answer: links as plain text, the cut-off note, thumbs again, prompts from the store."""

from __future__ import annotations

from serving.chat import StreamEnd
from ui.web.chat_view import cut_off_note, feedback_values, plain_links, prompt_messages, shown_answer
from ui.web.tabs.compare import ab_reset


def test_no_link_survives_and_every_address_stays_visible():
    text = ("See [our help](https://help.acme.example/a?b=1) or https://evil.example/x. "
            "Write to refunds@acme.example, <https://auto.example>, www.acme.example or <a href='x'>here</a>.")
    out = plain_links(text)
    assert "](" not in out and "<https" not in out and "<a " not in out
    for address in ("https://help.acme.example/a?b=1", "https://evil.example/x", "refunds@acme.example",
                    "https://auto.example", "www.acme.example"):
        assert f"`{address}`" in out, address
    assert out.startswith("See our help (`https://help.acme.example/a?b=1`)")
    assert "https://evil.example/x`." in out  # the full stop stays outside the address


def test_code_stays_as_written_and_plain_text_is_untouched():
    assert plain_links("Run `curl https://x.example` then ```\nhttps://y.example\n```") == \
        "Run `curl https://x.example` then ```\nhttps://y.example\n```"
    assert plain_links("Your order ships Friday.") == "Your order ships Friday."


def test_a_cut_answer_carries_the_limit():
    assert shown_answer("half a sent", cut_off=True, max_tokens=64) == "half a sent\n\n" + cut_off_note(64)
    assert "cut off at 64 tokens" in cut_off_note(64)
    assert shown_answer("done.", cut_off=False) == "done."
    end = StreamEnd("length", 64)
    assert end == "" and end.cut_off and not StreamEnd("stop").cut_off


def test_thumbs_line_up_with_the_answers_shown():
    history = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a1"},
               {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"},
               {"role": "user", "content": "q3"}, {"role": "assistant", "content": "streaming"}]
    assert feedback_values(history, [1, 2, 3, 4, None, None], {2: "up", 4: "down"}) == ["Like", "Dislike", None]


def test_the_model_is_sent_its_own_stored_words_not_their_rendering():
    stored = [{"role": "system", "content": "old"}, {"role": "user", "content": "q"},
              {"role": "assistant", "content": "See https://x.example"}]
    shown = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "See `https://x.example`"}]
    assert prompt_messages(stored, shown, "Be brief.", "next") == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "q"},
        {"role": "assistant", "content": "See https://x.example"}, {"role": "user", "content": "next"}]
    assert prompt_messages(None, shown, "", "next")[-1] == {"role": "user", "content": "next"}


def test_a_new_comparison_never_names_a_missing_side():
    for m1, m2 in (("base", None), (None, "support-v1"), (None, None)):
        note = ab_reset(m1, m2, False)[3]
        assert "?" not in note and "pick the two models" in note
    assert ab_reset("base", "support-v1", False)[3] == "New comparison: A is base, B is support-v1."
