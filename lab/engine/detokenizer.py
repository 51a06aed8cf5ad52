"""`IncrementalDetokenizer`: streaming text deltas from sampled token ids, with stop strings.

Contract, per request:
- `add(token_id) -> str` returns the text that became stable with this token. `text` is
  always the concatenation of the deltas returned so far, so a caller may stream either the
  deltas or `text[already_sent:]`. After `finish()` (or a stop) it is the decode of all output
  tokens, cut before the stop string when one matched.
- A character split across tokens (byte-level BPE emits an emoji as two or three tokens) is
  held until complete: decoded text ending in U+FFFD is not emitted yet. This is the
  prefix/read-offset method of vLLM and TGI: decode a short window ending at the new token and
  emit what it adds over the same window without the new tokens, so that tokenizers which
  drop or merge leading spaces still give the right text.
- Stop strings: when one appears in the text, `stopped_by` names it, `text` is truncated
  before it, and no character of it is ever emitted. To guarantee that, a tail of the text
  that could still become a stop string (at most len(longest stop) - 1 characters) is held
  back until the next token settles it. After a stop, `add` returns "".
- `finish()` releases held-back text (and an unresolved partial character) when the request
  ends for another reason.
- Batched use (the engine's, one tokenizer call per step for the whole batch): `push(token_id)`
  says whether the token needs decoding; `windows()` are the two id windows to decode;
  `accept(prefix_text, full_text)` does the rest of `add`. `add` is exactly push + decode + accept.
  `decode_windows(tokenizer, windows, skip, cache)` decodes a step's windows, memoizing the
  one-token ones (the prefix window is usually the one token emitted last step), so a token
  costs about one tokenizer call, not two. (`decode_batch` of the fast library was slower.)
"""
from __future__ import annotations

from collections.abc import Sequence as SequenceOf
from typing import Protocol

from lab.engine.sequence import Sequence

REPLACEMENT_CHAR = "\ufffd"  # what decoding an incomplete UTF-8 sequence yields
PROMPT_CONTEXT_TOKENS = 6  # prompt tokens kept as left context for the first output token


class TextDecoder(Protocol):
    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str: ...


