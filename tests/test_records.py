"""The front and hypervolume over trial records, with outcome constraints."""

from __future__ import annotations

import math

from autopeft.optimizers.outcomes import parse_constraints
from autopeft.results.records import ObjectiveInfo, TrialRecord, front_of, hypervolume_history, meets

OBJECTIVES = [ObjectiveInfo("accuracy", "maximize"), ObjectiveInfo("trainable_percent", "minimize")]


def record(number, accuracy, percent, memory=None, status="completed"):
    metrics = {} if memory is None else {"peak_memory_mb": memory}
    return TrialRecord(number, f"t{number}", {}, status=status,
                       objectives={"accuracy": accuracy, "trainable_percent": percent}, metrics=metrics)


def test_meets_reads_objectives_by_index_and_metrics_by_name():
    constraints = parse_constraints({"peak_memory_mb": ["<=", 100], 1: ["<=", 0.5]}, 2)
    assert meets(record(1, 0.7, 0.4, memory=90), constraints, OBJECTIVES)
    assert not meets(record(2, 0.7, 0.6, memory=90), constraints, OBJECTIVES)
    assert not meets(record(3, 0.7, 0.4, memory=120), constraints, OBJECTIVES)
    assert not meets(record(4, 0.7, 0.4), constraints, OBJECTIVES)  # not reported: not met


def test_infeasible_trials_leave_the_front_and_add_no_hypervolume():
    records = [record(1, 0.6, 0.1), record(2, 0.9, 0.2, memory=500), record(3, 0.8, 0.3, memory=50)]
    constraints = parse_constraints({"peak_memory_mb": ["<=", 100]}, 2)
    for r in records:
        r.feasible = meets(r, constraints, OBJECTIVES)
    assert [r.number for r in front_of(records, OBJECTIVES)] == [3]  # 1 has no memory figure
    curve = hypervolume_history(records, OBJECTIVES, reference=[0.5, 1.0])
    assert curve[:2] == [0.0, 0.0] and math.isclose(curve[2], 0.3 * 0.7)
    records[1].feasible = True
    assert [r.number for r in front_of(records, OBJECTIVES)] == [2]


def test_hypervolume_never_falls_when_a_trial_is_added():
    # Before: the progress line went 0.0011, 4.1e-09, 0.090 as the inferred reference moved
    # inwards (one trial: 10% of the value; two tied trials: 10% of a zero range).
    from autopeft.results.records import HypervolumeLog

    log = HypervolumeLog(OBJECTIVES)
    trials = [record(1, 0.578, 0.05), record(2, 0.578, 0.03), record(3, 0.55, 0.2),
              record(4, 0.7, 0.1, status="failed"), record(5, 0.74, 0.08), record(6, 0.6, 0.01)]
    seen = []
    for t in trials:
        seen.append(t)
        log.add(seen)
    assert len(log.curve) == 6 and all(b >= a for a, b in zip(log.curve, log.curve[1:]))
    assert log.curve[-1] > log.curve[0] > 0


def test_hypervolume_with_a_given_reference_uses_it_throughout():
    from autopeft.results.records import HypervolumeLog

    log = HypervolumeLog(OBJECTIVES, {"accuracy": 0.5, "trainable_percent": 1.0})
    log.add([record(1, 0.6, 0.5)])
    assert list(log.reference) == [0.5, 1.0] and math.isclose(log.curve[0], 0.1 * 0.5)
    assert "accuracy 0.5 (given)" in log.rule


def test_the_front_mask_agrees_with_botorchs() -> None:
    import numpy as np
    import torch
    from botorch.utils.multi_objective.pareto import is_non_dominated

    from autopeft.pareto import pareto_mask

    rng = np.random.default_rng(0)
    for values in (rng.random((300, 2)), rng.integers(0, 3, (200, 3)).astype(float), rng.random((1, 2))):
        values[::7] = values[0]  # ties are all kept
        directions = ["maximize", "minimize", "maximize"][:values.shape[1]]
        signs = np.array([1.0 if d == "maximize" else -1.0 for d in directions])
        expected = is_non_dominated(torch.from_numpy(values * signs), deduplicate=False).numpy()
        assert (pareto_mask(values, directions) == expected).all()


def test_a_summary_reads_a_strategy_range_as_the_number_it_is() -> None:
    from autopeft.results.records import summarize_config

    text = summarize_config({"strategy": "ist", "layers.0": True, "layers.1": False,
                             "target_modules.attn_q": True, "target_modules.attn_v": False,
                             "learning_rate.ist": 0.004727})
    assert text.split() == ["layers=10", "target_modules=attn_q", "strategy=ist", "learning_rate=0.00473"]
