"""``botkit bench serve``: serving throughput and latency, side by side in one run.

Contenders, all on the same model, dtype, prompts and greedy decoding, each generating
exactly ``--new-tokens`` per request (EOS ignored):

1. ``sequential``: ``model.generate()`` one request at a time (the baseline);
2. ``static``: ``model.generate()`` in batches of ``--static-batch`` (left padding);
3. ``generate_batch``: transformers' own continuous batching, given every request;
4. ``botkit``: botkit's runtime driven by ``--users`` simulated users in a closed loop.

Scenarios on botkit's runtime: ``single`` (a request alone: the TTFT baseline),
``prefix`` (a ~400-token persona system prompt shared by 16 requests, prefix cache on
vs off) and ``adapters`` (16 requests over 4 LoRA adapters vs all on one).

Progress goes to stderr, the table to stdout, everything to ``--json FILE``::

    botkit bench serve --json serve.json
    botkit bench serve --quick --skip sequential,generate_batch

This module imports only the standard library at import time (the CLI builds its
parser from :func:`add_arguments`); torch comes with :func:`run`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CONTENDERS = ("sequential", "static", "generate_batch", "botkit")
SCENARIOS = ("single", "prefix", "adapters", "fp32_check")
RATIO_KEYS = (
    "vs_sequential",
    "vs_generate_batch",
    "vs_static",
    "ttft_p95_over_single",
    "prefix_cache_ttft_speedup",
    "mixed_adapters_vs_single",
)
LABELS = {
    "sequential": "sequential generate()",
    "static": "static batch generate()",
    "generate_batch": "transformers generate_batch",
    "botkit": "botkit runtime, closed loop",
    "single": "botkit, one request alone",
    "prefix_off": "botkit, 400-tok system, no cache",
    "prefix_on": "botkit, 400-tok system, cache",
    "adapters_single": "botkit, all on 1 LoRA adapter",
    "adapters_mixed": "botkit, spread over N adapters",
}
MIB = 2**20


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", default="embedded", metavar="SOURCE",
                        help="model source, as [model] source (default: embedded)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="auto",
                        help="auto (bf16 on CUDA and bf16-capable CPUs), float32, bfloat16")
    parser.add_argument("--cache-dir", default="data/models", type=Path, metavar="DIR",
                        help="converted-model cache (default: data/models)")
    parser.add_argument("--requests", type=int, help="requests in the workload (default 64)")
    parser.add_argument("--new-tokens", type=int, help="tokens generated per request (default 64)")
    parser.add_argument("--users", type=int, default=16,
                        help="simulated users of botkit's runtime (default 16)")
    parser.add_argument("--static-batch", type=int, default=16, metavar="N",
                        help="batch size of the static contender (default 16)")
    parser.add_argument("--repeat", type=int,
                        help="timed passes of each batched contender (default 3; sequential "
                             "runs once and its spread is per request)")
    parser.add_argument("--sequential-requests", type=int, metavar="K",
                        help="run the sequential baseline on the first K requests only "
                             "(its tok/s does not depend on K; outputs checked on those K)")
    parser.add_argument("--max-prompt-tokens", type=int, default=400,
                        help="longest prompt of the workload (default 400)")
    parser.add_argument("--system-tokens", type=int, default=400,
                        help="length of the shared persona system prompt (default 400)")
    parser.add_argument("--adapters", type=int, default=4,
                        help="LoRA adapters of the mixed-adapter scenario (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="workload seed (default 0)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--skip", default="", metavar="LIST",
                        help="comma-separated contenders/scenarios to skip: "
                             + ",".join(CONTENDERS + SCENARIOS))
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 8 requests, 16 new tokens, 1 pass")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results here")
    return parser


def progress(message: str) -> None:
    print(f"[bench serve {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the run ---------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Run the benchmark the parsed ``args`` describe; returns the exit status."""
    import torch

    from botkit.bench import contenders as c
    from botkit.model.loading import load_model

    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - set(CONTENDERS + SCENARIOS)
    if unknown:
        raise SystemExit(f"--skip: unknown {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(CONTENDERS + SCENARIOS)})")
    requests = args.requests or (8 if args.quick else 64)
    new_tokens = args.new_tokens or (16 if args.quick else 64)
    repeat = args.repeat or (1 if args.quick else 3)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    progress(f"loading {args.model} ({args.device}, {args.dtype})")
    loaded = load_model(args.model, device=args.device, dtype=args.dtype,
                        cache_dir=args.cache_dir)
    tokenizer = loaded.tokenizer
    window = loaded.context_window
    max_prompt = max(16, min(args.max_prompt_tokens, window - new_tokens - 8))
    workload = c.build_workload(tokenizer, requests, seed=args.seed,
                                min_tokens=min(30, max_prompt), max_tokens=max_prompt)
    warm = c.build_workload(tokenizer, 4, seed=args.seed + 1, start=requests,
                            max_tokens=min(120, max_prompt))
    singles = c.build_workload(tokenizer, min(5, requests), seed=args.seed + 2,
                               start=requests + 100, max_tokens=max_prompt)
    lengths = sorted(len(p.ids) for p in workload)
    seq_count = min(args.sequential_requests or requests, requests)

    report: dict[str, Any] = {
        "benchmark": "botkit bench serve",
        "command": " ".join(["botkit bench serve", *sys.argv[1:]])
        if Path(sys.argv[0]).name == "botkit" else " ".join(sys.argv),
        "baseline": "sequential",
        "baseline_label": "sequential model.generate(), one request at a time",
        "machine": machine_info(loaded),
        "model": loaded.model_id,
        "device": str(loaded.device),
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "workload": {
            "requests": requests, "new_tokens": new_tokens, "users": args.users,
            "static_batch": args.static_batch, "repeat": repeat, "seed": args.seed,
            "sequential_requests": seq_count,
            "prompt_tokens": {"min": lengths[0], "median": lengths[len(lengths) // 2],
                              "max": lengths[-1], "total": sum(lengths)},
            "eos": "ignored: every request generates exactly new_tokens tokens",
            "decoding": "greedy, repetition_penalty 1.0",
        },
        "contenders": {},
        "scenarios": {},
        "correctness": {},
    }
    results: dict[str, Any] = report["contenders"]
    runs: dict[str, list[Any]] = {}

    def save_partial() -> None:
        # Written after every contender, so a run cut short by a time limit leaves figures.
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            partial = {**report, "partial": True}
            args.json.write_text(json.dumps(partial, indent=2, default=_jsonable) + "\n",
                                 encoding="utf-8")

    def attempt(name: str, body: Any) -> None:
        save_partial()
        if name in skip:
            results[name] = {"status": "skipped", "label": LABELS[name]}
            progress(f"{name}: skipped")
            return
        progress(f"{name}: running")
        started = time.perf_counter()
        try:
            runs[name] = body()
        except Exception as exc:  # a contender that cannot run is reported, not fatal
            reason = f"{type(exc).__name__}: {exc}".strip()
            results[name] = {"status": "failed", "label": LABELS[name], "reason": reason[:500]}
            progress(f"{name}: FAILED ({reason[:200]})")
            return
        results[name] = summarize(name, runs[name])
        progress(f"{name}: done in {time.perf_counter() - started:.1f} s, "
                 f"{results[name]['tok_s']:.1f} tok/s")

    # 1. the baseline
    def sequential() -> list[Any]:
        c.run_sequential(loaded, warm[:1], min(4, new_tokens))
        return [c.run_sequential(loaded, workload[:seq_count], new_tokens)]

    attempt("sequential", sequential)
    reference = runs["sequential"][0].token_ids if "sequential" in runs else None

    # 2. static batches
    def static() -> list[Any]:
        c.run_static(loaded, warm[:2], min(4, new_tokens), args.static_batch)
        return [c.run_static(loaded, workload, new_tokens, args.static_batch)
                for _ in range(repeat)]

    attempt("static", static)

    # 3. transformers' continuous batching
    def generate_batch() -> list[Any]:
        attn = loaded.model.config._attn_implementation
        try:
            c.run_generate_batch(loaded, warm[:2], min(4, new_tokens))
            return [c.run_generate_batch(loaded, workload, new_tokens) for _ in range(repeat)]
        finally:
            if loaded.model.config._attn_implementation != attn:
                loaded.model.set_attn_implementation(attn)

    attempt("generate_batch", generate_batch)

    # 4. botkit's runtime and its scenarios
    per_token = c.kv_bytes_per_token(loaded)
    kv_mb = max(1024, -(-args.users * (max_prompt + new_tokens) * per_token * 5 // 4 // MIB))
    runtime_kwargs = {"max_concurrent": max(1, args.users),
                      "max_queue": max(requests, args.users), "kv_cache_mb": kv_mb}
    report["runtime_config"] = runtime_kwargs
    engines: set[str] = set()

    def botkit_runs() -> list[Any]:
        async def body() -> list[Any]:
            passes = []
            for index in range(repeat):  # a fresh runtime per pass: an empty prefix cache
                generator = c.make_runtime(loaded, **runtime_kwargs)
                engines.add(c.engine_name(generator))
                try:
                    await c.closed_loop(generator, warm, users=min(args.users, len(warm)),
                                        new_tokens=min(4, new_tokens))
                    passes.append(await c.closed_loop(
                        generator, workload, users=args.users, new_tokens=new_tokens))
                    if index == 0 and "single" not in skip:
                        progress("single: running (one request at a time)")
                        runs["single"] = [await c.one_at_a_time(generator, singles, new_tokens)]
                finally:
                    await generator.aclose()
            return passes

        return asyncio.run(body())

    attempt("botkit", botkit_runs)
    if "single" in runs:
        results["single"] = summarize("single", runs["single"])
    elif "single" not in results:
        results["single"] = {"status": "skipped" if "single" in skip or "botkit" in skip
                             else "failed", "label": LABELS["single"]}

    scenarios: dict[str, Any] = report["scenarios"]
    save_partial()
    if "prefix" in skip:
        scenarios["prefix"] = {"status": "skipped"}
    else:
        progress("prefix: running (prefix cache off, then on)")
        try:
            scenarios["prefix"] = asyncio.run(prefix_scenario(
                c, loaded, args, new_tokens, runtime_kwargs, engines))
            runs["prefix_off"] = scenarios["prefix"].pop("_off")
            runs["prefix_on"] = scenarios["prefix"].pop("_on")
            for name in ("prefix_off", "prefix_on"):
                results[name] = summarize(name, runs[name])
        except Exception as exc:
            scenarios["prefix"] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
            progress(f"prefix: FAILED ({exc})")

    save_partial()
    if "adapters" in skip:
        scenarios["adapters"] = {"status": "skipped"}
    else:
        progress(f"adapters: running (16 requests on 1 vs {args.adapters} LoRA adapters)")
        try:
            scenarios["adapters"] = asyncio.run(adapter_scenario(
                c, loaded, args, workload, warm, new_tokens, repeat, runtime_kwargs, engines))
            runs["adapters_single"] = scenarios["adapters"].pop("_single")
            runs["adapters_mixed"] = scenarios["adapters"].pop("_mixed")
            for name in ("adapters_single", "adapters_mixed"):
                results[name] = summarize(name, runs[name])
        except Exception as exc:
            scenarios["adapters"] = {"status": "failed",
                                     "reason": f"{type(exc).__name__}: {exc}"}
            progress(f"adapters: FAILED ({exc})")

    if "fp32_check" in skip or report["dtype"] == "float32" or reference is None:
        scenarios["fp32_check"] = {"status": "skipped"}
    else:
        progress("fp32_check: sequential generate() vs botkit on 8 requests in float32")
        try:
            scenarios["fp32_check"] = fp32_check(c, args, workload[:8], new_tokens, engines)
        except Exception as exc:
            scenarios["fp32_check"] = {"status": "failed",
                                       "reason": f"{type(exc).__name__}: {exc}"}
            progress(f"fp32_check: FAILED ({exc})")

    report["engine"] = sorted(engines)
    report["correctness"] = correctness(c, loaded, reference, runs)
    for name, check in report["correctness"].items():
        if name in results:
            results[name]["mismatched_requests"] = check["mismatched"]
    report["ratios"] = ratios(results)
    report["peak_rss_process_mb"] = process_peak_rss() / MIB

    print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(report, indent=2, default=_jsonable)
        args.json.write_text(text + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    failed_core = results.get("botkit", {}).get("status") == "failed"
    return 1 if failed_core else 0


async def prefix_scenario(
    c: Any, loaded: Any, args: argparse.Namespace, new_tokens: int,
    runtime_kwargs: dict[str, Any], engines: set[str],
) -> dict[str, Any]:
    """16 requests sharing a long persona system prompt, each alone after one priming
    request, on a runtime with the prefix cache off and on: TTFT p50 off / on."""
    tokenizer = loaded.tokenizer
    budget = max(16, min(args.system_tokens, loaded.context_window - new_tokens - 64))
    system = c.fit_system_prompt(tokenizer, budget)
    prompts = c.persona_workload(tokenizer, system, 17, start=0)
    tokens = min(new_tokens, 8)
    measured: dict[str, Any] = {}
    for label, cached in (("_off", False), ("_on", True)):
        generator = c.make_runtime(loaded, **runtime_kwargs, prefix_cache=cached)
        engines.add(c.engine_name(generator))
        try:
            await c.closed_loop(generator, prompts[:1], users=1, new_tokens=tokens)  # prime
            measured[label] = [await c.one_at_a_time(generator, prompts[1:], tokens)]
        finally:
            await generator.aclose()
    system_tokens = len(tokenizer(system, add_special_tokens=False)["input_ids"])
    return {
        "status": "ok", "system_prompt_tokens": system_tokens,
        "prompt_tokens": [len(p.ids) for p in prompts[1:]], "requests": len(prompts) - 1,
        "new_tokens": tokens,
        "how": "one priming request, then each request alone; TTFT p50 without / with cache",
        "prefix_cache_stats": measured["_on"][0].extra.get("runtime_stats", {}),
        **measured,
    }


async def adapter_scenario(
    c: Any, loaded: Any, args: argparse.Namespace, workload: Sequence[Any],
    warm: Sequence[Any], new_tokens: int, repeat: int, runtime_kwargs: dict[str, Any],
    engines: set[str],
) -> dict[str, Any]:
    """The same 16 requests on one LoRA adapter, then spread over ``--adapters``."""
    prompts = list(workload[:16])
    users = min(args.users, len(prompts))
    with c.temp_dir() as tmp:
        paths = c.make_adapters(loaded, args.adapters, Path(tmp), seed=args.seed)
        generator = c.make_runtime(loaded, **{**runtime_kwargs, "prefix_cache": False})
        engines.add(c.engine_name(generator))
        try:
            names = [f"bench-{i}" for i in range(len(paths))]
            for name, path in zip(names, paths, strict=True):
                await asyncio.to_thread(generator.load_adapter, name, str(path))
            await c.closed_loop(generator, warm, users=min(users, len(warm)),
                                new_tokens=min(4, new_tokens), adapters=names)
            single, mixed = [], []
            for _ in range(repeat):
                single.append(await c.closed_loop(generator, prompts, users=users,
                                                  new_tokens=new_tokens, adapters=names[:1]))
                mixed.append(await c.closed_loop(generator, prompts, users=users,
                                                 new_tokens=new_tokens, adapters=names))
        finally:
            await generator.aclose()
    first = single[0].texts or []
    same = [i for i in range(0, len(prompts), len(names))
            if mixed[0].texts and mixed[0].texts[i] != first[i]]
    return {
        "status": "ok", "adapters": len(names), "requests": len(prompts), "users": users,
        "lora": "r=8, alpha=16, q_proj+v_proj, random B (std 0.02)",
        "prefix_cache": False,
        "adapter0_rows_mismatched_mixed_vs_single": len(same),
        "_single": single, "_mixed": mixed,
    }


def fp32_check(c: Any, args: argparse.Namespace, prompts: Sequence[Any], new_tokens: int,
               engines: set[str]) -> dict[str, Any]:
    """In bf16 any batching changes rounding, so greedy replies drift from unbatched ones
    (static batches of generate() drift too). In fp32 they should not: the same prompts
    through sequential generate() and through botkit's runtime, all at once."""
    from botkit.model.loading import load_model

    loaded = load_model(args.model, device=args.device, dtype="float32",
                        cache_dir=args.cache_dir)
    reference = c.run_sequential(loaded, prompts, new_tokens).token_ids

    async def body() -> Any:
        generator = c.make_runtime(loaded, max_concurrent=len(prompts),
                                   max_queue=len(prompts))
        engines.add(c.engine_name(generator))
        try:
            return await c.closed_loop(generator, prompts, users=len(prompts),
                                       new_tokens=new_tokens)
        finally:
            await generator.aclose()

    runs = {"botkit": [asyncio.run(body())]}
    check = correctness(c, loaded, reference, runs)["botkit"]
    return {"status": "ok", "dtype": "float32", "users": len(prompts), **check}


# -- figures ---------------------------------------------------------------------------


def summarize(name: str, runs: Sequence[Any]) -> dict[str, Any]:
    from botkit.bench.contenders import median, percentile

    rates = [r.tok_s for r in runs]
    seconds = [r.seconds for r in runs]
    ttft = [t for r in runs for t in r.ttft_s]
    itl = [t for r in runs for t in r.itl_s]
    per_request = [t for r in runs for t in r.request_tok_s]
    pieces = sum(r.pieces for r in runs)
    tokens_all = sum(r.tokens for r in runs)
    gpu = [r.peak_gpu_bytes for r in runs if r.peak_gpu_bytes is not None]
    kv = [r.kv_bytes for r in runs if r.kv_bytes is not None]
    summary: dict[str, Any] = {
        "status": "ok",
        "label": LABELS.get(name, name),
        "runs": len(runs),
        "requests": len(runs[0].texts or runs[0].token_ids or []),
        "tokens": runs[0].tokens,
        "seconds": median(seconds),
        "seconds_min": min(seconds),
        "seconds_max": max(seconds),
        "tok_s": median(rates),
        "tok_s_min": min(rates),
        "tok_s_max": max(rates),
        "ttft_p50_s": median(ttft),
        "ttft_p95_s": percentile(ttft, 95),
        "itl_p50_s": median(itl),
        "itl_p95_s": percentile(itl, 95),
        "request_tok_s_p10": percentile(per_request, 10),
        "request_tok_s_p50": median(per_request),
        "request_tok_s_p90": percentile(per_request, 90),
        "tokens_per_piece": tokens_all / pieces if pieces else None,
        "peak_rss_mb": max(r.peak_rss_bytes for r in runs) / MIB,
        "peak_gpu_mb": max(gpu) / MIB if gpu else None,
        "kv_mb": max(kv) / MIB if kv else None,
    }
    extra = {k: v for k, v in runs[0].extra.items() if k != "ttft_all_at_once_s"}
    if extra:
        summary["extra"] = extra
    if "ttft_all_at_once_s" in runs[0].extra:
        at_once = runs[0].extra["ttft_all_at_once_s"]
        summary["ttft_all_submitted_at_once_p50_s"] = median(at_once)
    return summary


def correctness(c: Any, loaded: Any, reference: list[list[int]] | None,
                runs: dict[str, list[Any]]) -> dict[str, Any]:
    """Greedy outputs of each contender against sequential ``generate()``'s."""
    if reference is None:
        return {}
    tokenizer = loaded.tokenizer
    eos = c.eos_ids(loaded)
    checks: dict[str, Any] = {}
    for name in ("static", "generate_batch"):
        if name in runs:
            ids = runs[name][0].token_ids
            bad = [i for i, ref in enumerate(reference) if ids[i] != ref]
            checks[name] = {"compared": len(reference), "mismatched": len(bad),
                            "mismatched_indices": bad[:20], "compared_as": "token ids"}
    if "botkit" in runs:
        texts = runs["botkit"][0].texts
        bad, bad_before_eos = [], []
        for i, ref in enumerate(reference):
            text = _norm(texts[i])
            if text != _norm(tokenizer.decode(ref, skip_special_tokens=True)):
                bad.append(i)
            cut = next((k for k, t in enumerate(ref) if t in eos), len(ref))
            if not text.startswith(_norm(tokenizer.decode(ref[:cut], skip_special_tokens=True))):
                bad_before_eos.append(i)
        checks["botkit"] = {
            "compared": len(reference), "mismatched": len(bad), "mismatched_indices": bad[:20],
            "mismatched_before_first_eos": len(bad_before_eos), "compared_as": "text",
        }
    return checks


def _jsonable(value: Any) -> Any:
    """Run objects (inside a partial report) become their figures, anything else a string."""
    if hasattr(value, "tok_s") and hasattr(value, "seconds"):
        return {"seconds": value.seconds, "tokens": value.tokens}
    return str(value)


def _norm(text: str) -> str:
    return text.rstrip().rstrip("\ufffd").rstrip()


def ratios(results: dict[str, Any]) -> dict[str, float | None]:
    def value(name: str, key: str) -> float | None:
        entry = results.get(name, {})
        figure = entry.get(key) if entry.get("status") == "ok" else None
        return float(figure) if isinstance(figure, int | float) else None

    def ratio(top: float | None, bottom: float | None) -> float | None:
        return top / bottom if top is not None and bottom else None

    botkit = value("botkit", "tok_s")
    return {
        "vs_sequential": ratio(botkit, value("sequential", "tok_s")),
        "vs_generate_batch": ratio(botkit, value("generate_batch", "tok_s")),
        "vs_static": ratio(botkit, value("static", "tok_s")),
        "ttft_p95_over_single": ratio(value("botkit", "ttft_p95_s"),
                                      value("single", "ttft_p50_s")),
        "prefix_cache_ttft_speedup": ratio(value("prefix_off", "ttft_p50_s"),
                                           value("prefix_on", "ttft_p50_s")),
        "mixed_adapters_vs_single": ratio(value("adapters_mixed", "tok_s"),
                                          value("adapters_single", "tok_s")),
        "static_vs_sequential": ratio(value("static", "tok_s"), value("sequential", "tok_s")),
        "generate_batch_vs_sequential": ratio(value("generate_batch", "tok_s"),
                                              value("sequential", "tok_s")),
        "single_stream_vs_generate": ratio(value("single", "request_tok_s_p50"),
                                           value("sequential", "request_tok_s_p50")),
    }


# -- machine ---------------------------------------------------------------------------


def machine_info(loaded: Any) -> dict[str, Any]:
    import torch
    import transformers

    from botkit.model.device import cpu_has_native_bf16

    flags = cpu_flags()
    try:
        import peft

        peft_version: str | None = peft.__version__
    except ImportError:
        peft_version = None
    gpu = None
    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(loaded.device if loaded.device.type == "cuda" else 0)
    return {
        "platform": platform.platform(),
        "processor": _cpu_model() or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile",
                                     "avx512_vnni", "avx_vnni"}),
        "native_bf16": cpu_has_native_bf16(),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft_version,
    }


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def process_peak_rss() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)


# -- output ----------------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def print_report(report: dict[str, Any]) -> None:
    m, w = report["machine"], report["workload"]
    prompt = w["prompt_tokens"]
    print(f"botkit bench serve: {report['model']} on {report['device']}, {report['dtype']}, "
          f"engine {', '.join(report.get('engine') or ['-'])}")
    print(f"machine: {m['processor']}, {m['cores']} cores ({m['torch_threads']} torch threads), "
          f"flags {' '.join(m['cpu_flags']) or '-'}, GPU {m['gpu'] or 'none'}; "
          f"python {m['python']}, torch {m['torch']}, transformers {m['transformers']}, "
          f"peft {m['peft']}")
    print(f"workload: {w['requests']} requests x {w['new_tokens']} new tokens (EOS ignored, "
          f"greedy), prompts {prompt['min']}-{prompt['max']} tokens (median "
          f"{prompt['median']}), {w['users']} users, static batch {w['static_batch']}, "
          f"{w['repeat']} timed pass(es) per batched contender (median; spread = min-max)")
    print(f"baseline: {report['baseline_label']}"
          + (f" (first {w['sequential_requests']} requests)"
             if w["sequential_requests"] < w["requests"] else ""))
    print()
    header = (f"{'contender':<34}{'tokens':>7}{'seconds':>9}{'spread s':>13}{'tok/s':>8}"
              f"{'TTFT p50':>9}{'TTFT p95':>9}{'ITL p95':>8}{'req tok/s':>10}"
              f"{'RSS MiB':>9}{'KV MiB':>8}{'GPU MiB':>8}{'mismatch':>9}")
    print(header)
    print("-" * len(header))
    for name, row in report["contenders"].items():
        label = row.get("label", name)
        if row["status"] != "ok":
            reason = f": {row['reason']}" if row.get("reason") else ""
            print(f"{label:<34}{row['status'].upper()}{reason}"[:len(header)])
            continue
        spread = f"{row['seconds_min']:.1f}-{row['seconds_max']:.1f}"
        mismatch = row.get("mismatched_requests")
        if name == "sequential":
            mismatch_text = "(ref)"
        else:
            mismatch_text = "-" if mismatch is None else str(mismatch)
        gpu = "-" if row["peak_gpu_mb"] is None else f"{row['peak_gpu_mb']:.0f}"
        kv = "-" if row["kv_mb"] is None else f"{row['kv_mb']:.1f}"
        req = "-" if row["request_tok_s_p50"] is None else f"{row['request_tok_s_p50']:.1f}"
        print(f"{label:<34}{row['tokens']:>7}{row['seconds']:>9.2f}{spread:>13}"
              f"{row['tok_s']:>8.1f}{_ms(row['ttft_p50_s']):>9}{_ms(row['ttft_p95_s']):>9}"
              f"{_ms(row['itl_p95_s']):>8}{req:>10}{row['peak_rss_mb']:>9.0f}{kv:>8}"
              f"{gpu:>8}{mismatch_text:>9}")
    print("(TTFT/ITL in ms, per streamed piece; a piece can hold several tokens. req tok/s: "
          "per-request tokens / seconds. KV MiB: runtime peak, or the KV the HF contender "
          "needs. mismatch: requests whose greedy output differs from sequential generate())")
    check = report["correctness"].get("botkit")
    if check:
        print(f"botkit vs sequential generate(): {check['mismatched']} of {check['compared']} "
              f"replies differ ({check['mismatched_before_first_eos']} before the first EOS)")
    fp32 = report["scenarios"].get("fp32_check", {})
    if fp32.get("status") == "ok":
        print(f"same check in float32 ({fp32['compared']} requests, {fp32['users']} at once): "
              f"{fp32['mismatched']} differ ({fp32['mismatched_before_first_eos']} before "
              "the first EOS)")
    for name, scenario in report["scenarios"].items():
        if scenario.get("status") != "ok":
            print(f"scenario {name}: {scenario.get('status')} {scenario.get('reason', '')}")
    prefix = report["scenarios"].get("prefix", {})
    if prefix.get("status") == "ok":
        print(f"prefix scenario: system prompt {prefix['system_prompt_tokens']} tokens, "
              f"{prefix['requests']} requests, {prefix['how']}")
    adapters = report["scenarios"].get("adapters", {})
    if adapters.get("status") == "ok":
        print(f"adapter scenario: {adapters['requests']} requests, {adapters['users']} users, "
              f"{adapters['adapters']} adapters ({adapters['lora']})")
    print()
    r = report["ratios"]
    print("ratios (baseline named on the right):")
    lines = [
        ("vs_sequential", "botkit tok/s / sequential generate() tok/s"),
        ("vs_static", "botkit tok/s / static batch generate() tok/s"),
        ("vs_generate_batch", "botkit tok/s / transformers generate_batch tok/s"),
        ("ttft_p95_over_single", "botkit TTFT p95 under load / TTFT p50 of a request alone"),
        ("prefix_cache_ttft_speedup", "TTFT p50 prefix cache off / on"),
        ("mixed_adapters_vs_single", "tok/s over N adapters / tok/s on one adapter"),
        ("static_vs_sequential", "static batch tok/s / sequential tok/s"),
        ("generate_batch_vs_sequential", "generate_batch tok/s / sequential tok/s"),
        ("single_stream_vs_generate", "botkit one request alone / generate(), per-request tok/s"),
    ]
    for key, meaning in lines:
        print(f"  {key:<30}{_x(r.get(key)):>9}   {meaning}")
    print(f"process peak RSS: {report['peak_rss_process_mb']:.0f} MiB")


# -- entry points ----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(
        prog="python -m botkit.bench.serve", description=(__doc__ or "").splitlines()[0]))
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
