"""The device check: what autopeft does on one GPU, measured in one command of under ten
minutes, figures written to a folder.

    .venv/bin/python benchmarks/gpu_check.py --out gpu_check            # on a GPU machine
    .venv/bin/python benchmarks/gpu_check.py --install --out gpu_check  # a fresh one: CUDA torch first
    .venv/bin/python benchmarks/gpu_check.py --dry-run --out /tmp/gpu   # on a CPU (CI): every step, tiny

On a machine set up by the README (`make install`), ``--install`` replaces the CPU torch with
the CUDA build of the same version from PyTorch's index (``--index-url``, default
https://download.pytorch.org/whl/cu126) and adds bitsandbytes, then runs the check. Without a
CUDA GPU it stops at once with one line, unless ``--dry-run``.

(a) one demo trial on the GPU and the same trial on the CPU path: examples/s;
(b) 1, 2 and 4 concurrent demo trials on the one GPU (``--gpus-per-trial 1/k``): aggregate
    training examples/s against one trial's (the goal: at least 3x at 4);
(c) a QLoRA trial on SmolLM2 (4-bit NF4 base, bitsandbytes) against bf16 LoRA: CUDA peak memory;
(d) a 6-trial demo-lm search end to end, with its front.

``--dry-run`` runs the same steps on the CPU at a toy size (a tiny LLaMA in place of SmolLM2,
(c) without its 4-bit half): it proves the script, not the GPU. ``OUT/figures.json`` holds
every figure, ``OUT/summary.md`` a table of them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEMO_FIDELITY = {"max_train_examples": 1200, "max_length": 48, "batch_size": 8, "max_eval_examples": 300}
TOY_FIDELITY = {"max_train_examples": 48, "max_length": 32, "batch_size": 8, "max_eval_examples": 32}
LORA = {"rank": 8, "target_modules": ["attn_q", "attn_v"], "learning_rate": 3e-3}
SPACE = str(Path(__file__).resolve().parents[1] / "examples" / "lora_demo.yaml")


def trial_speed(fidelity: dict, cpu: bool) -> dict:
    """One demo trial in this process: its device and training examples/s."""
    import torch

    from autopeft.config import SearchConfig
    from autopeft.driver.setup import prepare
    from autopeft.trial.run import run_trial

    if cpu:
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    config = SearchConfig(task="demo", space=SPACE, optimizer="random", fixed={**LORA, "layers": [True] * 6})
    for key, value in fidelity.items():
        setattr(config.fidelity, key, value)
    setup, optimizer = prepare(config)
    result = run_trial(setup, optimizer.ask())
    return {"device": result.placement.device, "examples_per_second": result.cost["examples_per_second"],
            "train_seconds": result.cost["train_seconds"], "accuracy": result.objectives["accuracy"]}


def on_cpu(fidelity: dict) -> dict:
    """The same trial in a process that sees no GPU (the CPU path)."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import gpu_check; "
            f"print(json.dumps(gpu_check.trial_speed({fidelity!r}, cpu=True)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900)
    if done.returncode:
        raise SystemExit(f"the CPU trial failed: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def concurrent(k: int, fidelity: dict, out: Path, gpus: int) -> dict:
    """``k`` demo trials at once, ``1/k`` of the GPU each: aggregate training examples/s."""
    import autopeft

    with tempfile.TemporaryDirectory(dir=out) as tmp:
        started = time.perf_counter()
        result = autopeft.search(task="demo", space=SPACE, optimizer="random", trials=k,
                                 concurrency=k, gpus_per_trial=(1 / k) if gpus else None, output_dir=tmp,
                                 progress=False, **fidelity)
        wall = time.perf_counter() - started
    done = [t for t in result.trials if t.status == "completed"]
    examples = sum(t.metrics["examples_per_second"] * t.metrics["train_seconds"] for t in done)
    fit = result.timings.get("fit_seconds", wall)
    return {"trials": k, "completed": len(done), "aggregate_examples_per_second": examples / fit,
            "fit_seconds": fit, "devices": sorted({t.device or "" for t in done})}


def lm_memory(model: str | None, fidelity: dict, four_bit: bool) -> dict:
    """One LoRA trial on SmolLM2 (or ``model``) in bf16, its base in 4-bit or not: peak memory."""
    from autopeft.config import SearchConfig
    from autopeft.driver.setup import prepare
    from autopeft.trial.run import run_trial

    config = SearchConfig(task="demo-lm", model=model, optimizer="random",
                          fixed={"precision": "bf16", "quantization": "4bit" if four_bit else "none"})
    for key, value in fidelity.items():
        setattr(config.fidelity, key, value)
    setup, optimizer = prepare(config)
    result = run_trial(setup, optimizer.ask())
    return {"quantization": "4bit" if four_bit else "none", "device": result.placement.device,
            "peak_memory_mb": result.cost["peak_memory_mb"], "exact_match": result.objectives.get("exact_match")}


def lm_search(model: str | None, trials: int, fidelity: dict | None, out: Path) -> dict:
    """demo-lm's search end to end: its front."""
    import autopeft

    with tempfile.TemporaryDirectory(dir=out) as tmp:
        result = autopeft.search(task="demo-lm", model=model, trials=trials, output_dir=tmp, progress=False,
                                 **(fidelity or {}))
    return {"trials": len(result.trials), "seconds": result.seconds, "reference": result.reference_rule,
            "front": result.table().drop(columns=[c for c in result.table().columns if c.startswith("param:")])
            .to_dict(orient="records")}


def install(index: str) -> None:
    """The CUDA build of the installed torch version, and bitsandbytes."""
    import torch

    version = torch.__version__.split("+")[0]
    for cmd in ([sys.executable, "-m", "pip", "install", "--force-reinstall", "--no-deps", f"torch=={version}",
                 "--index-url", index], [sys.executable, "-m", "pip", "install", "bitsandbytes"]):
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU at a toy size")
    parser.add_argument("--install", action="store_true", help="install CUDA torch and bitsandbytes first")
    parser.add_argument("--index-url", default="https://download.pytorch.org/whl/cu126")
    parser.add_argument("--tiny-lm", default=None, help="a local causal LM in place of SmolLM2 (the dry run's)")
    args = parser.parse_args()
    if args.install:
        install(args.index_url)
        os.execv(sys.executable, [sys.executable, *[a for a in sys.argv if a != "--install"]])
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not gpus and not args.dry_run:
        raise SystemExit("gpu_check: no CUDA GPU is visible (torch.cuda.is_available() is False); "
                         "--install for CUDA torch, or --dry-run to check the script on a CPU")
    args.out.mkdir(parents=True, exist_ok=True)
    fidelity = TOY_FIDELITY if args.dry_run else DEMO_FIDELITY
    figures: dict = {"gpus": [torch.cuda.get_device_name(i) for i in range(gpus)], "dry_run": args.dry_run,
                     "torch": torch.__version__}
    started = time.perf_counter()

    def step(name: str, fn, *a) -> None:
        t = time.perf_counter()
        figures[name] = fn(*a)
        print(f"{name}: {json.dumps(figures[name])[:300]} ({time.perf_counter() - t:.0f} s)", flush=True)
        (args.out / "figures.json").write_text(json.dumps(figures, indent=1, default=str))

    step("a_trial_gpu", trial_speed, fidelity, False)
    step("a_trial_cpu", on_cpu, fidelity)
    from autopeft.driver.runner import ray_session

    # One Ray for the searches of (b) and (d), as a search leaves it up: each start and stop
    # costs seconds of every core. (c) trains in this process and measures only its own memory.
    with ray_session():
        for k in ((2,) if args.dry_run else (1, 2, 4)):  # the dry run: k = 1 is the same path
            step(f"b_concurrent_{k}", concurrent, k, fidelity, args.out, gpus)
        lm_fidelity = TOY_FIDELITY if args.dry_run else None
        lm_fid = lm_fidelity or {"max_train_examples": 160, "max_eval_examples": 64, "max_length": 96,
                                 "batch_size": 8}
        step("c_lora_bf16", lm_memory, args.tiny_lm, lm_fid, False)
        if gpus:
            step("c_qlora_4bit", lm_memory, args.tiny_lm, lm_fid, True)
        step("d_demo_lm_search", lm_search, args.tiny_lm, 2 if args.dry_run else 6, lm_fidelity, args.out)
    figures["seconds"] = time.perf_counter() - started
    (args.out / "figures.json").write_text(json.dumps(figures, indent=1, default=str))
    (args.out / "summary.md").write_text(summary(figures))
    print(summary(figures))


def summary(f: dict) -> str:
    one = f.get("b_concurrent_1", {}).get("aggregate_examples_per_second") or float("nan")
    lines = [f"GPUs: {f['gpus'] or 'none (dry run)'}; torch {f['torch']}; {f.get('seconds', 0):.0f} s in all", "",
             "| check | figure |", "|---|---|",
             f"| (a) one demo trial, {f['a_trial_gpu']['device']} | {f['a_trial_gpu']['examples_per_second']:.1f} examples/s |",
             f"| (a) the same trial, CPU path | {f['a_trial_cpu']['examples_per_second']:.1f} examples/s |"]
    for key in sorted(k for k in f if k.startswith("b_concurrent_")):
        b = f[key]
        lines.append(f"| (b) {b['trials']} trials at once | {b['aggregate_examples_per_second']:.1f} examples/s "
                     f"({b['aggregate_examples_per_second'] / one:.2f}x one) |")
    for key in ("c_lora_bf16", "c_qlora_4bit"):
        if key in f:
            lines.append(f"| (c) LoRA, base {f[key]['quantization']}, bf16 | peak {f[key]['peak_memory_mb']:.0f} MB |")
    d = f["d_demo_lm_search"]
    lines.append(f"| (d) demo-lm search | {d['trials']} trials, front of {len(d['front'])}, {d['seconds']:.0f} s |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
