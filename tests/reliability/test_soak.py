"""A reduced soak (~500 governed calls with random model errors, failing tools, cancelled runs and parallel tool
calls): zero drift between independently priced usage and committed spend, zero leaked reservations, flat memory.
The full soak is `benchmarks/bench_soak.py` (10,000 calls), whose figures are in RELIABILITY.md."""

from __future__ import annotations

from benchmarks.bench_soak import run_soak
from otel_cycles._reaper import REAPER


def test_soak_has_no_drift_no_leaks_and_flat_memory(spans) -> None:
    reaped_before = REAPER.reaped
    result = run_soak(500, spans, seed=7, tool_delay_s=0.0)
    assert result.calls >= 500
    assert all(result.runs.values()), result.runs  # every scenario happened
    assert result.priced > 0 and result.stamped == result.priced
    assert result.drift == 0, (result.spent, result.priced)
    assert result.active_left == 0 and result.reserved == 0
    assert result.invariant_problems == []
    assert REAPER.reaped > reaped_before  # cancelled runs were released, not left to the TTL
    (_, _, traced_middle, _), (_, _, traced_end, _) = result.memory[1], result.memory[2]
    assert traced_end - traced_middle < 4.0  # MiB over the second half of the soak
