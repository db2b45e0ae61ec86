"""Render a canonical conversation through the base model's own chat template into (ids, mask).

    rendered = render_conversation(tokenizer, [{"role": "user", ...}, {"role": "assistant", ...}])
    rendered.input_ids, rendered.mask, rendered.labels   # labels: ids where mask==1, else -100

Most chat templates (SmolLM2's ChatML included) have no `{% generation %}` markers, so the
assistant mask is computed here from the template itself, turn by turn:

- the text message i adds is `render(messages[:i+1])` minus `render(messages[:i])`; the template
  must be incremental (each prefix renders to a prefix), otherwise `TemplateError`;
- for an assistant turn that text is split at `render(messages[:i], add_generation_prompt=True)`:
  the header (`<|im_start|>assistant\\n`) is the prompt the server writes, so it is not trained;
  the answer **through the end-of-turn token** (`<|im_end|>`, the tokenizer's eos) is trained, so a
  tuned model stops where the base model would; whatever the template writes after the end-of-turn
  token (ChatML's `\\n`) is not trained: generation stops at the end-of-turn token and never
  produces it, and the server's template writes it itself before the next turn;
- assistant turns with `"weight": 0` (OpenAI's fine-tuning format) are rendered but not trained;
  system and user turns are never trained.

Each piece is tokenized on its own (no special tokens added: the template writes them). For
templates whose pieces meet at special tokens, as ChatML's do, that equals tokenizing the whole
text (tests check it for the default model); in any case the answer tokens are tokenized exactly as
a model generating after the prompt would produce them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

IGNORE_INDEX = -100


class TemplateError(ValueError):
    """The chat template cannot be rendered turn by turn (so no assistant mask can be computed)."""


@dataclass(frozen=True)
class Rendered:
    """A rendered conversation: token ids, the loss mask, and where each message's tokens end."""

    input_ids: list[int]
    mask: list[int]
    """1 where the token is trained (assistant answers through end-of-turn), else 0."""
    message_ends: list[int] = field(default_factory=list)
    """For message i, the number of tokens once it is rendered (cut points that keep whole turns)."""

    @property
    def labels(self) -> list[int]:
        return [t if m else IGNORE_INDEX for t, m in zip(self.input_ids, self.mask)]

    @property
    def trained_tokens(self) -> int:
        return sum(self.mask)

    def __len__(self) -> int:
        return len(self.input_ids)

    def truncate(self, max_len: int) -> "Rendered | None":
        """The longest prefix of whole messages within `max_len` tokens that still trains something.

        Cutting at a message boundary keeps every trained answer ending with its end-of-turn token.
        None when no such prefix exists (the first answer alone is too long).
        """
        if len(self.input_ids) <= max_len:
            return self
        for end in reversed(self.message_ends):
            if end <= max_len and any(self.mask[:end]):
                return Rendered(self.input_ids[:end], self.mask[:end],
                                [e for e in self.message_ends if e <= end])
        return None


def render_conversation(tokenizer, messages: list[dict], *, end_of_turn: str | None = None) -> Rendered:
    """Token ids and assistant-only mask of `messages` rendered by `tokenizer`'s chat template.

    `end_of_turn` is the text that closes an assistant turn; default: the tokenizer's eos token.
    """
    eot = end_of_turn or tokenizer.eos_token
    if not eot:
        raise TemplateError("the tokenizer has no eos token; pass end_of_turn= explicitly")
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    ids: list[int] = []
    mask: list[int] = []
    ends: list[int] = []

    def add(text: str, trained: bool) -> None:
        if not text:
            return
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.extend(piece)
        mask.extend([1 if trained else 0] * len(piece))

    previous = ""
    for i, message in enumerate(messages):
        full = _render(tokenizer, plain[: i + 1], generation_prompt=False)
        if message["role"] == "assistant":
            prompt = _render(tokenizer, plain[:i], generation_prompt=True)
            _require_prefix(previous, prompt, i)
            _require_prefix(prompt, full, i)
            body = full[len(prompt):]
            cut = body.rfind(eot)
            if cut < 0:
                raise TemplateError(f"message {i}: the template does not close the assistant turn with {eot!r}")
            cut += len(eot)
            add(prompt[len(previous):], False)
            add(body[:cut], message.get("weight", 1) != 0)
            add(body[cut:], False)
        else:
            _require_prefix(previous, full, i)
            add(full[len(previous):], False)
        ends.append(len(ids))
        previous = full
    return Rendered(ids, mask, ends)


def _render(tokenizer, messages: list[dict], *, generation_prompt: bool) -> str:
    if not messages and not generation_prompt:
        return ""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _require_prefix(prefix: str, text: str, index: int) -> None:
    if not text.startswith(prefix):
        raise TemplateError(
            f"message {index}: the chat template is not incremental (rendering one more message changed "
            "the text before it), so the assistant tokens cannot be located; use a base model whose "
            "template renders turn by turn"
        )
