"""What a search knows before its first trial and how MOBO uses it: the encoding read back,
space-filling designs, a code for inactive dimensions, objectives computed exactly, the
reference rule, and trials that learned nothing (issue 24)."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from datasets import Dataset
from scipy.stats import qmc

from autopeft.trial.binding import get_adapter
from autopeft.trial.binding import bind_space
from autopeft.models import model_layout
from autopeft.objectives import resolve_objectives
from autopeft.optimizers import make_optimizer
from autopeft.optimizers import mobo as mobo_module
from autopeft.optimizers.base import initial_designs, sample_unseen
from autopeft.results.records import ObjectiveInfo, TrialRecord, front_of, learned
from autopeft.optimizers.knowledge import extreme, search_knowledge
from autopeft.space import load_space
from autopeft.tasks import SequenceClassification

DIRECTIONS = ["maximize", "minimize"]
FAST = {"n_initial": 6, "n_candidates": 200, "mc_samples": 16}
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def counted_space(tiny_model_dir):
    """The LoRA preset bound to the tiny BERT, with its parameter counter."""
    from transformers import AutoModelForSequenceClassification

    spec = load_space("lora")
    layout = model_layout(AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2))
    return bind_space(spec, get_adapter(spec), layout)


def test_decode_reads_back_every_encoded_configuration(counted_space):
    space, rng = counted_space, np.random.default_rng(0)
    for _ in range(200):
        config = space.sample(rng)
        back = space.decode(space.encode(config))
        assert back.keys() == config.keys()
        for name, value in config.items():
            assert back[name] == pytest.approx(value, rel=1e-9) if isinstance(value, float) else back[name] == value


def test_an_inactive_rank_has_a_code_of_its_own(counted_space):
    space = counted_space
    base = space.sample(np.random.default_rng(1))
    off = space.canonical({**base, "layers.0": False, "layers.1": True})
    on = space.canonical({**base, "layers.0": True, "layers.1": True, "rank.0": min(space.dimension("rank.0").values)})
    col = [d.name for d in space.dimensions].index("rank.0")  # ordinal: one column
    assert space.encode(off)[col] == 0.0 and space.encode(on)[col] > 0.0  # before: 0.0 both


def test_initial_designs_fill_the_space_more_evenly_than_uniform_draws(counted_space):
    space = counted_space

    def discrepancy(configs):
        return qmc.discrepancy(np.stack([space.encode(c) for c in configs]).clip(0, 1))

    sobol, uniform = [], []
    for seed in range(12):
        designs = initial_designs(space, seed, 16)
        assert len({space.key(c) for c in designs}) == 16 and all(space.is_valid(c) for c in designs)
        assert designs == initial_designs(space, seed, 16)  # the same for every optimizer
        rng, seen, draws = np.random.default_rng(seed), set(), []
        for _ in range(16):
            draws.append(sample_unseen(space, rng, seen))
            seen.add(space.key(draws[-1]))
        sobol.append(discrepancy(designs))
        uniform.append(discrepancy(draws))
    assert np.mean(sobol) < np.mean(uniform)


def test_the_trainable_share_is_computed_never_modelled(counted_space, monkeypatch):
    space = counted_space
    share = resolve_objectives(["trainable_percent"])[0].analytic
    fits = []
    original = mobo_module.quiet_fit
    monkeypatch.setattr(mobo_module, "quiet_fit", lambda *a, **k: fits.append(1) or original(*a, **k))
    lr = [d.name for d in space.dimensions].index("learning_rate")
    for analytic, expected_models in ((None, 2), ([None, share], 1)):
        opt = make_optimizer("mobo", space, DIRECTIONS, seed=0, analytic=analytic, **FAST)
        for _ in range(8):
            fits.clear()
            config = opt.ask()
            # Told a share off by a constant: the exact one rules where it is known.
            opt.tell(config, [float(space.encode(config)[lr]), share(space.scope(config)) + 1.0])
        assert opt.last_ask_source == "model" and len(fits) == expected_models
    exact = opt._exact
    for config in [space.sample(np.random.default_rng(s)) for s in range(5)]:
        value = exact.at(torch.from_numpy(space.encode(config))[None, :], 1).item()
        assert value == pytest.approx(space.derive(space.assemble(config))["trainable_percent"])


def test_the_reference_is_the_task_floor_and_the_space_largest(counted_space):
    space = counted_space
    objectives = resolve_objectives(["accuracy", "trainable_percent"])
    known = search_knowledge(objectives, space, {"accuracy": (0.6, "the majority class on dev")}, {})
    share = objectives[1].analytic
    everything = space.canonical({**{d.name: True for d in space.dimensions if not hasattr(d, "values")},
                                  **{d.name: max(d.values) for d in space.dimensions if hasattr(d, "values")},
                                  "learning_rate": 1e-3})
    assert known.reference == {"accuracy": 0.6, "trainable_percent": pytest.approx(share(space.scope(everything)))}
    assert known.floors == {"accuracy": 0.6} and set(known.analytic) == {"trainable_percent"}
    assert "majority" in known.why["accuracy"] and "largest" in known.why["trainable_percent"]
    given = search_knowledge(objectives, space, {"accuracy": (0.6, "")}, {"accuracy": 0.7})
    assert given.reference["accuracy"] == 0.7 and given.why["accuracy"] == "given"
    assert extreme(space, share, largest=False) < known.reference["trainable_percent"] / 50


def test_the_task_knows_its_floor():
    dev = Dataset.from_dict({"label": [0, 1, 1, 1, 2]})
    assert SequenceClassification().floors(dev) == {"accuracy": (0.6, "the majority class on dev")}


def test_a_trial_at_the_majority_class_is_kept_off_the_front():
    objectives = [ObjectiveInfo("accuracy", "maximize", 0.6), ObjectiveInfo("trainable_percent", "minimize")]
    records = [TrialRecord(1, "a", {}, "completed", {"accuracy": 0.6, "trainable_percent": 0.01}),
               TrialRecord(2, "b", {}, "completed", {"accuracy": 0.75, "trainable_percent": 0.2}),
               TrialRecord(3, "c", {}, "completed", {"accuracy": 0.7, "trainable_percent": 0.1})]
    assert [r.number for r in front_of(records, objectives)] == [2, 3]  # before: 1 too, the cheapest
    assert not learned(records[0], objectives)


def test_trials_that_learned_nothing_are_modelled_apart(counted_space, monkeypatch):
    # Above a learning rate (encoded 0.6) every trial collapses to the majority class (0.6);
    # below it, accuracy grows with the learning rate. Before, the quality model fitted the
    # cliff; with the floor it fits the trials that learned, and a "learns" model (1/0) weighs
    # each candidate by its chance to learn (how much that helps is measured on the tables:
    # benchmarks/replay.py).
    space = counted_space
    lr = [d.name for d in space.dimensions].index("learning_rate")
    share = resolve_objectives(["trainable_percent"])[0].analytic
    targets = []
    original = mobo_module.quiet_fit
    monkeypatch.setattr(mobo_module, "quiet_fit",
                        lambda fit, X, y, **k: targets.append(y.view(-1).tolist()) or original(fit, X, y, **k))
    fitted = {}
    for floors in (None, [0.6, None]):
        opt = make_optimizer("mobo", space, DIRECTIONS, seed=0, floors=floors, analytic=[None, share],
                             reference_point=[0.6, 10.0], **FAST)
        rng = np.random.default_rng(0)
        for u in [0.1, 0.3, 0.5, 0.7, 0.9, 0.2, 0.8]:
            config = space.canonical({**space.sample(rng), "learning_rate": space.dimension("learning_rate").decode([u])})
            opt.tell(config, [0.6 if u > 0.6 else 0.62 + 0.3 * u, share(space.scope(config))])
        targets.clear()
        assert opt._model_ask() is not None
        fitted[floors is None] = list(targets)
    assert len(fitted[True]) == 1 and 0.6 in fitted[True][0]  # the cliff in the quality model
    quality, learns = fitted[False]
    assert 0.6 not in quality and len(quality) == 4
    assert sorted(learns) == [0.0] * 3 + [1.0] * 4


def test_the_trainable_share_is_an_input_of_the_models(counted_space, monkeypatch):
    # Accuracy here follows the adapter's size alone (log trainable share), which the encoding
    # spreads over ranks, modules and layers. With the exact share as an input the quality
    # model ranks unseen configurations by it; on the encoding alone it ranks them poorly from 20 trials (0.35 rank correlation).
    from scipy.stats import spearmanr

    space = counted_space
    share = resolve_objectives(["trainable_percent"])[0].analytic
    lo, hi = np.log(extreme(space, share, largest=False)), np.log(extreme(space, share))

    def accuracy(config):
        return 0.62 + 0.3 * (np.log(share(space.scope(config))) - lo) / (hi - lo)

    models = []
    original = mobo_module.quiet_fit
    monkeypatch.setattr(mobo_module, "quiet_fit", lambda *a, **k: models.append(original(*a, **k)) or models[-1])
    rng = np.random.default_rng(0)
    told = [space.sample(rng) for _ in range(20)]
    unseen = [space.sample(rng) for _ in range(60)]
    truth = [accuracy(c) for c in unseen]
    X = torch.from_numpy(np.stack([space.encode(c) for c in unseen]))
    rho = {}
    for exact_inputs in (False, True):
        opt = make_optimizer("mobo", space, DIRECTIONS, seed=0, analytic=[None, share],
                             reference_point=[0.6, 10.0], exact_inputs=exact_inputs, **FAST)
        for config in told:
            opt.tell(config, [accuracy(config), share(space.scope(config))])
        models.clear()
        assert opt._model_ask() is not None and len(models) == 1
        model = models[0]
        assert model.covar_module.lengthscale.shape[-1] == space.encoded_width + exact_inputs
        with torch.no_grad():
            rho[exact_inputs] = spearmanr(model.posterior(X).mean.view(-1).numpy(), truth).statistic
    assert rho[True] > 0.9 and rho[True] > rho[False] + 0.2