class IncrementalDetokenizer:
    def __init__(
        self,
        tokenizer: TextDecoder,
        prompt_token_ids: SequenceOf[int] = (),
        skip_special_tokens: bool = True,
        stop: tuple[str, ...] = (),
    ) -> None:
        if any(not s for s in stop):
            raise ValueError("stop strings must be non-empty")
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        self._stop = tuple(stop)
        self._max_stop_len_chars = max((len(s) for s in stop), default=0)
        # The window to decode is ids[prefix_offset:]; ids[read_offset:] are not yet emitted.
        self._ids: list[int] = list(prompt_token_ids[-PROMPT_CONTEXT_TOKENS:])
        self._prefix_offset = 0
        self._read_offset = len(self._ids)
        self._text = ""  # stable output text so far, including a held-back stop-string prefix
        self._num_emitted_chars = 0  # self._text[:this] has been returned as deltas
        self._finished = False
        self.stopped_by: str | None = None

    @classmethod
    def for_request(cls, tokenizer: TextDecoder, seq: Sequence) -> IncrementalDetokenizer:
        params = seq.sampling_params
        return cls(tokenizer, seq.prompt_token_ids, params.skip_special_tokens, params.stop)

    @property
    def text(self) -> str:
        """The output text released so far (the deltas, concatenated)."""
        return self._text[: self._num_emitted_chars]

    @property
    def is_done(self) -> bool:
        return self.stopped_by is not None or self._finished

    @property
    def skip_special_tokens(self) -> bool:
        return self._skip_special_tokens

    @property
    def num_text_chars(self) -> int:
        """len(self.text), without slicing it."""
        return self._num_emitted_chars

    def text_snapshot(self) -> tuple[str, int]:
        """(buffer, n) with buffer[:n] == self.text now; the buffer is immutable, so slicing may wait."""
        return self._text, self._num_emitted_chars

    def text_since(self, start: int) -> str:
        """self.text[start:]"""
        return self._text[start : self._num_emitted_chars]

    def add(self, token_id: int) -> str:
        """Take one sampled token; return the newly stable text (possibly "")."""
        if not self.push(token_id):
            return ""
        prefix_ids, full_ids = self.windows()
        decode, skip = self._tokenizer.decode, self._skip_special_tokens
        return self.accept(decode(prefix_ids, skip_special_tokens=skip), decode(full_ids, skip_special_tokens=skip))

    def push(self, token_id: int) -> bool:
        """Take one sampled token; True when `windows()` must be decoded and given to `accept`."""
        if self.is_done:
            return False
        self._ids.append(token_id)
        return self._read_offset < len(self._ids)

    def windows(self) -> tuple[list[int], list[int]]:
        """The id windows whose texts `accept` needs: (already read, including the unread tokens)."""
        return self._ids[self._prefix_offset : self._read_offset], self._ids[self._prefix_offset :]

    def accept(self, prefix_text: str, full_text: str) -> str:
        """The decoded `windows()`; return the newly stable text (possibly "")."""
        new_chars = self._new_chars(prefix_text, full_text, allow_partial=False)
        if not new_chars:
            return ""
        self._append_text(new_chars)
        if self.stopped_by is not None:
            return self._emit_up_to(len(self._text))
        return self._emit_up_to(len(self._text) - self._stop_prefix_len_chars())

    def finish(self) -> str:
        """End of the request: release everything still held back."""
        if self.is_done:
            return ""
        tail = self._decode_new(allow_partial=True)
        if tail:
            self._append_text(tail)
        self._finished = True
        return self._emit_up_to(len(self._text))

    # ---- internals ----------------------------------------------------------------------------

    def _decode_new(self, allow_partial: bool) -> str:
        """Text the unread tokens add to the window; "" while it would end mid-character."""
        if self._read_offset >= len(self._ids):
            return ""
        decode = self._tokenizer.decode
        skip = self._skip_special_tokens
        prefix_ids, full_ids = self.windows()
        return self._new_chars(
            decode(prefix_ids, skip_special_tokens=skip), decode(full_ids, skip_special_tokens=skip), allow_partial
        )

    def _new_chars(self, prefix_text: str, full_text: str, allow_partial: bool) -> str:
        if len(full_text) <= len(prefix_text):
            return ""  # e.g. a skipped special token
        if full_text.endswith(REPLACEMENT_CHAR) and not allow_partial:
            return ""  # the next token may complete the character
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        return full_text[len(prefix_text) :]

    def _append_text(self, new_chars: str) -> None:
        old_len = len(self._text)
        self._text += new_chars
        if not self._stop:
            return
        # A stop string that ends in the new characters starts at most len(stop) - 1 before them.
        search_from = max(0, old_len - self._max_stop_len_chars + 1)
        matches = [(i, s) for s in self._stop if (i := self._text.find(s, search_from)) >= 0]
        if matches:
            index, stop = min(matches)
            assert index >= self._num_emitted_chars, "part of a stop string was emitted"
            self._text = self._text[:index]
            self.stopped_by = stop

    def _stop_prefix_len_chars(self) -> int:
        """Length of the longest unemitted tail of the text that begins some stop string."""
        longest = min(self._max_stop_len_chars - 1, len(self._text) - self._num_emitted_chars)
        for n in range(longest, 0, -1):
            tail = self._text[-n:]
            if any(s.startswith(tail) for s in self._stop):
                return n
        return 0

    def _emit_up_to(self, end: int) -> str:
        delta = self._text[self._num_emitted_chars : end]
        self._num_emitted_chars = max(self._num_emitted_chars, end)
        return delta


def decode_windows(
    tokenizer: TextDecoder, windows: list[list[int]], skip_special_tokens: bool, cache: dict[int, str] | None = None
) -> list[str]:
    """tokenizer.decode of each window. `cache` memoizes one-token windows (the usual prefix window),
    keyed by token id; decoding is a pure function of the ids, so the texts are unchanged."""
    decode = tokenizer.decode
    if cache is None:
        return [decode(w, skip_special_tokens=skip_special_tokens) for w in windows]
    texts = []
    for w in windows:
        if len(w) == 1:
            text = cache.get(w[0])
            if text is None:
                text = cache[w[0]] = decode(w, skip_special_tokens=skip_special_tokens)
            texts.append(text)
        else:
            texts.append(decode(w, skip_special_tokens=skip_special_tokens))
    return texts
