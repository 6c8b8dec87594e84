"""Warm start: a search that begins with another search's front, from MLflow by run id or
from Python as configurations; and the errors for a search that cannot seed it."""

from __future__ import annotations

import pytest

import autopeft
from autopeft.errors import ConfigError
from autopeft.optimizers import make_optimizer
from autopeft.optimizers.base import initial_designs
from autopeft.space import load_space

from conftest import LEARNS, write_sentiment_csv


def test_warm_configs_take_the_place_of_the_first_random_designs() -> None:
    space = load_space("lora").bind(4)
    cold = initial_designs(space, seed=3, n=4)
    warm = [cold[3], {"not": "valid"}, cold[3]]  # invalid and repeated ones are left out
    designs = initial_designs(space, seed=3, n=4, first=warm)
    # The random stream is the cold one: its first three draws fill the rest.
    assert designs == [cold[3], cold[0], cold[1], cold[2]]
    for name in ("mobo", "random", "tpe"):
        optimizer = make_optimizer(name, space, ["maximize", "minimize"], seed=0, n_initial=3)
        optimizer.warm_start([cold[2], cold[0]])
        assert [optimizer.ask(), optimizer.ask()] == [cold[2], cold[0]], name


def test_a_search_warm_started_from_a_stored_search_tries_its_front_first(tiny_search, tiny_model_dir) -> None:
    old, tmp = tiny_search
    data = write_sentiment_csv(tmp / "other.csv", rows=200, seed=7)
    result = autopeft.search(
        task="classification", model=str(tiny_model_dir), train_file=str(data), text_column="review",
        label_column="verdict", optimizer="random", trials=len(old.front) + 1, max_train_examples=32,
        max_length=32, fixed=LEARNS, warm_start=old.run_id, optimizer_options={"n_initial": len(old.front) + 1},
        output_dir=str(tmp / "runs"), experiment="warm", progress=False, learned_only=False)
    first = sorted(result.trials, key=lambda t: t.number)[: len(old.front)]
    assert [t.config for t in first] == [t.config for t in old.front]
    from mlflow.tracking import MlflowClient

    assert MlflowClient(result.tracking_uri).get_run(result.run_id).data.params["warm_start"] == old.run_id


def test_warm_start_errors_name_the_run_and_the_space(tiny_search, tiny_model_dir) -> None:
    old, tmp = tiny_search
    options = dict(task="classification", model=str(tiny_model_dir), train_file=str(tmp / "reviews.csv"),
                   text_column="review", label_column="verdict", trials=1, output_dir=str(tmp / "runs"),
                   progress=False)
    with pytest.raises(ConfigError, match="no search run 'f00' in sqlite"):
        autopeft.search(warm_start="f00", **options)
    with pytest.raises(ConfigError, match="searched space 'lora', this one 'peft_family'"):
        autopeft.search(warm_start=old.run_id, space="peft_family", **options)
    # The old search fixed the learning rate; one that searches it cannot start from that front.
    with pytest.raises(ConfigError, match="none of the .* configurations on the front of search .* is a "
                                          "configuration of this space"):
        autopeft.search(warm_start=old.run_id, **options)
