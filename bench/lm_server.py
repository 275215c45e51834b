"""The local LM server when two lanes take turns on it: stock ``llama_cpp.server`` against the
project's (``stack.lm_service``: last-token logits, bounded prompt-state cache).

Two lanes, modality and cross_modal, each with two class-medoid demos per label (a fixed prompt
prefix, as `labeled` and BootstrapFewShot modules have), answer the same 8 corpus eval queries:
first alternating one call each (two runs sharing the server), then one lane after the other.
Prints the mean and p50 seconds per call for both orders and the server's peak RSS.

    .venv/bin/python bench/lm_server.py            # both servers, one after the other
    .venv/bin/python bench/lm_server.py --server project
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

import dspy
from optimizers import corpus_train_pool  # bench/optimizers.py, beside this script

from cogniverse_assets.demo_data import load_queries
from cogniverse_assets.modules.demos import class_medoid_demos
from cogniverse_assets.modules.registry import get_module
from cogniverse_resources import stack
from cogniverse_resources.lm import LanguageModelResource

LANES = ("modality", "cross_modal")
QUERIES = 8
PROJECT_ONLY_OPTIONS = {"--logits_all", "--cache", "--cache_type", "--cache_size"}


def stock_service(port: int, directory: Path, model_path: Path) -> stack.ManagedService:
    """The project's server command run as stock llama_cpp.server, without the options the project
    adds (so logits for every prompt token and no prompt cache); context, threads and model stay."""
    spec = stack.lm_service(port=port, directory=directory, model_path=model_path).spec
    options = spec.command[3:]  # after `python -m cogniverse_resources.lm_server`: --name value pairs
    kept = [
        part
        for name, value in zip(options[::2], options[1::2])
        if name not in PROJECT_ONLY_OPTIONS
        for part in (name, value)
    ]
    command = [sys.executable, "-m", "llama_cpp.server", *kept]
    return stack.ManagedService(dataclasses.replace(spec, command=command), directory)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def lanes() -> list[tuple]:
    built = []
    for name in LANES:
        spec = get_module(name)
        program = spec.program()
        program.demos = class_medoid_demos(spec, corpus_train_pool(spec), per_label=2)
        built.append((spec, program))
    return built


def measure(server: str, model: Path) -> None:
    directory = stack.run_dir() / f"bench-lm-server-{server}-{os.getpid()}"
    build = stock_service if server == "stock" else stack.lm_service
    with stack.private_lm_server(directory, model, build) as status:
        resource = LanguageModelResource.from_env()
        lm, adapter = resource.student(cache=False), resource.adapter()
        built, queries = lanes(), load_queries("eval")[:QUERIES]
        with dspy.context(lm=lm, adapter=adapter):
            spec, program = built[0]
            program(**spec.inputs(queries[-1]))  # load the model's pages before timing
            for order in ("alternating", "one lane after the other"):
                calls = (
                    [(lane, query) for query in queries for lane in built]
                    if order == "alternating"
                    else [(lane, query) for lane in built for query in queries]
                )
                seconds = []
                for (spec, program), query in calls:
                    started = time.perf_counter()
                    program(**spec.inputs(query))
                    seconds.append(time.perf_counter() - started)
                print(
                    f"{server:8s} {order:25s} {len(seconds)} calls: mean {statistics.mean(seconds):.2f} s, "
                    f"p50 {statistics.median(seconds):.2f} s, total {sum(seconds):.1f} s",
                    flush=True,
                )
        print(f"{server:8s} server peak RSS {peak_rss_mb(status.pid):.0f} MB", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=["stock", "project", "both"], default="both")
    args = parser.parse_args()
    model = stack.ensure_local_model()
    for server in ("stock", "project") if args.server == "both" else (args.server,):
        measure(server, model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
