"""scripts/bench.py: its measuring pieces give real numbers, and a --quick run prints every table."""

import re

import pytest
import torch



class FakeClock:
    """A clock that advances only by what the measured function costs."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def time(self, fn) -> float:
        start = self.now
        fn()
        return self.now - start


def test_per_step_differencing_cancels_the_fixed_cost(bench):
    clock = FakeClock()

    def run(n: int) -> None:  # 5 s of setup and scoring, then 2 s per step
        clock.now += 5 + 2 * n

    assert bench.per_step(clock, run, steps=4, differenced=True) == pytest.approx(2.0)
    assert bench.per_step(clock, run, steps=4, differenced=False) == pytest.approx(13 / 4)


def test_peak_memory_sees_a_64_mb_tensor(bench):
    def allocate() -> None:
        block = torch.ones(16 * 2**20)  # 64 MB, touched
        assert float(block[-1]) == 1

    peak = bench.measure_peak(torch.device("cpu"), allocate)
    assert 60 <= peak <= 200


def test_quick_run_prints_every_table(bench, capsys):
    bench.main(["--quick", "--no-memory", "--device", "cpu"])
    out = capsys.readouterr().out
    for title in ("Attack step", "FedAvg replay", "Labels only", "Throughput"):
        assert title in out
    step_row = next(line for line in out.splitlines() if line.startswith("| LeNet | 16 | 2 |"))
    ratio = float(re.findall(r"\| ([0-9.]+)x \|", step_row)[0])
    assert ratio > 0  # measured; its size is the bench's figure, not a test's (a loaded machine moves it)
    for route in ("exact", "FD"):
        assert re.search(rf"\| batched \(vmap\) \| {route} \| [0-9.]+ \| [0-9.]+ \| [0-9.]+x \| [0-9.]+x "
                         rf"\| [0-9.]+ \| [0-9.]+x \| [0-9.]+x \|", out)


def test_without_breaching_its_columns_are_skipped_with_a_note(bench, capsys, monkeypatch):
    monkeypatch.setattr(bench, "breaching_available", lambda: "breaching not installed (test)")
    bench.main(["--quick", "--no-memory", "--device", "cpu", "--sections", "step"])
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| LeNet | 16 | 2 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[8] == cells[9] == cells[10] == "-"  # breaching step, deepleak / breaching, FD / breaching
    assert float(cells[5].rstrip("x")) > 0 and float(cells[7].rstrip("x")) > 0  # deepleak and FD / plain still measured
    assert "breaching columns skipped: breaching not installed (test)" in out
