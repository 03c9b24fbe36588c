"""A reduced load run (2 processes x 8 concurrent async agents, one shared REJECT budget that runs out part-way):
nothing overspent, the ledger invariant holds on every scope, nothing left ACTIVE. The full run is
`benchmarks/bench_load.py` (64 agents), whose figures are in RELIABILITY.md."""

from __future__ import annotations

from benchmarks.bench_load import run_load


def test_concurrent_agents_never_overspend_a_shared_budget() -> None:
    result = run_load(processes=2, agents=8, runs=2, budget_fraction=0.5, timeout_s=120)
    assert result.failed_runs == 0
    assert result.completed_runs > 0 and result.denied_runs > 0  # the budget did run out under contention
    assert result.completed_runs + result.denied_runs == 2 * 8 * 2
    assert 0 < result.spent <= result.allocated
    assert result.invariant_problems == []
    assert result.active_left == 0 and result.reserved == 0
    assert set(result.statuses) <= {"COMMITTED", "RELEASED"}
