"""The QoS gateway: the front door that stands between OpenAI-compatible clients and replicas.

Contract: a request is authenticated by its API key, which alone decides its tier (VIP > realtime >
async > batch); it passes the per-key and per-tier token buckets (429 with Retry-After when empty),
waits in one priority queue across tiers under per-tier concurrency limits and deadlines (an explicit
JSON error when its tier's timeout passes; lower tiers keep a share of the slots free for higher ones
or lend it out and take it back on demand, and a higher tier about to miss its deadline may preempt a
lower tier's running request, in an order set per tier),
and is forwarded over HTTP to the healthy replica with the least outstanding work of a version chosen
by the canary weights. Streams pass through unbuffered;
a replica that fails before the first byte (no connection, a 5xx, or no first byte within its tier's
budget) is replaced by another, while a 4xx, the request's own fault, goes back as is. A health loop
probes every replica with a 1-token completion, ejects one after consecutive failures (sooner when
requests to it time out or cannot connect), rolls traffic back when a new version fails, and drives
canary ramps.

This package never imports torch: it talks to replicas over HTTP only, so it fronts vLLM, SGLang
and `lab serve` the same way. Modules, one concept each: config, auth, key_checks (slow key checks
off the loop), buckets, queue, traffic, router, health, canary, budget (per-tier upstream time
budgets), upstream_http (per-replica keep-alive connection pools on httptools; connection_pools: the
same on aiohttp, the plain path), proxy, forward (the forwarded routes on the bare ASGI interface),
sse_outcome (how a relayed stream ended), metrics, admin, app, http_server (a general asyncio +
httptools HTTP/1.1 server for an ASGI app, with http_connection, http_cycle and http_limits), cli. What the gateway adds to a request is measured by a study
(`lab.studies.gateway_latency`, `lab gateway bench-latency`).
"""
