"""``cogniverse eval``: accuracy of a tenant's deployed (or the unoptimized) module on labeled JSONL."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cogniverse_assets.cli.common import CliError, add_module_option
from cogniverse_assets.modules.registry import get_module
from cogniverse_resources.config_store import open_config_store


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="accuracy of the deployed (or unoptimized) module on your labeled JSONL"
    )
    parser.add_argument("--tenant")
    add_module_option(parser, required=True)
    parser.add_argument(
        "--data", required=True, help='JSONL: {"query", "label"} or {"query", "accept": [labels]} + module inputs'
    )
    parser.add_argument("--baseline", action="store_true", help="evaluate the unoptimized module")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.set_defaults(func=cmd_eval)


def read_labeled_jsonl(path: Path, spec) -> tuple[list[dict], list[str]]:  # noqa: ANN001 - RoutingModuleSpec
    """Rows with ``query`` and ``label`` (or ``accept``) from a JSONL file; bad lines as messages."""
    rows, errors = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as error:
            errors.append(f"line {number}: not JSON ({error.msg})")
            continue
        if not isinstance(row, dict) or not isinstance(row.get("query"), str) or not row["query"].strip():
            errors.append(f"line {number}: missing 'query'")
            continue
        accept = row.get("accept") or ([row["label"]] if "label" in row else None)
        if not accept or not isinstance(accept, list) or any(label not in spec.labels for label in accept):
            errors.append(f"line {number}: 'label'/'accept' must name {spec.name} labels ({', '.join(spec.labels)})")
            continue
        rows.append({**row, "accept": accept})
    return rows, errors


def cmd_eval(args: argparse.Namespace) -> int:
    from cogniverse_assets.runtime import Router, load_router, timed_route, unoptimized_module
    from cogniverse_assets.scoring import latency_figures

    spec = get_module(args.module)
    path = Path(args.data)
    if not path.exists():
        raise CliError(f"no such file: {path}")
    rows, errors = read_labeled_jsonl(path, spec)
    for error in errors:
        print(f"skipped {error}", file=sys.stderr)
    if not rows:
        raise CliError(f"no usable rows in {path}")
    if args.baseline:
        from cogniverse_resources.lm import LanguageModelResource

        router = Router.serving(args.tenant or "-", spec, unoptimized_module(spec), LanguageModelResource.from_env())
    else:
        if not args.tenant:
            raise CliError("--tenant is required unless --baseline")
        open_config_store().get(args.tenant)
        router = load_router(args.tenant, args.module)
        if router.is_fallback:
            print(
                f"note: no deployed {args.module} module for {args.tenant}; evaluating the unoptimized module",
                file=sys.stderr,
            )
    per_class: dict[str, dict[str, int]] = {}
    correct = 0
    latencies_ms, paths = [], []
    for index, row in enumerate(rows, start=1):
        answer, elapsed_ms = timed_route(router, row)
        latencies_ms.append(elapsed_ms)
        paths.append(answer.path)
        hit = answer.label in row["accept"]
        correct += hit
        stats = per_class.setdefault(row["accept"][0], {"n": 0, "correct": 0})
        stats["n"] += 1
        stats["correct"] += hit
        if not args.json and index % 10 == 0:
            print(f"  {index}/{len(rows)} ...", file=sys.stderr, flush=True)
    result = {
        "accuracy": round(correct / len(rows), 4),
        "n": len(rows),
        "errors": len(errors),
        "per_class": {
            label: {**stats, "accuracy": round(stats["correct"] / stats["n"], 4)}
            for label, stats in sorted(per_class.items())
        },
        "module_version": router.version,
        "fast_path_share": round(paths.count("fast") / len(paths), 4),
        **latency_figures(latencies_ms, paths),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{args.module} {router.version}: accuracy {result['accuracy']:.3f} on {len(rows)} examples "
            f"({len(errors)} bad lines)"
        )
        for label, stats in result["per_class"].items():
            print(f"  {label:24s} {stats['correct']:4d}/{stats['n']:<4d} {stats['accuracy']:.3f}")
    return 0
