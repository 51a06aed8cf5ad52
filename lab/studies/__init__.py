"""Studies: one folder per experiment a notebook (or a `lab ... bench` command) runs.

    quickstart        00  telemetry under a small load, the default model answering
    roofline          01  decode against the HBM roofline, offline throughput against transformers
                          (`lab bench offline`, `python -m lab.studies.roofline`)
    priority          02  FCFS against the gateway's tiers under overload, on a live service
    fullpower         03  baseline against full power: max QPS at the SLO, the concurrency knee
    scaling           04  forecasts and scaling policies in the simulated fleet
    gateway_latency   --  what the gateway adds to a request (`lab gateway bench-latency`)
    launcher.py           local services for studies: a `lab serve` replica, alone or behind a gateway

Each study package re-exports what its notebook calls (`from lab.studies import roofline`), lazily,
so importing a study's command-line module stays cheap. Layers: a study may import any product
package (engine, server, gateway, bench, scale) and the lab plane below it (track, gpu, tiers,
errors, paths); no product package imports a study (`tests/test_import_rules.py` walks the imports).
"""
