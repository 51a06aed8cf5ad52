"""The replica server: one engine behind OpenAI-compatible HTTP (`lab serve`).

Layout, one concept per file: `backend` (the `ServingBackend` protocol the HTTP layer needs),
`core_backend` (its adapter over the engine core in its own process, `lab.engine.core_client`;
the default), `engine_backend` (its adapter over `lab.engine.AsyncLLM`, the step loop on a
thread), `schemas` (request bodies), `sampling` (request -> prompt ids and `SamplingParams`),
`responses` (OpenAI response and chunk shapes), `logprobs` (their logprobs shapes),
`request_body` (size cap, off-loop parse, hostile JSON), `prompt_ids` (prompts to ids off the loop),
`choices` (the streams of a request's n x prompts choices, merged), `serving` (run one request: JSON
or SSE, disconnects), `metrics` (vLLM-named Prometheus metrics), `lifecycle` (loading/ready/draining),
`limits` (the protective flags' defaults), `app` (routes), `runner` (uvicorn + SIGTERM drain), `cli`
(`lab serve`). Nothing here is imported by `lab.engine`.
"""
