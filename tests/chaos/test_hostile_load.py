"""The floods' bad arguments are refused by name before anything is sent (the floods themselves run against a
real gateway in tests/gateway/test_floods.py and, the poison bodies, against a real replica in
tests/server/test_poison_requests.py)."""

from __future__ import annotations

import pytest

from lab.chaos.hostile_load import flood_poison, flood_wrong_keys, hold_idle_connections
from lab.errors import LabError

URL = "http://127.0.0.1:9"  # the discard port: nothing may reach it


@pytest.mark.parametrize("call, match", [
    (lambda: flood_wrong_keys(URL, duration_s=0), "duration_s must be > 0"),
    (lambda: flood_wrong_keys(URL, duration_s=1, threads=0), "threads must be an integer >= 1"),
    (lambda: flood_poison(URL, api_key="", duration_s=1), "api_key"),
    (lambda: flood_poison(URL, api_key="sk-b", duration_s=1, bodies=[]), "bodies: a non-empty list"),
    (lambda: flood_poison(URL, api_key="sk-b", duration_s=1, bodies=["seed"]), "bodies: a non-empty list"),
    (lambda: hold_idle_connections(URL, duration_s=1, count=0), "count must be an integer >= 1"),
    (lambda: hold_idle_connections("127.0.0.1:9", duration_s=1), "base_url must be like"),
])
def test_bad_arguments_name_themselves(call, match) -> None:
    with pytest.raises(LabError, match=match):
        call()
