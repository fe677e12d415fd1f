"""Where the time of a deployed model goes: the runtime's own per-operator profile of an exported graph.

    python -m benchmarks.profile_runtime RUN_FOLDER [--file model_int8.onnx] [--batch 1] [--seq 128]
    python -m benchmarks.profile_runtime RUN_FOLDER --file model_int8.xml     # OpenVINO's IR

Runs the folder's ONNX file with ONNX Runtime's profiler (the optimized graph it really executes, 2 threads
that sleep between runs), or its OpenVINO IR with the CPU plugin's performance counters (the compiled graph,
f32 as the IR says, each node with the kernel it ran: ``exec_types``, e.g. ``brgemm_avx512_amx_I8``),
``--passes`` timed passes after warm-up, and sums the kernel time per operator type. Writes
``benchmarks/results/profile/<--name or the folder's name>-<file stem>[-openvino]-bs<batch>.json`` with the
command, the CPU and its instruction sets.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.paths import REPO, portable
from nlpcompress.measure import cpu_description
from nlpcompress.runtime.inputs import random_batches

OUT = REPO / "benchmarks" / "results" / "profile"
WARMUP = 5


def per_operator(
    micros: dict[str, float],
    nodes: dict[str, set[str]],
    passes: int,
    kernels: dict[str, set[str]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per operator type, slowest first: kernel microseconds per pass, share of the total, node count (and
    the kernels that ran it, where the runtime names them)."""
    total = sum(micros.values())
    return {
        op: {
            "us_per_pass": round(micros[op] / passes, 1),
            "share": round(micros[op] / total, 4),
            "nodes": len(nodes[op]),
            **({"exec_types": sorted(kernels[op])} if kernels is not None else {}),
        }
        for op in sorted(micros, key=micros.get, reverse=True)
    }


def profile_openvino(
    path: Path, config, batch: int, seq: int, passes: int, threads: int
) -> dict[str, dict[str, Any]]:
    """Per operator type of OpenVINO's compiled graph, from the CPU plugin's performance counters."""
    import openvino as ov

    feed = random_batches(config, batch, batch, seq).batches[0]
    settings = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32", "PERF_COUNT": True}
    request = ov.Core().compile_model(str(path), "CPU", settings).create_infer_request()
    for _ in range(WARMUP):
        request.infer(feed)
    micros: dict[str, float] = defaultdict(float)
    nodes: dict[str, set[str]] = defaultdict(set)
    kernels: dict[str, set[str]] = defaultdict(set)
    for _ in range(passes):
        request.infer(feed)  # the counters describe the last inference
        for info in request.get_profiling_info():
            if info.status == info.Status.EXECUTED:
                micros[info.node_type] += info.real_time.total_seconds() * 1e6
                nodes[info.node_type].add(info.node_name)
                kernels[info.node_type].add(info.exec_type)
    return per_operator(micros, nodes, passes, kernels)


def profile(
    path: Path, config, batch: int, seq: int, passes: int, threads: int
) -> dict[str, dict[str, float]]:
    """Per operator type of ONNX Runtime's optimized graph: kernel microseconds per pass, share, nodes."""
    import onnxruntime as ort

    feed = random_batches(config, batch, batch, seq).batches[0]  # the first row full, the last half padded
    with tempfile.TemporaryDirectory() as scratch:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(scratch) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for _ in range(WARMUP + passes):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = sorted(event["ts"] for event in events if event.get("name") == "model_run")
    timed_from = runs[WARMUP]  # the warm-up passes of the same session are left out
    micros: dict[str, float] = defaultdict(float)
    nodes: dict[str, set[str]] = defaultdict(set)
    for event in events:
        if (
            event.get("cat") == "Node"
            and event["name"].endswith("_kernel_time")
            and event["ts"] >= timed_from
        ):
            op = event["args"]["op_name"]
            micros[op] += event["dur"]
            nodes[op].add(event["name"])
    return per_operator(micros, nodes, passes)


def main(argv: list[str] | None = None) -> None:
    from nlpcompress.compact import CompactBertConfig

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.profile_runtime", description=__doc__.split("\n")[0]
    )
    parser.add_argument("folder", type=Path)
    parser.add_argument(
        "--file",
        default="model_int8.onnx",
        help="the file under FOLDER/onnx/ (ONNX Runtime), or an .xml under FOLDER/openvino/ (OpenVINO)",
    )
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--passes", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", help="of the result file (default: the run folder's)")
    args = parser.parse_args(argv)
    config = CompactBertConfig.from_pretrained(args.folder)
    openvino = args.file.endswith(".xml")
    path = args.folder / ("openvino" if openvino else "onnx") / args.file
    ops = (profile_openvino if openvino else profile)(
        path, config, args.batch, args.seq, args.passes, args.threads
    )
    record = {
        "command": "python -m benchmarks.profile_runtime " + " ".join(sys.argv[1:] if argv is None else argv),
        "file": str(path),
        "runtime": "openvino" if openvino else "onnxruntime",
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "batch": args.batch,
        "seq": args.seq,
        "passes": args.passes,
        "threads": args.threads,
        "cpu": cpu_description(),
        "total_us_per_pass": round(sum(op["us_per_pass"] for op in ops.values()), 1),
        "operators": ops,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    runtime = "-openvino" if openvino else ""  # ONNX files keep the name they always had
    target = OUT / f"{args.name or args.folder.name}-{Path(args.file).stem}{runtime}-bs{args.batch}.json"
    target.write_text(json.dumps(portable(record), indent=1) + "\n")
    for op, facts in ops.items():
        print(
            f"{op:28s} {facts['us_per_pass']:9.1f} us  {100 * facts['share']:5.1f}%  ({facts['nodes']} nodes)"
        )
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
