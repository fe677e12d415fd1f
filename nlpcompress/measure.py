"""What a compressed model costs: parameters, bytes on disk, multiply-accumulates, CPU latency.

Latency is the median of repeated forward passes after warm-up, on random token ids with a full
attention mask. To compare two models, time them in one process, alternating, so the host's
drift (up to 30% within minutes here) hits both alike.
"""

import math
import os
import platform
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nlpcompress.compact.quantized import QuantizedEmbedding
from nlpcompress.compact.storage import StoredLinear

BATCH_1, BATCH_32 = "bs1_seq128", "bs32_seq128"  # the latency keys every report uses
LATENCY_SHAPES = {BATCH_1: (1, 128), BATCH_32: (32, 128)}


def speedups(reference: Mapping[str, float], model: Mapping[str, float]) -> dict[str, float]:
    """``speedup_<shape>``: the reference's latency over the model's, for each shape both were timed at."""
    return {
        f"speedup_{shape}": round(reference[shape] / model[shape], 3)
        for shape in LATENCY_SHAPES
        if shape in reference and shape in model
    }


def latency_text(latency: Mapping[str, float]) -> str:
    """``bs1 12.34 ms  bs32 567.89 ms``, aligned for tables of several models."""
    return f"bs1 {latency[BATCH_1]:8.2f} ms  bs32 {latency[BATCH_32]:9.2f} ms"


def speedup_text(report: Mapping[str, float]) -> str:
    """``speedup bs1 2.00x, bs32 3.00x`` from a report holding ``speedups``."""
    return f"speedup bs1 {report[f'speedup_{BATCH_1}']:.2f}x, bs32 {report[f'speedup_{BATCH_32}']:.2f}x"


