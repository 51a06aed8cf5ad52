"""The replica's protective limits that `lab serve` flags set, with their defaults in one place.

- `DEFAULT_MAX_REQUEST_BYTES` (`--max-request-bytes`): a larger body is refused with 413 before it
  is read whole. 8 MiB holds a 128k-token prompt several times over, as text or as JSON token ids.
- `ENGINE_ITERATION_TIMEOUT_S` (`--engine-iteration-timeout-s`): how long the engine's step loop may
  stay silent (it reports at least every second, idle or not) before `/health`, `/ready` and new
  requests answer 503 `engine_unresponsive`: a hung step or a stopped core process. vLLM's
  `VLLM_ENGINE_ITERATION_TIMEOUT_S` defaults to 60 s; 30 s lets a gateway probing every 15 s eject
  the replica within three probes, and is still far above any healthy step.
Import-light on purpose: `lab --help` reads these without loading the server.
"""
from __future__ import annotations

DEFAULT_MAX_REQUEST_BYTES = 8 * 2**20
ENGINE_ITERATION_TIMEOUT_S = 30.0
