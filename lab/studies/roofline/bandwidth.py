"""Peak HBM bandwidth of the cards the lab runs on, looked up by device name.

MBU (model bandwidth utilization) divides the bytes a decode step must read by its time and by
this number. Figures are the vendors' datasheet peaks (SXM parts); a card not in the table has
no MBU (None), rather than a guessed one. On CPU there is no meaningful figure either.
"""
from __future__ import annotations

CARD_BANDWIDTH_TB_S: dict[str, float] = {  # matched as substrings of the lower-cased device name
    "h200": 4.8,
    "h100": 3.35,
    "a100": 2.0,
}


def card_bandwidth(device_name: str | None) -> float | None:
    """Peak bytes/s of `device_name` (e.g. "NVIDIA H100 80GB HBM3"), or None when unknown."""
    if not device_name:
        return None
    name = device_name.lower()
    for key, tb_s in CARD_BANDWIDTH_TB_S.items():
        if key in name:
            return tb_s * 1e12
    return None


def current_device_name(device) -> str:
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"