# What a user ships with a model, whatever runs it: its config and its tokenizer (the files a tokenizer
# may be saved as; the ones present count)
SHIPPED_TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
    "merges.txt", "spiece.model",
)  # fmt: skip
SUPPORT_FILES = ("config.json", *SHIPPED_TOKENIZER_FILES)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Total / encoder / embeddings / classifier / non-zero parameter counts (shared weights once; a linear
    of another storage kind counts the weights it stores, packed integer weights the weights they hold)."""
    stored = {
        name: module
        for name, module in model.named_modules(remove_duplicate=True)
        if isinstance(module, StoredLinear | QuantizedEmbedding)
    }
    counted = {
        id(p)
        for module in stored.values()
        if isinstance(module, StoredLinear)
        for p in module.trainable_weights()
    }
    sizes: dict[
        str, tuple[int, int]
    ] = {  # name -> (elements, non-zeros); named_parameters skips shared duplicates
        name: (p.numel(), int(torch.count_nonzero(p)))
        for name, p in model.named_parameters()
        if id(p) not in counted
    }
    for name, module in stored.items():
        if isinstance(module, StoredLinear):
            sizes[f"{name}.weight"] = (module.stored_elements(), module.nonzero_elements())
        else:  # packed word embeddings count as the weights they hold
            sizes[f"{name}.weight"] = (module.weight.numel(), int(torch.count_nonzero(module.weight)))
    embeddings = sum(size for n, (size, _) in sizes.items() if ".embeddings." in f".{n}")
    encoder = sum(size for n, (size, _) in sizes.items() if ".encoder." in f".{n}")
    total = sum(size for size, _ in sizes.values())
    return {
        "total": total,
        "encoder": encoder,
        "embeddings": embeddings,
        "classifier": total - encoder - embeddings,
        "nonzero": sum(nonzero for _, nonzero in sizes.values()),
    }


def torch_model_files(folder: str | Path) -> list[Path]:
    """The files PyTorch loads a saved model from: its weights and the modeling code it ships."""
    return sorted(f for f in Path(folder).iterdir() if f.is_file() and f.suffix in (".safetensors", ".py"))


def support_files(folder: str | Path) -> list[Path]:
    """The config and tokenizer files the folder holds (shipped with every backend)."""
    return [Path(folder) / name for name in SUPPORT_FILES if (Path(folder) / name).is_file()]


def size_on_disk(folder: str | Path) -> int:
    """The deployable size of a saved model run by PyTorch: the bytes a user ships (weights, modeling code,
    config and tokenizer; not the run's records such as results.json, the card or the recipe).
    ``runtime.backends.deployable_bytes`` is the same definition for every backend."""
    return sum(f.stat().st_size for f in [*torch_model_files(folder), *support_files(folder)])


def encoder_macs(config, length: int) -> int:
    """Multiply-accumulates of one forward pass on one sequence of ``length`` tokens (encoder + classifier).

    Embeddings are lookups (a factorized embedding adds its E x H projection per token); each depth
    counts its Q, K, V and output projections, scores and weighted values, and the FFN. Dense
    arithmetic: unstructured zeros do not reduce it.
    """
    hidden, head = config.hidden_size, config.attention_head_size
    total = length * config.embedding_size * hidden if config.embedding_size else 0
    for layer in config.layer_map:
        inner = config.heads_per_layer[layer] * head
        total += 4 * length * hidden * inner  # Q, K, V and the output projection
        total += 2 * length * length * inner  # scores and the weighted sum of values
        total += 2 * length * hidden * config.intermediate_sizes[layer]
    return total + hidden * hidden + hidden * config.num_labels


def _inputs(vocab_size: int, batch: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(
        low=min(1000, vocab_size - 1), high=vocab_size, size=(batch, length), generator=generator
    )
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


MIN_PASSES = {1: 60, 32: 20}
"""Timed passes after warm-up, at least, per batch size (another batch size takes batch 32's)."""
MAX_PASS_FACTOR = 3
TOLERANCE = 0.03
"""Timing goes on (up to ``MAX_PASS_FACTOR`` times the passes) until every model's median is known within
this fraction: its 95% interval lies within ±3% of it."""


def median_interval(samples: Sequence[float], z: float = 1.96) -> tuple[float, float]:
    """A distribution-free 95% interval of the median: the order statistics of ranks ⌊n/2 − z·√n/2⌋ and
    ⌈1 + n/2 + z·√n/2⌉ (the binomial's normal approximation; Conover, Practical Nonparametric Statistics,
    §3.2), clamped to the samples."""
    ordered = sorted(samples)
    n = len(ordered)
    half = z * math.sqrt(n) / 2
    low = max(1, math.floor(n / 2 - half))
    high = min(n, math.ceil(1 + n / 2 + half))
    return ordered[low - 1], ordered[high - 1]


def timing_stats(samples: Sequence[float]) -> dict[str, Any]:
    """Median, interquartile range and the median's 95% interval of one model's passes (ms)."""
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    low, high = median_interval(samples)
    return {
        "median_ms": round(statistics.median(samples), 3),
        "iqr_ms": [round(q1, 3), round(q3, 3)],
        "median_ci95_ms": [round(low, 3), round(high, 3)],
        "passes": len(samples),
    }


def settled(samples: Sequence[float], tolerance: float = TOLERANCE) -> bool:
    """Whether the median's 95% interval lies within ±``tolerance`` of the median."""
    median = statistics.median(samples)
    low, high = median_interval(samples)
    return median - low <= tolerance * median and high - median <= tolerance * median


def timing_environment(threads: int | None = None) -> dict[str, Any]:
    """What a latency depends on besides the model: OpenMP's wait policy, threads, the CPU's instruction sets."""
    return {
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (OpenMP's default: spin)"),
        "threads": threads or torch.get_num_threads(),
        "cpu": cpu_description(),
    }


@torch.inference_mode()
def time_alternating(
    models: Mapping[str, nn.Module],
    shapes: Mapping[str, tuple[int, int]] = LATENCY_SHAPES,
    warmup: int = 3,
    min_passes: Mapping[int, int] = MIN_PASSES,
    threads: int | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{model name: {shape name: timing_stats}}``: the models take turns pass by pass, so slow phases of
    the machine are shared fairly. After warm-up each shape gets at least ``min_passes`` of its batch size,
    then more (up to ``MAX_PASS_FACTOR`` times) until every model's median is ``settled``."""
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        for model in models.values():
            model.eval()
        timings: dict[str, dict[str, list[float]]] = {name: {} for name in models}
        vocab = min(m.config.vocab_size for m in models.values())
        for shape_name, (batch, length) in shapes.items():
            inputs = _inputs(vocab, batch, length)
            least = min_passes.get(batch, min_passes[max(min_passes)])
            for _ in range(warmup):
                for model in models.values():
                    model(**inputs)
            samples = {name: timings[name].setdefault(shape_name, []) for name in models}
            while True:
                for name, model in models.items():
                    start = time.perf_counter()
                    model(**inputs)
                    samples[name].append((time.perf_counter() - start) * 1000)
                done = len(samples[next(iter(models))])
                if done >= MAX_PASS_FACTOR * least or (
                    done >= least and all(settled(s) for s in samples.values())
                ):
                    break
    finally:
        torch.set_num_threads(previous_threads)
    return {name: {s: timing_stats(v) for s, v in per.items()} for name, per in timings.items()}


def passes_for(repeats: int) -> dict[int, int]:
    """The least passes for ``time_alternating`` from one count: ``repeats`` at batch 1, a third at batch 32."""
    return {1: repeats, 32: max(3, repeats // 3)}


def medians(timed: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, float]]:
    """``{model name: {shape name: median ms}}`` of ``time_alternating``'s statistics."""
    return {name: {shape: stats["median_ms"] for shape, stats in per.items()} for name, per in timed.items()}


def compare_latency(
    models: Mapping[str, nn.Module],
    shapes: Mapping[str, tuple[int, int]] = LATENCY_SHAPES,
    warmup: int = 3,
    repeats: int = MIN_PASSES[1],
    threads: int | None = None,
) -> dict[str, dict[str, float]]:
    """Median milliseconds per forward pass, ``{model name: {shape name: ms}}`` (``time_alternating``:
    ``repeats`` passes at batch 1 at least, a third of them at larger batches)."""
    return medians(time_alternating(models, shapes, warmup, passes_for(repeats), threads))


_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def cpu_description() -> dict[str, object]:
    """The CPU model and its int8/bf16-relevant instruction sets: latencies mean little without them."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    return describe_cpuinfo(cpuinfo, platform.processor() or platform.machine())


def describe_cpuinfo(cpuinfo: str, fallback_model: str) -> dict[str, object]:
    """``/proc/cpuinfo``'s first CPU as ``{model, instruction_sets}``, plus ``cpuid`` (family, model number,
    stepping) where given: virtual machines often show one model name ("Intel(R) Xeon(R) Processor") for
    different CPUs, and the numbers tell them apart."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if not key.strip() and fields:
            break  # the first CPU's block has ended
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    described: dict[str, object] = {
        "model": fields.get("model name") or fallback_model,
        "instruction_sets": [flag for flag in _CPU_FLAGS if flag in flags],
    }
    numbers = [fields.get(key) for key in ("cpu family", "model", "stepping")]
    if all(numbers):
        described["cpuid"] = "family {} model {} stepping {}".format(*numbers)
    return described


def latency_report(model: nn.Module, threads: int | None = None) -> dict[str, float | int]:
    """One model's latency at the standard shapes, with the thread count used."""
    measured = compare_latency({"model": model}, threads=threads)["model"]
    return {**measured, **timing_environment(threads)}


def zero_counts(model: nn.Module) -> dict[str, tuple[int, int]]:
    """``{linear name: (zero weights, weights)}`` for the encoder's linears, as the forward pass sees them
    (the dense view of a linear of any storage kind; the parts of a stored linear are not linears of their own)."""
    counts = {}
    inside_stored: list[str] = []
    with torch.no_grad():
        for name, module in model.named_modules():
            if ".encoder." not in f".{name}" or any(name.startswith(f"{outer}.") for outer in inside_stored):
                continue
            if isinstance(module, StoredLinear):
                inside_stored.append(name)
            if isinstance(module, nn.Linear | StoredLinear):
                weight = module.weight
                counts[name] = (int((weight == 0).sum()), weight.numel())
    return counts


def sparsity(model: nn.Module) -> float:
    """Fraction of zero weights in the encoder's linear layers (0 for a dense model)."""
    counts = zero_counts(model).values()
    total = sum(size for _, size in counts)
    return sum(zeros for zeros, _ in counts) / total if total else 0.0
