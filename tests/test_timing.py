"""The alternating timer (nlpcompress.measure.time_alternating), the median's interval it stops on, and the
arithmetic of the harness's headline columns (speedup, size ratio, retention) in its tables and its
committed result files."""

import glob
import json
import random
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from torch import nn

from benchmarks.glue_report import summarise, table
from nlpcompress.measure import (
    MAX_PASS_FACTOR,
    describe_cpuinfo,
    median_interval,
    settled,
    time_alternating,
    timing_environment,
)

REPO = Path(__file__).resolve().parent.parent


class FakeModel(nn.Module):
    """Costs ``ms`` per pass (``jitter`` cycles through extra costs); logs its calls."""

    def __init__(self, name: str, ms: float, log: list[str], jitter: tuple[float, ...] = (0.0,)) -> None:
        super().__init__()
        self.name, self.ms, self.log, self.jitter = name, ms, log, jitter
        self.config = SimpleNamespace(vocab_size=2000)

    def forward(self, input_ids, attention_mask):
        extra = self.jitter[len(self.log) % len(self.jitter)]
        self.log.append(self.name)
        deadline = time.perf_counter() + (self.ms + extra) / 1000
        while time.perf_counter() < deadline:  # a busy cost, as a forward pass is
            pass


def test_two_fake_models_of_known_costs_are_ordered_and_timed_in_turns() -> None:
    log: list[str] = []
    models = {"fast": FakeModel("fast", 1.0, log), "slow": FakeModel("slow", 3.0, log)}
    timed = time_alternating(models, {"bs1": (1, 8), "bs32": (32, 8)}, warmup=2)
    assert log[: 2 * 2] == ["fast", "slow"] * 2  # warm-up in turns too
    assert log[::2] == ["fast"] * (len(log) // 2) and log[1::2] == ["slow"] * (len(log) // 2)
    for shape, least in (("bs1", 60), ("bs32", 20)):
        fast, slow = timed["fast"][shape], timed["slow"][shape]
        assert least <= fast["passes"] == slow["passes"] <= MAX_PASS_FACTOR * least
        assert fast["median_ms"] < slow["median_ms"]
        assert 2.0 < slow["median_ms"] / fast["median_ms"] < 3.5
        for stats in (fast, slow):
            low, high = stats["median_ci95_ms"]
            q1, q3 = stats["iqr_ms"]
            assert low <= stats["median_ms"] <= high and q1 <= stats["median_ms"] <= q3


def test_a_noisy_model_is_timed_until_the_limit_a_steady_one_stops_at_the_least() -> None:
    log: list[str] = []
    steady = time_alternating({"m": FakeModel("m", 1.0, log)}, {"bs1": (1, 8)}, 1, {1: 10})
    noisy = time_alternating({"m": FakeModel("m", 1.0, log, (0.0, 4.0))}, {"bs1": (1, 8)}, 1, {1: 10})
    assert steady["m"]["bs1"]["passes"] == 10
    assert noisy["m"]["bs1"]["passes"] == MAX_PASS_FACTOR * 10  # half the passes cost 5x: never settles


def test_the_median_interval_has_its_ranks_and_covers_the_median_95_times_in_100() -> None:
    assert median_interval(list(range(1, 61))) == (22, 39)  # n = 60: ranks 22 and 39
    assert median_interval([5.0]) == (5.0, 5.0)
    rng = random.Random(0)
    true_median = 1.0
    covered = 0
    for _ in range(2000):
        samples = [rng.gauss(true_median, 0.3) for _ in range(60)]
        low, high = median_interval(samples)
        covered += low <= true_median <= high
    assert 0.93 <= covered / 2000 <= 0.98


def test_settled_means_the_interval_is_within_three_percent() -> None:
    assert settled([10.0 + 0.01 * (i % 5) for i in range(60)])
    assert not settled([10.0 if i % 2 else 13.0 for i in range(60)])


def test_the_timing_environment_names_the_wait_policy_threads_and_instruction_sets(monkeypatch) -> None:
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    environment = timing_environment(2)
    assert environment["omp_wait_policy"] == "PASSIVE" and environment["threads"] == 2
    assert {"model", "instruction_sets"} <= set(environment["cpu"]) <= {"model", "instruction_sets", "cpuid"}


def test_the_cpu_is_described_by_its_first_block_of_proc_cpuinfo() -> None:
    block = "processor\t: {}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: {}\nmodel name\t: {}\n"
    block += "stepping\t: 1\nflags\t\t: fpu avx2 avx512f {}\n\n"
    cpuinfo = block.format(0, 143, "Intel(R) Xeon(R) Processor", "amx_tile") + block.format(1, 1, "other", "")
    assert describe_cpuinfo(cpuinfo, "x86_64") == {
        "model": "Intel(R) Xeon(R) Processor",
        "instruction_sets": ["avx2", "avx512f", "amx_tile"],
        "cpuid": "family 6 model 143 stepping 1",
    }
    # no /proc/cpuinfo (macOS, Windows): the platform's name, no instruction sets, no cpuid
    assert describe_cpuinfo("", "arm64") == {"model": "arm64", "instruction_sets": []}


def row(recipe: str, score: float, base: float, ms: float, base_ms: float, size: int) -> dict:
    return {
        "recipe": recipe,
        "seed": 42,
        "score": score,
        "retention": round(score / base, 4),
        "retention_ci95": [0.9, 1.0],
        "params": {"total": 10, "nonzero": 10},
        "size_bytes": size,
        "latency_ms": {"bs1_seq128": ms, "bs32_seq128": 4 * ms},
        "speedup": {"bs1_seq128": round(base_ms / ms, 3), "bs32_seq128": round(base_ms / ms, 3)},
        "backend": "torch",
    }


def test_the_table_shows_speedup_size_ratio_and_retention_from_their_definitions() -> None:
    rows = {
        "baseline@42": row("baseline", 0.80, 0.80, 20.0, 20.0, 90_000_000),
        "small@42": row("small", 0.76, 0.80, 5.0, 20.0, 9_000_000),
    }
    results = {"suite": "small", "task": "sst2", "score_name": "accuracy", "rows": rows, "model": "m"}
    results |= {"cpu": {"model": "cpu", "instruction_sets": ["avx2"]}, "threads": 2}
    results["summary"] = summarise(rows)
    line = next(text for text in table(results).splitlines() if text.startswith("| small |"))
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    assert cells[4] == "95.0% ± —"  # 0.76 / 0.80, one seed
    assert cells[9] == "0.10"  # 9 MB / 90 MB
    assert cells[11] == "4.00×" and cells[12] == "4.00×"  # 20 ms / 5 ms


@pytest.mark.parametrize("path", sorted(glob.glob(str(REPO / "benchmarks/results/small/*.json"))))
def test_committed_rows_hold_the_arithmetic_of_their_headline_columns(path) -> None:
    for key, done in json.loads(Path(path).read_text())["rows"].items():
        if "error" in done:
            continue
        assert done["retention"] == round(done["score"] / done["baseline_score"], 4), key
        low, high = done["retention_ci95"]
        assert low <= done["retention"] <= high, key
        for shape, speedup in done["speedup"].items():
            ratio = done["baseline_latency_ms"][shape] / done["latency_ms"][shape]
            assert speedup == pytest.approx(ratio, abs=1e-3), key
