"""The optimizer works on every shipped space through its declared encoding."""

from __future__ import annotations

import numpy as np
import pytest

from autopeft.optimizers import make_optimizer
from autopeft.space import load_space, presets


def synthetic(values: dict) -> list[float]:
    """Quality rises with what is trained, cost with it too (a stand-in for a real trial)."""
    size = sum(len(str(v)) for v in values.values() if v is not None)
    return [float(np.log1p(size)), float(size)]


@pytest.mark.parametrize("preset", presets())
def test_mobo_asks_valid_distinct_configurations_on_each_preset(preset) -> None:
    space = load_space(preset).bind(6)
    encoded = [space.encode(space.sample(np.random.default_rng(i))) for i in range(20)]
    assert all(x.shape == (space.encoded_width,) and ((0 <= x) & (x <= 1)).all() for x in encoded)
    optimizer = make_optimizer("mobo", space, ["maximize", "minimize"], seed=0, n_initial=4,
                               n_candidates=200)
    seen = set()
    for _ in range(7):
        config = optimizer.ask()
        assert space.is_valid(config)
        assert space.key(config) not in seen
        seen.add(space.key(config))
        optimizer.tell(config, synthetic(space.assemble(config)))
    assert optimizer.last_ask_source == "model"
