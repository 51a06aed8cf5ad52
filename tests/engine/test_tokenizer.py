"""Tokenizer (DeepSeek's real one and a tiny Jinja-templated one) and IncrementalDetokenizer."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import tokenizers
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace

from lab.engine.chat_format import ChatTemplateError
from lab.engine.detokenizer import IncrementalDetokenizer
from lab.engine.tokenizer import Tokenizer

BOS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>"
EOS = "<\uff5cend\u2581of\u2581sentence\uff5c>"
USER = "<\uff5cUser\uff5c>"
ASSISTANT = "<\uff5cAssistant\uff5c>"


@pytest.fixture(scope="module")
def deepseek() -> Tokenizer:
    return Tokenizer.deepseek()


# ---- DeepSeek tokenizer -------------------------------------------------------------------------


def test_deepseek_special_tokens_and_vocab(deepseek: Tokenizer) -> None:
    assert (deepseek.bos_token, deepseek.eos_token) == (BOS, EOS)
    assert (deepseek.bos_token_id, deepseek.eos_token_id) == (0, 1)
    assert deepseek.vocab_size == 129280  # 128000 BPE tokens + added tokens up to id 129279
    assert deepseek.encode(USER + ASSISTANT) == [128803, 128804]


@pytest.mark.parametrize("text", ["Hello, world! 123", "深度求索：你好，世界。", "emoji 😀👍🏽 and 🇨🇳 flags"])
def test_deepseek_round_trips_text(deepseek: Tokenizer, text: str) -> None:
    ids = deepseek.encode(text)
    assert ids[0] != deepseek.bos_token_id  # DeepSeek's config: add_bos_token is false
    assert deepseek.decode(ids) == text


def test_decode_skips_special_tokens_on_request(deepseek: Tokenizer) -> None:
    ids = [0, *deepseek.encode("hi"), 1]
    assert deepseek.decode(ids) == "hi"
    assert deepseek.decode(ids, skip_special_tokens=False) == f"{BOS}hi{EOS}"


def test_builtin_deepseek_chat_format(deepseek: Tokenizer) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": [{"type": "text", "text": "2+2"}, {"type": "text", "text": "?"}]},
    ]
    expected = f"{BOS}Be brief.{USER}Hi{ASSISTANT}Hello!{EOS}{USER}2+2?{ASSISTANT}"
    assert deepseek.apply_chat_template(messages) == expected
    assert deepseek.apply_chat_template(messages[:2], add_generation_prompt=False) == f"{BOS}Be brief.{USER}Hi"
    ids = deepseek.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=True)
    assert ids == [0, 128803, *deepseek.encode("Hi"), 128804]


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([], "non-empty list"),
        ([{"content": "hi"}], "no 'role'"),
        ([{"role": "user"}], "no 'content'"),
        ([{"role": "tool", "content": "42"}], "role 'tool'"),
        ([{"role": "wizard", "content": "hi"}], "role 'wizard'"),
        ([{"role": "user", "content": [{"type": "image_url"}]}], "only text content parts"),
    ],
)
def test_bad_messages_are_refused(deepseek: Tokenizer, messages: list, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        deepseek.apply_chat_template(messages)


# ---- a checkpoint directory with a Jinja template --------------------------------------------

TEMPLATE = (
    "{% for m in messages %}{% if m.role == 'user' and loop.index0 % 2 != 0 %}"
    "{{ raise_exception('roles must alternate') }}{% endif %}"
    "{{ bos_token if loop.first }}[{{ m.role }}] {{ m.content }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"
)


@pytest.fixture()
def checkpoint_dir(tmp_path: Path) -> Path:
    vocab = {"<s>": 0, "</s>": 1, "<unk>": 2, "hello": 3, "there": 4}
    backend = tokenizers.Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = Whitespace()
    backend.add_special_tokens(["<s>", "</s>"])
    backend.save(str(tmp_path / "tokenizer.json"))
    config = {
        "bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": False},
        "eos_token": "</s>",
        "add_bos_token": True,
        "chat_template": TEMPLATE,
    }
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return tmp_path


def test_config_tokens_and_add_bos(checkpoint_dir: Path) -> None:
    tok = Tokenizer.from_pretrained_dir(checkpoint_dir)
    assert (tok.bos_token_id, tok.eos_token_id, tok.vocab_size) == (0, 1, 5)
    assert tok.encode("hello there") == [0, 3, 4]
    assert tok.encode("hello there", add_special_tokens=False) == [3, 4]


def test_jinja_template_from_tokenizer_config(checkpoint_dir: Path) -> None:
    tok = Tokenizer.from_pretrained_dir(checkpoint_dir)
    messages = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "there"}]
    assert tok.apply_chat_template(messages) == "<s>[user] hello</s>\n[assistant] there</s>\n[assistant]"
    assert tok.apply_chat_template(messages[:1], add_generation_prompt=False) == "<s>[user] hello</s>\n"
    with pytest.raises(ChatTemplateError, match="roles must alternate"):
        tok.apply_chat_template([{"role": "system", "content": "x"}, {"role": "user", "content": "y"}])


def test_chat_template_file_wins_and_tojson_keeps_unicode(checkpoint_dir: Path) -> None:
    (checkpoint_dir / "chat_template.jinja").write_text("{{ messages[0].content | tojson }}", encoding="utf-8")
    tok = Tokenizer.from_pretrained_dir(checkpoint_dir)
    assert tok.apply_chat_template([{"role": "user", "content": "你好 <b>"}]) == '"你好 <b>"'


# ---- incremental detokenization ------------------------------------------------------------------


def stream(detok: IncrementalDetokenizer, ids: list[int]) -> list[str]:
    return [detok.add(i) for i in ids] + [detok.finish()]


@pytest.mark.parametrize("with_prompt", [False, True])
def test_deltas_concatenate_to_the_full_decode(deepseek: Tokenizer, with_prompt: bool) -> None:
    ids = deepseek.encode("Streaming 深度求索 😀 works, twice: 👍🏽!")
    prompt = deepseek.apply_chat_template([{"role": "user", "content": "go"}], tokenize=True) if with_prompt else []
    detok = IncrementalDetokenizer(deepseek, prompt)
    deltas = stream(detok, ids)
    assert "".join(deltas) == detok.text == deepseek.decode(ids)


def test_a_character_split_across_tokens_is_emitted_whole(deepseek: Tokenizer) -> None:
    ids = deepseek.encode(" 😀")
    assert len(ids) == 2 and deepseek.decode(ids[:1]).endswith("\ufffd")  # the split this test is about
    detok = IncrementalDetokenizer(deepseek)
    assert [detok.add(i) for i in ids] == ["", " 😀"]


def test_finish_flushes_an_unresolved_partial_character(deepseek: Tokenizer) -> None:
    detok = IncrementalDetokenizer(deepseek)
    first = deepseek.encode(" 😀")[0]
    assert detok.add(first) == ""
    assert detok.finish() == deepseek.decode([first])


def test_a_stop_string_spanning_tokens_is_never_emitted(deepseek: Tokenizer) -> None:
    ids = deepseek.encode("abcXYZdef stop here")
    assert [deepseek.decode([i]) for i in ids[:3]] == ["abc", "XYZ", "def"]
    detok = IncrementalDetokenizer(deepseek, stop=("XYZdef",))
    assert [detok.add(i) for i in ids[:2]] == ["abc", ""]
    assert detok.text == "abc"  # "XYZ" is held back: it may start the stop string
    deltas = [detok.add(i) for i in ids[2:]] + [detok.finish()]
    assert deltas == ["", "", "", ""]
    assert (detok.stopped_by, detok.text) == ("XYZdef", "abc")


def test_a_held_stop_prefix_is_released_when_it_does_not_complete(deepseek: Tokenizer) -> None:
    ids = deepseek.encode("abcXYZdef stop here")
    detok = IncrementalDetokenizer(deepseek, stop=("XYZw", "here!"))
    deltas = stream(detok, ids)
    assert deltas == ["abc", "", "XYZdef", " stop", " ", "here"]  # "here" was held for "here!"
    assert detok.stopped_by is None and detok.text == "abcXYZdef stop here"


def test_the_stop_string_cuts_the_text_mid_token(deepseek: Tokenizer) -> None:
    ids = deepseek.encode("The answer is 42.")
    detok = IncrementalDetokenizer(deepseek, stop=("swer",))
    assert "".join(stream(detok, ids)) == detok.text == "The an"
    assert detok.stopped_by == "swer"
