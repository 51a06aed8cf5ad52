"""Chat messages: validation, and the built-in DeepSeek-V3/R1 prompt format.

Used by `Tokenizer.apply_chat_template` when a checkpoint ships no Jinja chat template.
The format, as DeepSeek-V3/R1's own template renders a plain conversation:

    {bos}{system prompts joined by a blank line}
    <｜User｜>{user content}
    <｜Assistant｜>{assistant content}<｜end▁of▁sentence｜>
    ...
    <｜Assistant｜>                       (the generation prompt)

without the line breaks. The special tokens use FULLWIDTH VERTICAL LINE (U+FF5C) and LOWER ONE
EIGHTH BLOCK (U+2581), exactly as in DeepSeek's tokenizer.json.
"""
from __future__ import annotations

from typing import Any

USER_TOKEN = "<\uff5cUser\uff5c>"  # <｜User｜>
ASSISTANT_TOKEN = "<\uff5cAssistant\uff5c>"  # <｜Assistant｜>
EOS_TOKEN = "<\uff5cend\u2581of\u2581sentence\uff5c>"  # <｜end▁of▁sentence｜>

TEMPLATE_ROLES = ("system", "user", "assistant", "tool")  # what a Jinja template may see
BUILTIN_ROLES = ("system", "user", "assistant")  # what the built-in format renders


class ChatTemplateError(ValueError):
    """A chat template rejected the conversation (its `raise_exception(...)`)."""


def validate_messages(messages: list[dict[str, Any]], *, builtin_format: bool) -> list[dict[str, Any]]:
    """Checked copies of OpenAI-style messages; text content parts are joined into one string."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    allowed = BUILTIN_ROLES if builtin_format else TEMPLATE_ROLES
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError(f"message {i} must be a dict, got {type(message).__name__}")
        role = message.get("role")
        if not isinstance(role, str):
            raise ValueError(f"message {i} has no 'role' string")
        if role not in allowed:
            where = "the built-in DeepSeek chat format" if builtin_format else "chat messages"
            raise ValueError(f"message {i} has role {role!r}; {where} accept {list(allowed)}")
        if "content" not in message:
            raise ValueError(f"message {i} ({role}) has no 'content'")
        content = message["content"]
        # An assistant turn that only calls tools has no content; only a template renders those.
        if content is None and role == "assistant" and message.get("tool_calls") and not builtin_format:
            checked.append(dict(message))
            continue
        checked.append({**message, "content": _content_text(content, i, role)})
    return checked


def _content_text(content: Any, index: int, role: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise ValueError(f"message {index} ({role}): only text content parts are supported, got {part!r}")
            texts.append(part["text"])
        return "".join(texts)
    raise ValueError(f"message {index} ({role}): content must be a string or a list of text parts")


def render_deepseek_chat(messages: list[dict[str, Any]], *, bos_token: str, add_generation_prompt: bool) -> str:
    """The built-in DeepSeek-V3/R1 prompt of validated `messages`."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    parts = [bos_token, system]
    for message in messages:
        if message["role"] == "user":
            parts.append(USER_TOKEN + message["content"])
        elif message["role"] == "assistant":
            parts.append(ASSISTANT_TOKEN + message["content"] + EOS_TOKEN)
    if add_generation_prompt:
        parts.append(ASSISTANT_TOKEN)
    return "".join(parts)
