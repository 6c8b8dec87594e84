"""Fault injection: a search in which a share of trials fail in each way trials fail (an
exception, a NaN loss, out of memory under a memory cap, a hang past the trial timeout, a
worker process killed), run twice with the real CLI: once through, and once with its driver
SIGKILLed at a random moment and the search resumed with ``--resume``. Prints both searches'
trials, the count of each failure, whether the proposals agree trial by trial, the child runs
in MLflow, and the Ray processes left after the kill.

    .venv/bin/python benchmarks/faults.py --trials 12 --share 0.5 --out benchmarks/results/faults

Faults come from ``AUTOPEFT_FAILPOINTS`` (:mod:`autopeft.training.failpoints`): each trial's fault
follows from a hash of its configuration, so the same configuration meets the same fault in
both searches. The model is a 4-layer BERT of hidden size 32 built from a config (random
weights, the demo's tokenizer), and the data a generated two-class table: the trials cost
seconds, the faults are the point.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import torch
from mlflow.tracking import MlflowClient
from transformers import BertConfig, BertForSequenceClassification

from autopeft.training.failpoints import ENV, KINDS
from autopeft.driver.reaper import ray_descendants
from autopeft.tasks import demo_model_path
from autopeft.results.tracking import FAILURE, STATUS, TRIAL_NUMBER, load_search

TIMEOUT = 60  # s: the trial timeout, which the hanging trials run into (normal trials take a few)


def tiny_model(path: Path) -> Path:
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=128)
    BertForSequenceClassification(config).save_pretrained(path)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(Path(demo_model_path()) / name, path / name)
    return path


def table(path: Path, rows: int = 400) -> Path:
    rng = random.Random(0)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["review", "verdict"])
        for i in range(rows):
            label = rng.choice(["pos", "neg"])
            word = rng.choice(["great", "superb"] if label == "pos" else ["awful", "dull"])
            writer.writerow([f"the film was {word} number {i}", label])
    return path


def trials_of(client: MlflowClient, experiment: str) -> tuple[object, list]:
    stored = load_search(client, experiment)  # its trials' runs, by trial number
    return stored.parent, stored.runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--share", type=float, default=0.5, help="share of trials that meet a fault")
    parser.add_argument("--seed", type=int, default=0, help="the search's seed and the kill moment's")
    parser.add_argument("--optimizer", default="tpe")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/faults"))
    args = parser.parse_args()
    work = args.out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    config = work / "search.yaml"
    config.write_text(json.dumps({
        "task": "classification", "model": str(tiny_model(work / "tiny-bert")), "optimizer": args.optimizer,
        "optimizer_options": {"n_initial": 4}, "trials": args.trials, "seed": args.seed,
        "data": {"train_file": str(table(work / "reviews.csv")), "text_column": "review", "label_column": "verdict"},
        "fidelity": {"max_train_examples": 240, "max_length": 32, "epochs": 2},
        "limits": {"trial_timeout": TIMEOUT, "trial_memory": 1.0},
        "output_dir": str(work / "runs")}))
    env = {**os.environ, ENV: json.dumps({"share": args.share, "kinds": list(KINDS)})}
    search = [sys.executable, "-m", "autopeft.cli", "search", "--config", str(config), "--quiet"]
    client = MlflowClient(f"sqlite:///{work / 'runs' / 'mlflow.db'}")
    lines = [f"{args.trials} trials, share {args.share} faulty ({', '.join(KINDS)}), {args.optimizer}, "
             f"seed {args.seed}, trial timeout {TIMEOUT} s, memory cap 1 GB per trial"]

    started = time.monotonic()
    subprocess.run(search + ["--experiment", "through"], env=env, check=True, capture_output=True)
    through_seconds = time.monotonic() - started
    _, through = trials_of(client, "through")

    # The kill comes at a random moment of the search's span (the uninterrupted one's length).
    kill_at = random.Random(args.seed).uniform(0.2, 0.8) * through_seconds
    driver = subprocess.Popen(search + ["--experiment", "killed"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: list[psutil.Process] = []
    while time.monotonic() - started - through_seconds < kill_at and driver.poll() is None:
        seen += [p for p in ray_descendants(driver.pid).values() if p not in seen]
        time.sleep(0.2)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    _, alive = psutil.wait_procs(seen, timeout=20)
    _, at_kill = trials_of(client, "killed")
    lines.append(f"SIGKILL of the driver at {kill_at:.0f} s: {sum(r.data.tags.get(STATUS) != 'running' for r in at_kill)} "
                 f"trials ended, {sum(r.data.tags.get(STATUS) == 'running' for r in at_kill)} running; "
                 f"{len(seen)} Ray processes seen, {len(alive)} alive 20 s after the kill")
    subprocess.run([sys.executable, "-m", "autopeft.cli", "front", "--output-dir", str(work / "runs"),
                    "--experiment", "killed"], env=env, check=True, capture_output=True)
    parent, marked = trials_of(client, "killed")
    lines.append(f"after `autopeft front`: search {parent.data.tags[STATUS]} ({parent.info.status}); trials "
                 + ", ".join(f"{k} {v}" for k, v in Counter(r.data.tags[STATUS] for r in marked).items()))
    subprocess.run(search + ["--experiment", "killed", "--resume"], env=env, check=True, capture_output=True)
    parent, resumed = trials_of(client, "killed")

    lines.append(f"after --resume: search {parent.data.tags[STATUS]}, {len(resumed)} child runs "
                 f"(numbers {sorted(int(r.data.tags[TRIAL_NUMBER]) for r in resumed) == list(range(1, args.trials + 1))}"
                 f" 1..{args.trials})")
    same = [a.data.params == b.data.params for a, b in zip(through, resumed)]
    lines.append(f"proposals equal to the uninterrupted search's, trial by trial: {sum(same)}/{len(same)}")
    lines.append("\ntrial  uninterrupted                  killed + resumed               attempts  failure")
    for a, b in zip(through, resumed):
        lines.append(f"{a.data.tags[TRIAL_NUMBER]:>5}  {a.data.tags[STATUS]:<30} {b.data.tags[STATUS]:<30} "
                     f"{b.data.tags.get('autopeft.attempts', '1'):>8}  {(b.data.tags.get(FAILURE) or '')[:90]}")
    reasons = Counter(_kind(r.data.tags.get(FAILURE)) for r in resumed if r.data.tags[STATUS] != "completed")
    lines.append("\nfailures by kind (resumed search): " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())))
    text = "\n".join(lines)
    print(text)
    (args.out / "faults.txt").write_text(text + "\n")


def _kind(reason: str | None) -> str:
    reason = reason or ""
    for needle, kind in (("raised", "exception"), ("loss is nan", "nan_loss"), ("worker process died", "worker_killed"),
                         ("out of memory", "out_of_memory"), ("timeout", "hang")):
        if needle in reason:
            return kind
    return reason[:40] or "?"


if __name__ == "__main__":
    main()
