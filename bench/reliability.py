"""Faults injected into real runs on the offline SmolLM2: Ctrl-C (SIGINT) during scoring,
training and set building, then the same command again. Measures what the killed run said,
how much of its work the re-run found (and how much it had to redo), and the bad-input cases
of the test suite. Writes bench/results/reliability.json.

    .venv/bin/python bench/reliability.py            # ~10 min on 2 cores
    .venv/bin/python bench/reliability.py --only scores
    .venv/bin/python bench/reliability.py --only bad-input   # the test cases, and BENCHMARKS' table

Each fault runs the CLI as a user would (a subprocess of `python -m mia_tuner.cli`), in a
fresh cache folder, and sends SIGINT after a delay chosen to fall in the middle of the work.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from blocks import publish as publish_block

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "wikimia24"
RESULTS = ROOT / "bench" / "results" / "reliability.json"
MODEL = "smollm2-135m-instruct"


def cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "mia_tuner.cli", "-v", *argv]  # -v: the resume log lines


def run(argv: list[str], env: dict, stop_after: float | None = None) -> dict:
    """Run a command; with ``stop_after`` send SIGINT once that many seconds have passed."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if stop_after is not None:
        try:
            process.wait(timeout=stop_after)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=1800)
    return {"rc": process.returncode, "seconds": round(time.perf_counter() - started, 1),
            "stdout": out, "stderr": err, "traceback": "Traceback" in err,
            "last_line": (err.strip().splitlines() or [""])[-1]}


def environment(work: Path) -> dict:
    """A fresh cache in ``work`` that shares the prepared offline models (no second download)."""
    from mia_tuner.config import default_cache_dir

    cache = work / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "models").symlink_to(default_cache_dir() / "models", target_is_directory=True)
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "MIA_TUNER_CACHE": str(cache)}


def scores_fault(work: Path) -> dict:
    """SIGINT 40 s into a ~2-minute scoring run of 200 texts; the re-run finishes it."""
    argv = cli("scores", "--model", MODEL, "--data", str(DATA), "--split", "WikiMIA_length32",
               "--methods", "loss,zlib,min-k%,min-k%++,lowercase,neighbor",
               "--cache-dir", str(work / "cache"), "--out", str(work / "scores"))
    env = environment(work)
    killed = run(argv, env, stop_after=40)
    finished = re.search(r"(\d+) of (\d+) texts", killed["last_line"])
    again = run(argv, env)
    computed = {}
    metrics = work / "scores" / "metrics.json"
    if metrics.is_file():
        info = json.loads(metrics.read_text())["extra"]["methods"]
        computed = {name: row["computed"] for name, row in info.items()}
    done, total = (int(finished[1]), int(finished[2])) if finished else (None, None)
    redone = None if done is None else max(computed.values(), default=0) - (total - done)
    return {"fault": "SIGINT during `scores`", "killed": _brief(killed), "rerun": _brief(again),
            "texts_finished_before_kill": done, "texts_total": total,
            "texts_computed_by_rerun": computed, "texts_redone": redone}


def train_fault(work: Path) -> dict:
    """SIGINT a minute into a 3-epoch aligned run (12 steps); the re-run resumes."""
    argv = cli("train", "--model", MODEL, "--data", str(DATA), "--split", "WikiMIA_length32",
               "--epochs", "3", "--train-per-class", "42", "--validation-per-class", "10",
               "--test-per-class", "20", "--no-compare",
               "--cache-dir", str(work / "cache"), "--out", str(work / "train"))
    env = environment(work)
    killed = run(argv, env, stop_after=60)
    step = re.search(r"epoch (\d+) of \d+, after step (\d+)", killed["last_line"])
    again = run(argv, env)
    resumed = re.search(r"resuming from epoch (\d+), step (\d+)", again["stderr"])
    learned = {}
    metrics = work / "train" / "metrics.json"
    if metrics.is_file():
        learned = json.loads(metrics.read_text())["extra"]["learned"]["mia-tuner"]
    history = learned.get("history") or {}
    steps_total = len(learned.get("steps") or [])
    return {"fault": "SIGINT during `train`", "killed": _brief(killed), "rerun": _brief(again),
            "stopped_in_epoch": int(step[1]) if step else None,
            "steps_done_in_that_epoch": int(step[2]) if step else None,
            "steps_total": steps_total, "steps_per_epoch": history.get("steps_per_epoch"),
            "rerun_resumed_at": {"epoch": int(resumed[1]), "step": int(resumed[2])} if resumed else None}


