"""Run the resource-attack catalogue (bench/harness/attacks.py) against a real server and write a
markdown table: what each attack sent, the status, the server's peak RSS over its RSS before the
case, the worst /healthz latency a separate prober saw, how long the CPU stayed busy after the
deadline or the client leaving, and the duration.

    .venv/bin/python bench/resource_attacks.py --out bench/RESULTS_RESOURCE.md
    .venv/bin/python bench/resource_attacks.py --before --out bench/RESULTS_RESOURCE_before.md

Every case gets a fresh server and runs alone. ``--before`` serves the old code instead: the Python
package of a checkout (``--before-tree``, a ``git worktree`` of the old commit) with its compiled core
(``--before-core``), started by a small wrapper that removes this venv's editable-install finder,
puts the old tree first on sys.path, injects the old ``_core`` (as bench/with_core.py does) and
caps the server's address space (``--as-limit-gib``), so that a huge allocation fails instead of
swapping. In both modes a watchdog kills the server when a case runs past ``--limit-s`` or the
machine's MemAvailable drops below ``--min-available-gib``; the case is then reported as aborted.
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if not __package__:  # run as a script: the repository root makes `bench.harness` importable
    sys.path.insert(0, str(REPO))

from bench.harness import attacks  # noqa: E402
from bench.harness.procfs import cpu_name  # noqa: E402
from bench.harness.server import Server, fashion_model_into, start_server  # noqa: E402

GIB = 1 << 30
MIB = 1 << 20

# Serves an old checkout: argv is [-c, TREE, CORE, AS_LIMIT_BYTES, --host, H, --port, P].
BEFORE_WRAPPER = r"""
import importlib.util, resource, sys
tree, core_path, as_limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
if as_limit:
    resource.setrlimit(resource.RLIMIT_AS, (as_limit, as_limit))
# this venv's editable install of the new tree redirects `import service` from sys.meta_path
sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("_editable_")]
sys.path.insert(0, tree)
spec = importlib.util.spec_from_file_location("service._core", core_path)
core = importlib.util.module_from_spec(spec)
spec.loader.exec_module(core)
sys.modules["service._core"] = core
import service
service._core = core
import service.kernel
assert service.__file__.startswith(tree), service.__file__
print(f"before-wrapper: service {service.__file__} core {core.__file__} isa {service.kernel.active_isa()}",
      file=sys.stderr, flush=True)
