"""Loading users' tables: formats, columns, splits without leaks, and clear errors."""

from __future__ import annotations

import json

import pytest

from autopeft.errors import DataError
from autopeft.tasks import DataSource, SequenceClassification, load_demo_data
from conftest import write_sentiment_csv

COLUMNS = {"text": "review", "label": "verdict"}


def keys(split) -> set:
    return {t.strip().lower() for t in split["text"]}


def test_csv_is_split_stratified_without_duplicates(tmp_path) -> None:
    path = write_sentiment_csv(tmp_path / "r.csv", rows=400)
    first_row = path.read_text().splitlines()[1]
    with path.open("a") as fh:  # duplicates must not leak across splits
        fh.write(f"{first_row}\n" * 5)
    data = SequenceClassification().load_data(DataSource(str(path), columns=COLUMNS), seed=0)
    assert data.label_names == ["neg", "pos"]
    sizes = len(data.train), len(data.dev), len(data.test)
    assert sum(sizes) == 400 and 30 <= sizes[1] <= 50 and 30 <= sizes[2] <= 50
    assert not keys(data.train) & keys(data.dev)
    assert not keys(data.train) & keys(data.test)
    assert not keys(data.dev) & keys(data.test)
    share = [sum(split["label"]) / len(split) for split in (data.train, data.dev, data.test)]
    assert max(share) - min(share) < 0.05, "splits keep the label balance"


def test_same_seed_same_split_other_seed_other_split(tmp_path) -> None:
    path = write_sentiment_csv(tmp_path / "r.csv")
    load = lambda seed: SequenceClassification().load_data(DataSource(str(path), columns=COLUMNS), seed)
    assert load(1).dev["text"] == load(1).dev["text"]
    assert load(1).dev["text"] != load(2).dev["text"]


def test_json_lines_pairs_and_given_dev_file(tmp_path) -> None:
    rows = [{"s1": f"sentence {i}", "s2": f"other {i % 5}", "y": i % 2} for i in range(120)]
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(json.dumps(r) for r in rows[:100]))
    dev = tmp_path / "dev.jsonl"
    dev.write_text("\n".join(json.dumps(r) for r in rows[100:]))
    source = DataSource(str(train), dev_file=str(dev), columns={"text": "s1", "text_pair": "s2", "label": "y"})
    data = SequenceClassification().load_data(source, seed=0)
    assert len(data.dev) == 20 and set(data.train.column_names) == {"text", "text_pair", "label"}
    assert data.label_names == ["0", "1"]


@pytest.mark.parametrize("columns, message", [
    ({"text": "body", "label": "verdict"}, "text column 'body' not found; columns are"),
    ({"text": "review", "label": "stars"}, "label column 'stars' not found"),
])
def test_missing_column_names_the_column_and_file(sentiment_csv, columns, message) -> None:
    with pytest.raises(DataError, match=message) as info:
        SequenceClassification().load_data(DataSource(str(sentiment_csv), columns=columns), seed=0)
    assert str(sentiment_csv) in str(info.value)


def test_empty_and_missing_files_are_clear_errors(tmp_path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("review,verdict\n")
    with pytest.raises(DataError, match="empty"):
        SequenceClassification().load_data(DataSource(str(empty), columns=COLUMNS), seed=0)
    with pytest.raises(DataError, match="data file not found"):
        SequenceClassification().load_data(DataSource(str(tmp_path / "nope.csv"), columns=COLUMNS), seed=0)
    with pytest.raises(DataError, match="unsupported file type"):
        (tmp_path / "a.xlsx").write_text("x")
        SequenceClassification().load_data(DataSource(str(tmp_path / "a.xlsx"), columns=COLUMNS), seed=0)


def test_demo_data_is_fresh_vs_rotten_without_plot_rows() -> None:
    data = load_demo_data(seed=0)
    assert data.label_names == ["fresh", "rotten"]
    total = len(data.train) + len(data.dev) + len(data.test)
    assert 12_000 < total <= 12_808
    assert not keys(data.train) & keys(data.test)


def test_data_without_task_is_the_users_and_says_what_was_dropped(tmp_path, tiny_model_dir) -> None:
    from autopeft.config import DataConfig, SearchConfig
    from autopeft.driver.drive import describe_data
    from autopeft.driver.setup import prepare

    path = tmp_path / "tickets.csv"
    rows = ["body,queue"] + [f"printer {i} is jammed,hardware" for i in range(30)] \
        + [f"password {i} expired,accounts" for i in range(30)] \
        + ["printer 1 is jammed,hardware", "printer 2 is jammed,hardware", ",accounts", "no queue given,"]
    path.write_text("\n".join(rows) + "\n")
    setup, _ = prepare(SearchConfig(model=str(tiny_model_dir), optimizer="random",
                                    data=DataConfig(train_file=str(path), text_column="body", label_column="queue")))
    assert setup.task.name == "classification" and setup.data.label_names == ["accounts", "hardware"]
    text = describe_data(setup)
    assert str(path) in text and "body -> queue" in text
    assert f"2 train rows of {path} dropped: body or queue empty" in text
    assert "2 train examples removed as duplicates" in text


def test_data_seed_keeps_the_splits_and_training_seed_moves_only_the_training(tiny_model_dir, tmp_path) -> None:
    from autopeft.config import DataConfig, Fidelity, SearchConfig
    from autopeft.driver.setup import load_setup

    path = write_sentiment_csv(tmp_path / "r.csv", rows=300)

    def setup(**seeds):
        return load_setup(SearchConfig(model=str(tiny_model_dir), space="lora", data=DataConfig(
            train_file=str(path), text_column="review", label_column="verdict"),
            fidelity=Fidelity(max_train_examples=60, max_eval_examples=20), **seeds))

    first, same_data, other = setup(seed=0), setup(seed=3, data_seed=0, training_seed=7), setup(seed=3)
    assert same_data.train_tokens["input_ids"] == first.train_tokens["input_ids"]
    assert same_data.dev_tokens["input_ids"] == first.dev_tokens["input_ids"]
    assert other.train_tokens["input_ids"] != first.train_tokens["input_ids"]
    assert (first.seed, same_data.seed, other.seed) == (0, 7, 3)  # what each trial trains with
