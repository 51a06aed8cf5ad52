"""check_stop: EOS, stop token ids, min_tokens, max_tokens and the model's context length."""
from __future__ import annotations

from lab.engine.sampling_params import SamplingParams
from lab.engine.sequence import FinishReason, Sequence
from lab.engine.stop_checker import check_stop

EOS = 2
MAX_MODEL_LEN = 100


def seq_with(outputs: list[int], num_prompt_tokens: int = 3, **params: object) -> Sequence:
    seq = Sequence("r", list(range(10, 10 + num_prompt_tokens)), SamplingParams(**params), arrival_time=0.0)
    seq.output_token_ids = list(outputs)
    return seq


def test_an_ordinary_token_continues() -> None:
    assert check_stop(seq_with([5]), EOS, MAX_MODEL_LEN) is None


def test_eos_stops_without_a_stop_reason() -> None:
    seq = seq_with([5, EOS])
    assert check_stop(seq, EOS, MAX_MODEL_LEN) is FinishReason.STOP
    assert seq.stop_reason is None


def test_ignore_eos_and_a_missing_eos_id_continue() -> None:
    assert check_stop(seq_with([EOS], ignore_eos=True), EOS, MAX_MODEL_LEN) is None
    assert check_stop(seq_with([EOS]), None, MAX_MODEL_LEN) is None


def test_a_stop_token_id_stops_and_is_recorded() -> None:
    seq = seq_with([5, 9], stop_token_ids=(9, 11))
    assert check_stop(seq, EOS, MAX_MODEL_LEN) is FinishReason.STOP
    assert seq.stop_reason == 9


def test_min_tokens_suppresses_eos_and_stop_ids_until_reached() -> None:
    assert check_stop(seq_with([EOS], min_tokens=2), EOS, MAX_MODEL_LEN) is None
    assert check_stop(seq_with([9], min_tokens=2, stop_token_ids=(9,)), EOS, MAX_MODEL_LEN) is None
    assert check_stop(seq_with([5, EOS], min_tokens=2), EOS, MAX_MODEL_LEN) is FinishReason.STOP


def test_max_tokens_ends_with_length() -> None:
    assert check_stop(seq_with([5, 6], max_tokens=3), EOS, MAX_MODEL_LEN) is None
    assert check_stop(seq_with([5, 6, 7], max_tokens=3), EOS, MAX_MODEL_LEN) is FinishReason.LENGTH


def test_the_model_context_limit_ends_with_length_even_under_min_tokens() -> None:
    seq = seq_with([5, 6], num_prompt_tokens=8, min_tokens=5, max_tokens=50)
    assert check_stop(seq, EOS, max_model_len=11) is None  # 10 tokens
    seq.output_token_ids.append(7)
    assert check_stop(seq, EOS, max_model_len=11) is FinishReason.LENGTH


def test_a_stop_token_on_the_last_allowed_token_reports_stop() -> None:
    seq = seq_with([5, EOS], max_tokens=2)
    assert check_stop(seq, EOS, MAX_MODEL_LEN) is FinishReason.STOP