from service.__main__ import main
main(sys.argv[4:])
"""


def mib(n: int | None) -> str:
    if n is None:
        return "—"
    return f"+{n / GIB:.2f} GiB" if n >= GIB else f"+{n / MIB:.1f} MiB"


def statuses(out: attacks.Outcome) -> str:
    if not out.statuses:
        return "(no answer read)"
    counts: dict[str, int] = {}
    for s in out.statuses:
        key = "no answer" if s is None else str(s)
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(k if n == 1 else f"{k} ×{n}" for k, n in counts.items())


def expected(case: attacks.Attack) -> str:
    if not case.expect:
        return "499 in /metrics"
    text = "/".join(map(str, sorted(case.expect)))
    return f"{text} ×{attacks.BUDGET_REQUESTS}" if case.group == "f" else text


def cpu_release(out: attacks.Outcome) -> str:
    if out.cpu_release_s is None:
        return "—"
    if math.isinf(out.cpu_release_s):
        return "still busy"
    return f"{1000 * out.cpu_release_s:.0f} ms"


def row(case: attacks.Attack, out: attacks.Outcome) -> str:
    health = "—" if out.health is None else f"{1000 * out.health.worst_s:.0f} ms"
    if out.health is not None and out.health.failures:
        health += f" ({out.health.failures} failed)"
    answer = f"{out.largest_answer / MIB:.0f} MB" if out.largest_answer >= MIB else f"{out.largest_answer} B"
    verdict = "ok" if out.problem is None else out.problem.replace("|", "\\|").replace("\n", " ")[:300]
    cells = [f"`{case.id}`", case.sent, expected(case), statuses(out), answer, mib(out.peak_rss_delta), health,
             cpu_release(out), f"{out.seconds:.2f} s", verdict]
    return "| " + " | ".join(cells) + " |"


def launcher(args) -> list[str] | None:
    if not args.before:
        return None
    return [sys.executable, "-c", BEFORE_WRAPPER, str(args.before_tree), str(args.before_core),
            str(int(args.as_limit_gib * GIB))]


def check_served_code(server: Server, before: bool) -> str:
    """The kernel path the server uses, after checking it serves the code it should: the old tree
    takes a string stride ("2") as a number, the new one refuses it."""
    r = attacks.post_conv(server, b'{"input":{"shape":[1,1,1,1],"data":[1]},"weight":{"shape":[1,1,1,1],"data":[1]},'
                                  b'"stride":"2"}')
    if before:
        match = re.search(r"before-wrapper: service (\S+) core (\S+) isa (\S+)", server.output())
        if match is None or r.status != 200:
            raise SystemExit(f"the server is not the old code (stride \"2\" gave {r.status}):\n{server.output()[-2000:]}")
        return match.group(3)
    if r.status != 422:
        raise SystemExit(f"the server does not behave as the new code (stride \"2\" gave {r.status})")
    from service import kernel

    return kernel.active_isa()


def run_catalogue(cases, store: Path, logs: Path, *, launch=None, before: bool = False, limit_s: float = 60.0,
                  min_available: int = 6 * GIB, echo: bool = False) -> tuple[str | None, list]:
    """Each case against a fresh server of its own settings, one at a time: (the kernel path served,
    [(case, Outcome)]). A server that logged a traceback or died makes its case a problem."""
    isa, results = None, []
    for case in cases:
        server = start_server(store, log_dir=logs, launcher=launch, **case.server_settings())
        try:
            if isa is None:
                isa = check_served_code(server, before)
            out = attacks.run(case, server, limit_s=limit_s, min_available=min_available)
        finally:
            code = server.terminate()
        if "Traceback" in server.output():
            out.problem = "; ".join(filter(None, [out.problem, "the server logged an unhandled error"]))
        if code not in (0, -15, -9):
            out.problem = "; ".join(filter(None, [out.problem, f"the server exited with {code}"]))
        results.append((case, out))
        if echo:
            print(row(case, out), flush=True)
    return isa, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", action="store_true", help="serve the old code (see --before-tree/--before-core)")
    parser.add_argument("--before-tree", type=Path, default=Path("/tmp/before"))
    parser.add_argument("--before-core", type=Path,
                        default=Path("/tmp/before_core/_core.cpython-311-x86_64-linux-gnu.so"))
    parser.add_argument("--as-limit-gib", type=float, default=14.0, help="address-space cap of the old server")
    parser.add_argument("--limit-s", type=float, help="longest a case may run, server killed after (default: 60 s, "
                        "150 s with --before: its unbounded convolution runs for a minute or more)")
    parser.add_argument("--min-available-gib", type=float, default=6.0,
                        help="kill the server when MemAvailable drops below this")
    parser.add_argument("--only", help="comma-separated case ids")
    parser.add_argument("--out", type=Path, help="write the markdown here too")
    args = parser.parse_args()
    if args.limit_s is None:
        args.limit_s = 150.0 if args.before else 60.0

    cases = attacks.catalogue()
    if args.only:
        wanted = set(args.only.split(","))
        cases = [c for c in cases if c.id in wanted]
    store = Path(tempfile.mkdtemp(prefix="bnn-attacks-store-"))
    _, model_source = fashion_model_into(store)
    logs = Path(tempfile.mkdtemp(prefix="bnn-attacks-logs-"))
    commit = subprocess.run(["git", "-C", str(args.before_tree if args.before else REPO), "rev-parse", "--short",
                             "HEAD"], capture_output=True, text=True).stdout.strip()
    load_before = _load()
    started = time.monotonic()
    isa, results = run_catalogue(cases, store, logs, launch=launcher(args), before=args.before, limit_s=args.limit_s,
                                 min_available=int(args.min_available_gib * GIB), echo=True)
    rows = [row(case, out) for case, out in results]

    mode = "before (old code)" if args.before else "after"
    lines = [
        f"# Resource attacks — {mode}",
        "",
        f"Code: commit {commit}" + (f" ({args.before_tree}, core {args.before_core}; the server's address space "
                                    f"capped at {args.as_limit_gib:g} GiB)" if args.before else f" ({REPO})") + ".",
        f"Machine: {cpu_name()}, {_cores()} cores; kernel path `{isa}`; load average {load_before} at the start, "
        f"{_load()} at the end (other work on the machine slows the CPU-bound cases). Model: {model_source}.",
        f"Server settings: defaults, BNN_KERNEL_THREADS={attacks.BASE_SETTINGS['kernel_threads']}, and per case as "
        "bench/harness/attacks.py says; a fresh server per case, one case at a time.",
        f"Measured from outside the server: peak RSS is VmHWM (reset before the case) over VmRSS before it; /healthz "
        f"is probed every 10 ms from a separate process; CPU release is how long the server kept using more than "
        f"half a core after the deadline or the client leaving (utime+stime sampled every 20 ms). A case is killed "
        f"after {args.limit_s:g} s or when MemAvailable falls below {args.min_available_gib:g} GiB.",
        f"Run: `.venv/bin/python bench/resource_attacks.py{' --before' if args.before else ''}` "
        f"({time.monotonic() - started:.0f} s).",
        "",
        "| case | sent | expected | status | largest answer | peak RSS Δ | worst /healthz | CPU release | duration "
        "| verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