def controlled_fault(work: Path) -> dict:
    """SIGINT 90 s into building a 100 + 100 controlled set (injection checkpoints every 60 s)."""
    argv = cli("data", "controlled", "--model", MODEL, "--n-per-class", "100",
               "--out", str(work / "controlled"))
    env = environment(work)
    killed = run(argv, env, stop_after=90)
    step = re.search(r"step (\d+) of (\d+)", killed["last_line"])
    again = run(argv, env)
    resumed = re.search(r"resuming the injection at epoch \d+, step (\d+)", again["stderr"])
    card = work / "controlled" / "card.json"
    return {"fault": "SIGINT during `data controlled` (injection)", "killed": _brief(killed),
            "rerun": _brief(again), "steps_done_before_kill": int(step[1]) if step else None,
            "steps_total": int(step[2]) if step else None,
            "rerun_resumed_after_step": int(resumed[1]) if resumed else None,
            "built": card.is_file(), "card": json.loads(card.read_text()) if card.is_file() else None}


BAD_INPUT_FILES = {  # test file -> what its cases are
    "tests/test_bad_input.py": "bad input of every command, damaged detectors (first round)",
    "tests/test_reliability.py": "unverifiable detectors, invisible and one-token texts, tiny test parts, "
                                 "BOM / semicolon / gzip files, string labels, non-finite options, "
                                 "long texts, two runs in one folder (second round)",
    "tests/test_resume.py": "interrupted runs and damaged checkpoints",
}


def bad_input_cases() -> dict:
    """The bad-input and fault tests: per file, how many cases and how many passed (each case
    ends in one clear error, exit 2, or the documented behaviour)."""
    files = {}
    for file, what in BAD_INPUT_FILES.items():
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", file],
                              cwd=ROOT, capture_output=True, text=True)
        outcomes = re.findall(r"^(PASSED|FAILED|ERROR|SKIPPED) (\S+)", done.stdout, flags=re.M)
        files[file] = {"what": what, "cases": len(outcomes),
                       "passed": sum(1 for outcome, _ in outcomes if outcome == "PASSED"),
                       "failed": [case for outcome, case in outcomes if outcome in ("FAILED", "ERROR")],
                       "summary": done.stdout.strip().splitlines()[-1]}
    return {"files": files, "cases": sum(f["cases"] for f in files.values()),
            "passed": sum(f["passed"] for f in files.values())}


def bad_input_block(record: dict) -> str:
    """The BENCHMARKS.md table of the bad-input cases, from reliability.json."""
    result = record["bad-input"]
    lines = ["<!-- reliability:bad-input begin (generated by bench/reliability.py --publish; do not edit) -->",
             f"`.venv/bin/python bench/reliability.py --only bad-input`, {result['date']}:", "",
             "| test file | what it tries | cases | passed |", "|---|---|---:|---:|"]
    for file, row in result["files"].items():
        lines.append(f"| `{file}` | {row['what']} | {row['cases']} | {row['passed']} |")
    lines += [f"| **all** | | **{result['cases']}** | **{result['passed']}** |",
              "<!-- reliability:bad-input end -->"]
    return "\n".join(lines)


def stored_block() -> str:
    """The bad-input block from bench/results/reliability.json (bench/check_generated.py)."""
    return bad_input_block(json.loads(RESULTS.read_text()))


def _brief(result: dict) -> dict:
    return {k: result[k] for k in ("rc", "seconds", "traceback", "last_line")}


FAULTS = {"scores": scores_fault, "train": train_fault, "controlled": controlled_fault}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=[*FAULTS, "bad-input"], action="append")
    parser.add_argument("--publish", action="store_true",
                        help="only regenerate BENCHMARKS.md from the stored records")
    args = parser.parse_args()
    record = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if args.publish:
        return publish_block("reliability:bad-input")
    chosen = args.only or [*FAULTS, "bad-input"]
    for name in chosen:
        with tempfile.TemporaryDirectory(prefix=f"reliability-{name}-") as work:
            result = bad_input_cases() if name == "bad-input" else FAULTS[name](Path(work))
        result["date"] = time.strftime("%Y-%m-%d %H:%M")
        record[name] = result
        print(json.dumps(result, indent=2)[:3000])
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    publish_block("reliability:interrupted" if "bad-input" not in chosen else "reliability:bad-input")


if __name__ == "__main__":
    main()
