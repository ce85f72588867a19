"""deepleak report's Defences section: leakage per defence, strength and attacker, the none
reference once, dp_sgd's epsilon, the utility of training jobs with the same defence, the
figures and defences.csv (crafted job dirs; no attack or training runs)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from deepleak import report as rep
from deepleak.report.defences import defence_key, is_train_job, split_jobs
from deepleak.report.stats import describe
from deepleak.report.tables import _cell

NONE = {"name": "none"}
NOISE = {"name": "noise", "std": 0.001, "distribution": "gaussian"}
NOISE_STRONG = {"name": "noise", "std": 0.01, "distribution": "gaussian"}
QUANT8 = {"name": "quantize", "bits": 8, "stochastic": False}
QUANT4 = {"name": "quantize", "bits": 4, "stochastic": False}
DP = {"name": "dp_sgd", "max_norm": 1.0, "noise_multiplier": 1.0, "delta": 1e-05, "accountant": "rdp"}
PRIVACY = {"epsilon": 12.3456, "delta": 1e-05, "accountant": "opacus RDPAccountant", "steps": 1, "sample_rate": 1.0}
FLOOR = {"uniform": {"psnr": 7.0, "ssim": 0.01}, "mean_image": {"psnr": 12.0, "ssim": 0.2}, "mean_image_over": 256}


def _overrides(defence: dict) -> list[str]:
    """``defence=noise``, ``defence.std=0.001`` (the strength only: the rest are defaults)."""
    strength = {"noise": "std", "quantize": "bits", "dp_sgd": "noise_multiplier"}.get(defence["name"])
    return [f"defence={defence['name']}", *([f"defence.{strength}={defence[strength]}"] if strength else [])]


def _hydra(folder: Path, overrides: list[str], config: dict, status: str) -> None:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": {}}}}))
    (folder / "status").write_text(status + "\n")


def attack_job(folder: Path, defence: dict, adaptive: bool, psnr: list[float], *, privacy: dict | None = None,
               seed: int = 1000, labels: list[float] | None = None, with_defence: bool = True) -> Path:
    """An attack job dir as `deepleak attack +experiment=defences` leaves it (written by hand);
    ``with_defence=False``: a run made before metrics.json had ``defence`` and ``adaptive``."""
    overrides = [*_overrides(defence), f"attack.adaptive={str(adaptive).lower()}", "+experiment=defences"]
    _hydra(folder, overrides if with_defence else ["batch_size=4"], {"seed": seed, "batch_size": 4, "trials": len(psnr)},
           "done")
    labels = labels or [1.0] * len(psnr)
    records = [{"trial": i, "label_accuracy": labels[i], "psnr_mean": p, "ssim_mean": 0.5, "lpips_mean": None,
                "lpips_absent_reason": "LPIPS absent: AlexNet weights not found", "noise_floor": FLOOR}
               for i, p in enumerate(psnr)]
    metrics = {"scenario": "fedsgd", "seed": seed, "trials": len(psnr), "trials_done": len(psnr), "summary": {},
               "per_trial": records}
    if with_defence:
        metrics.update(defence=defence, adaptive=adaptive, privacy=privacy)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def train_job(folder: Path, defence: dict, test_accuracy: float | None, *, seed: int = 1000,
              status: str = "done") -> Path:
    """A training job dir as `deepleak train` leaves it; status ``failed``: no metrics.json."""
    _hydra(folder, [*_overrides(defence), "epochs=10", f"seed={seed}"],
           {"epochs": 10, "batch_size": 32, "holdout": 0.2, "seed": seed}, status)
    if status == "done":
        metrics = {"model": {"name": "lenet"}, "dataset": "SampleSet", "epochs": 10, "seed": seed,
                   "checkpoint": "checkpoint.pt", "defence": defence, "privacy": None, "epochs_done": 10,
                   "history": [{"epoch": 10, "train_loss": 0.1, "train_accuracy": 0.9, "test_accuracy": test_accuracy}],
                   "interrupted": False, "train_accuracy": 0.95, "test_accuracy": test_accuracy}
        (folder / "metrics.json").write_text(json.dumps(metrics))
    else:
        (folder / "error.txt").write_text("out of memory\n")
    return folder


@pytest.fixture
def defences(tmp_path):
    """Attack sweeps (none; noise and quantize x two strengths x adaptive/naive; dp_sgd) and
    training sweeps (none x two seeds, noise 0.01, dp_sgd, and a failed noise 0.001) under one parent."""
    root = tmp_path / "defences"
    attack_job(root / "none" / "0", NONE, True, [30.0, 32.0])
    attack_job(root / "none" / "1", NONE, False, [30.0, 32.0])  # the same attack: not a second none row
    attack_job(root / "noise" / "0", NOISE, True, [20.0, 22.0])
    attack_job(root / "noise" / "1", NOISE, False, [25.0, 27.0])
    attack_job(root / "noise" / "2", NOISE_STRONG, True, [12.0, 14.0, 16.0], labels=[1.0, 0.5, 0.75])
    attack_job(root / "noise" / "3", NOISE_STRONG, False, [18.0, 18.0])
    attack_job(root / "quantize" / "0", QUANT8, True, [24.0, 26.0])
    attack_job(root / "quantize" / "1", QUANT8, False, [28.0, 28.0])
    attack_job(root / "quantize" / "2", QUANT4, True, [15.0, 17.0])
    attack_job(root / "quantize" / "3", QUANT4, False, [21.0, 23.0])
    attack_job(root / "dp_sgd" / "0", DP, True, [11.0, 13.0], privacy=PRIVACY)
    train_job(root / "utility" / "none" / "0", NONE, 0.80)
    train_job(root / "utility" / "none" / "1", NONE, 0.90, seed=1001)
    train_job(root / "utility" / "noise" / "0", {**NOISE_STRONG, "std": 0.01}, 0.5)
    train_job(root / "utility" / "noise" / "1", NOISE, None, status="failed")
    train_job(root / "utility" / "dp_sgd" / "0", {**DP, "max_norm": 1}, 0.3)  # 1 and 1.0: the same defence
    return root


def section(md: str) -> str:
    start = md.index("## Defences")
    end = md.find("\n## ", start + 1)
    return md[start:] if end < 0 else md[start:end]


def table_rows(md: str) -> list[str]:
    return [line for line in section(md).splitlines() if line.startswith("| ")][1:]


def md_row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def read_defences_csv(folder: Path) -> list[dict[str, str]]:
    with open(folder / "defences.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_table_rows_none_once_epsilon_and_utility(defences):
    md = (rep.report([defences]) / "report.md").read_text()
    one, ssim = "1.000 ± 0.000 [1.000, 1.000]", "0.500 ± 0.000 [0.500, 0.500]"
    assert table_rows(md) == [
        # none once (its naive job is the same attack); utility 0.80, 0.90: 0.85 ± 0.0707,
        # t(0.975, 1) = 12.706205, half width 12.706205 * 0.0707107 / sqrt(2) = 0.635310
        md_row("none", "-", "-", "2", one, "31.00 ± 1.41 [18.29, 43.71]", ssim, "absent", "-",
               "0.850 ± 0.071 [0.215, 1.485]"),
        # 20, 22: 21 ± 1.41, half width 12.706205 * 1.41421 / sqrt(2) = 12.71
        md_row("noise", "0.001", "adaptive", "2", one, "21.00 ± 1.41 [8.29, 33.71]", ssim, "absent", "-", "not measured"),
        md_row("noise", "0.001", "naive", "2", one, "26.00 ± 1.41 [13.29, 38.71]", ssim, "absent", "-", "not measured"),
        # 12, 14, 16: t(0.975, 2) = 4.302653, half width 4.302653 * 2 / sqrt(3) = 4.968275
        md_row("noise", "0.01", "adaptive", "3", "0.750 ± 0.250 [0.129, 1.371]", "14.00 ± 2.00 [9.03, 18.97]", ssim,
               "absent", "-", "0.500 (n = 1)"),
        md_row("noise", "0.01", "naive", "2", one, "18.00 ± 0.00 [18.00, 18.00]", ssim, "absent", "-", "0.500 (n = 1)"),
        # quantize: 8 bits before 4 (weak to strong)
        md_row("quantize", "8", "adaptive", "2", one, "25.00 ± 1.41 [12.29, 37.71]", ssim, "absent", "-", "not measured"),
        md_row("quantize", "8", "naive", "2", one, "28.00 ± 0.00 [28.00, 28.00]", ssim, "absent", "-", "not measured"),
        md_row("quantize", "4", "adaptive", "2", one, "16.00 ± 1.41 [3.29, 28.71]", ssim, "absent", "-", "not measured"),
        md_row("quantize", "4", "naive", "2", one, "22.00 ± 1.41 [9.29, 34.71]", ssim, "absent", "-", "not measured"),
        # epsilon for dp_sgd only; the training job's max_norm=1 joins the attack's 1.0
        md_row("dp_sgd", "1", "adaptive", "2", one, "12.00 ± 1.41 [-0.71, 24.71]", ssim, "absent", "12.3", "0.300 (n = 1)"),
    ]
    text = section(md)
    assert "| defence | strength | attacker | n | label acc. | PSNR (dB) | SSIM | LPIPS | epsilon | utility (test acc.) |" in text
    assert "(δ = 1e-05, opacus RDPAccountant)" in text
    assert "Noise floor (mean image): PSNR 12.00 ± 0.00 [12.00, 12.00] dB." in text
    assert "Training jobs without a test accuracy (1; not in the utility column):\n\n- `../utility/noise/1`: failed: out of memory" in text


def test_cells_match_report_stats(defences):
    md = (rep.report([defences]) / "report.md").read_text()
    row = next(r for r in table_rows(md) if r.startswith("| noise | 0.01 | adaptive"))
    assert f"| {_cell(describe([12.0, 14.0, 16.0]), 2)} |" in row
    none = table_rows(md)[0]
    assert none.endswith(f"| {_cell(describe([0.8, 0.9]), 3)} |")


def test_train_jobs_are_neither_attack_jobs_nor_unreadable(defences):
    attack, train = split_jobs(rep.find_jobs([defences]))
    assert len(attack) == 11 and len(train) == 5
    assert all(is_train_job(j) for j in train) and not any(is_train_job(j) for j in attack)
    assert {j.status for j in train} == {"done", "failed"}  # the failed one: no metrics.json, by its config
    folder = rep.report([defences])
    md = (folder / "report.md").read_text()
    assert "11 jobs (11 done) in 11 settings" in md
    assert "unreadable" not in md.lower() and "## Jobs not done" not in md
    assert "Not in the table: 5 training jobs (`deepleak train`: 4 done, 1 failed): the utility in Defences below." in md
    with open(folder / "report.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert all(r["n"] != "0" for r in rows) and not any("epochs" in key for key in rows[0])


def test_defences_csv_columns_and_values(defences):
    rows = read_defences_csv(rep.report([defences]))
    assert list(rows[0])[:7] == ["defence", "strength", "attacker", "n", "jobs", "defence_params",
                                 "label_accuracy_mean"]
    assert list(rows[0])[-7:] == ["lpips_mean_n", "epsilon", "utility_mean", "utility_std", "utility_ci_low",
                                  "utility_ci_high", "utility_n"]
    assert [(r["defence"], r["strength"], r["attacker"]) for r in rows] == [
        ("none", "", ""), ("noise", "0.001", "adaptive"), ("noise", "0.001", "naive"), ("noise", "0.01", "adaptive"),
        ("noise", "0.01", "naive"), ("quantize", "8", "adaptive"), ("quantize", "8", "naive"),
        ("quantize", "4", "adaptive"), ("quantize", "4", "naive"), ("dp_sgd", "1.0", "adaptive")]
    strong = rows[3]
    stat = describe([12.0, 14.0, 16.0])
    assert (strong["n"], strong["jobs"], strong["psnr_mean_n"]) == ("3", "1", "3")
    assert float(strong["psnr_mean_mean"]) == 14.0 and float(strong["psnr_mean_std"]) == 2.0
    assert float(strong["psnr_mean_ci_low"]) == pytest.approx(stat.low) == pytest.approx(14 - 4.968275, abs=1e-6)
    assert float(strong["psnr_mean_ci_high"]) == pytest.approx(14 + 4.968275, abs=1e-6)
    assert (strong["utility_mean"], strong["utility_std"], strong["utility_n"]) == ("0.5", "", "1")
    assert json.loads(strong["defence_params"]) == NOISE_STRONG
    assert strong["lpips_mean_mean"] == "absent" and strong["epsilon"] == ""
    assert rows[1]["utility_mean"] == "not measured" and rows[1]["utility_n"] == ""
    none = rows[0]
    assert float(none["utility_mean"]) == pytest.approx(0.85)
    assert float(none["utility_ci_low"]) == pytest.approx(0.85 - 12.706205 * 0.1 / 2, abs=1e-6)
    assert none["utility_n"] == "2"
    assert (rows[-1]["epsilon"], rows[-1]["utility_mean"]) == ("12.3456", "0.3")


def test_figures_are_written(defences):
    folder = rep.report([defences])
    names = ["fig_defence_psnr_mean.png", "fig_defence_label_accuracy.png", "fig_defence_utility.png"]
    for name in names:
        data = (folder / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 1000
    text = section((folder / "report.md").read_text())
    assert all(f"![{Path(name).stem}]({name})" in text for name in names)
    assert "No utility figure" not in text


def test_without_training_jobs_utility_is_not_measured_and_its_figure_skipped(tmp_path):
    attack_job(tmp_path / "0", NONE, True, [30.0, 32.0])
    attack_job(tmp_path / "1", NOISE, True, [20.0, 22.0])
    attack_job(tmp_path / "2", NOISE_STRONG, True, [12.0, 14.0])
    folder = rep.report([tmp_path])
    md = (folder / "report.md").read_text()
    assert all(row.endswith("| not measured |") for row in table_rows(md)) and len(table_rows(md)) == 3
    assert "No utility figure: no training jobs (`deepleak train` with the same defence) under the given paths." in md
    assert not (folder / "fig_defence_utility.png").exists()
    assert (folder / "fig_defence_psnr_mean.png").is_file() and "Not in the table" not in md


def test_no_defence_no_section(tmp_path):
    attack_job(tmp_path / "0", NONE, True, [30.0, 32.0])
    attack_job(tmp_path / "1", NONE, True, [20.0], with_defence=False)  # a run made before defences
    train_job(tmp_path / "utility" / "0", NONE, 0.8)
    folder = rep.report([tmp_path])
    md = (folder / "report.md").read_text()
    assert "## Defences" not in md and "2 jobs (2 done)" in md
    assert "Not in the table: 1 training job (`deepleak train`: 1 done): a utility, shown only when" in md
    assert not (folder / "defences.csv").exists()
    assert not list(folder.glob("fig_defence_*"))


def test_naive_attacker_alone_opens_the_section(tmp_path):
    attack_job(tmp_path / "0", NONE, False, [30.0, 32.0])
    rows = table_rows((rep.report([tmp_path]) / "report.md").read_text())
    assert [r.split(" | ")[:4] for r in rows] == [["| none", "-", "-", "2"]]  # no adaptive none: the naive one


def test_defence_key_treats_int_and_float_alike():
    assert defence_key({"name": "clip", "max_norm": 1}) == defence_key({"max_norm": 1.0, "name": "clip"})
    assert defence_key({"name": "quantize", "bits": 4, "stochastic": False}) != defence_key(
        {"name": "quantize", "bits": 4, "stochastic": True})


def test_variants_of_a_defence_are_told_apart(tmp_path):
    attack_job(tmp_path / "0", NOISE, True, [20.0, 22.0])
    attack_job(tmp_path / "1", {**NOISE, "distribution": "laplace"}, True, [24.0, 26.0])
    rows = table_rows((rep.report([tmp_path]) / "report.md").read_text())
    assert [r.split(" | ")[:4] for r in rows] == [["| noise (distribution=gaussian)", "0.001", "adaptive", "2"],
                                                  ["| noise (distribution=laplace)", "0.001", "adaptive", "2"]]
