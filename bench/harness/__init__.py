"""Driving a real `python -m service` from outside and watching it: shared by tests/reliability (the
pass/fail bounds) and bench/soak.py, bench/resource_attacks.py (the measured reports).

    server        start a server on a loopback port, the model stores it serves
    procfs        a process's RSS, peak RSS, CPU time and the machine's free memory, sampled in a thread
    probe         a /healthz prober in a process of its own
    attacks       the resource-attack catalogue and how one case is run and measured
    hostile       the hostile-input catalogue (images, /conv and /v2 tensors)
    store_faults  broken model folders beside a good one
    schema_fuzz   schemathesis over the service's own OpenAPI schema

and what the model benchmarks share (bench/bench_birealnet.py, bench/bench_reactnet.py):

    model_bench   a packed model against its float twin in alternating rounds: ratios, issue-16 targets, table
"""
