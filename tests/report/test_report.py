"""deepleak report: grouping, mean ± std [95% CI], failed and unreadable jobs, the noise floor,
files, no overwrite (fake job dirs)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from deepleak import report as rep
from deepleak.errors import DeepleakError

ABSENT_REASON = "LPIPS absent: AlexNet weights not found"


def make_job(folder: Path, overrides: list[str], *, status: str = "done", seed: int = 0,
             psnr: list[float] | None = None, label_accuracy: list[float] | None = None,
             error: str | None = None, choices: dict | None = None, config: dict | None = None,
             grid: bool = True, noise_floor: list[dict | None] | None = None) -> Path:
    """A job dir as `deepleak attack` leaves it, written by hand (no attack runs).
    ``noise_floor``: each trial's ``noise_floor`` record (none: a run made before it existed)."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config or {"seed": seed, "batch_size": 4}))
    hydra = {"hydra": {"runtime": {"choices": {"hydra/launcher": "basic", **(choices or {})}}}}
    (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    (folder / "status").write_text(status + "\n")
    if error:
        (folder / "error.txt").write_text(error + "\n")
    if label_accuracy is not None:
        records = []
        for i, acc in enumerate(label_accuracy):
            record = {"trial": i, "label_accuracy": acc, "count_accuracy": 1.0}
            if psnr is not None:
                record.update(psnr_mean=psnr[i], ssim_mean=0.5, lpips_mean=None, lpips_absent_reason=ABSENT_REASON)
            if noise_floor is not None:
                record["noise_floor"] = noise_floor[i]
            records.append(record)
        metrics = {"scenario": "fedsgd", "seed": seed, "trials": len(records), "trials_done": len(records),
                   "summary": {}, "per_trial": records}
        (folder / "metrics.json").write_text(json.dumps(metrics))
    if grid and psnr is not None:
        (folder / "images" / "trial_000").mkdir(parents=True)
        pixels = (np.random.default_rng(0).random((66, 130, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / "images" / "trial_000" / "grid.png")
    return folder


@pytest.fixture
def sweep(tmp_path):
    """batch_size=2,10 x distribution=unique,random; (2, unique) run with two seeds; one failed."""
    root = tmp_path / "multirun" / "2026-01-01" / "10-00-00"
    jobs = [
        (["batch_size=10", "distribution=unique", "+scenario=fedsgd"], dict(psnr=[10.0, 12.0], label_accuracy=[0.5, 1.0])),
        (["batch_size=2", "distribution=unique", "+scenario=fedsgd"], dict(psnr=[20.0, 22.0], label_accuracy=[1.0, 1.0])),
        (["batch_size=2", "distribution=unique", "+scenario=fedsgd", "seed=1"], dict(seed=1, psnr=[30.0], label_accuracy=[0.0])),
        (["batch_size=2", "distribution=random", "+scenario=fedsgd"], dict(psnr=[15.0, 15.0], label_accuracy=[1.0, 1.0])),
        (["batch_size=10", "distribution=random", "+scenario=fedsgd"],
         dict(status="failed", error="the random distribution is unhappy\nsecond line")),
    ]
    for n, (overrides, kwargs) in enumerate(jobs):
        make_job(root / str(n), overrides, **kwargs)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def read_csv(folder: Path, floors: bool = False) -> list[dict[str, str]]:
    """report.csv's rows: the groups', or with ``floors`` the noise-floor rows only."""
    with open(folder / "report.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [r for r in rows if bool(r.get("reference")) == floors]


def test_groups_and_mean_std(sweep):
    folder = rep.report([sweep])
    assert folder == sweep / "report"
    rows = read_csv(folder)
    # seed is a repeat, not a column; 2 sorts before 10; text values alphabetically
    assert [(r["batch_size"], r["distribution"]) for r in rows] == [
        ("2", "random"), ("2", "unique"), ("10", "random"), ("10", "unique")]
    assert "seed" not in rows[0] and "scenario" not in rows[0]
    pooled = rows[1]  # (2, unique): seeds 0 and 1 pooled, three trials
    assert pooled["n"] == "3" and pooled["seeds"] == "0 1" and pooled["jobs"] == "2"
    assert float(pooled["psnr_mean_mean"]) == pytest.approx(24.0)
    assert float(pooled["psnr_mean_std"]) == pytest.approx(np.std([20.0, 22.0, 30.0], ddof=1))
    # t(0.975, 2) = 4.302653: 24 ± 4.302653 * 5.291503 / sqrt(3)
    assert float(pooled["psnr_mean_ci_low"]) == pytest.approx(10.855179, abs=1e-6)
    assert float(pooled["psnr_mean_ci_high"]) == pytest.approx(37.144821, abs=1e-6)
    assert pooled["psnr_mean_n"] == "3"
    assert float(pooled["label_accuracy_mean"]) == pytest.approx(2 / 3)
    assert float(rows[3]["label_accuracy_std"]) == pytest.approx(np.sqrt(0.125))
    assert rows[3]["lpips_mean_mean"] == "absent"
    md = (folder / "report.md").read_text()
    assert ("| 2 | unique | 3 | 0,1 | 2 done | 0.667 ± 0.577 [-0.768, 2.101] | 1.000 ± 0.000 [1.000, 1.000] "
            "| 24.00 ± 5.29 [10.86, 37.14] | 0.500 ± 0.000 [0.500, 0.500] | absent |") in md
    assert "Each cell: mean ± std [95% CI] over the n trials" in md and "ddof = 1" in md
    assert "Fixed: `scenario=fedsgd`" in md
    assert ABSENT_REASON in md


def test_jobs_split_by_first_trial_are_pooled(tmp_path):
    make_job(tmp_path / "a", ["attack=fedavg_replay", "trials=2"], psnr=[10.0, 12.0], label_accuracy=[1.0, 1.0])
    make_job(tmp_path / "b", ["attack=fedavg_replay", "trials=2", "first_trial=2"], psnr=[14.0, 16.0],
             label_accuracy=[0.5, 1.0])
    (row,) = read_csv(rep.report([tmp_path / "a", tmp_path / "b"], out=tmp_path / "out"))
    assert row["n"] == "4" and row["jobs"] == "2" and "first_trial" not in row
    assert float(row["psnr_mean_mean"]) == pytest.approx(13.0)


def test_failed_job_is_listed_not_dropped(sweep):
    folder = rep.report([sweep])
    failed = [r for r in read_csv(folder) if r["failed"] == "1"]
    assert [(r["batch_size"], r["distribution"], r["n"], r["psnr_mean_mean"]) for r in failed] == [("10", "random", "0", "")]
    md = (folder / "report.md").read_text()
    assert "| 10 | random | 0 | 0 | 1 failed | - | - | - | - | - |" in md  # seed from its config
    section = md[md.index("## Jobs not done"):]
    assert "| ../4 | batch_size=10, distribution=random | failed | 0 | the random distribution is unhappy |" in section
    assert "second line" not in section


def test_figures_and_montage_are_written(sweep):
    folder = rep.report([sweep])
    names = {"fig_label_accuracy.png", "fig_count_accuracy.png", "fig_psnr_mean.png", "fig_ssim_mean.png", "montage.png"}
    assert names <= {p.name for p in folder.iterdir()}
    assert not (folder / "fig_lpips_mean.png").exists()  # absent: nothing to plot
    for name in names:
        data = (folder / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 1000
    md = (folder / "report.md").read_text()
    assert "![fig_psnr_mean](fig_psnr_mean.png)" in md and "(montage.png)" in md


def test_second_report_never_overwrites(sweep, tmp_path):
    first = rep.report([sweep])
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    second = rep.report([sweep])
    third = rep.report([sweep])
    assert (second.name, third.name) == ("report-1", "report-2")
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before
    assert (second / "report.csv").read_text() == (first / "report.csv").read_text()  # reports are not jobs
    out = rep.report([sweep], out=tmp_path / "elsewhere")
    assert out == tmp_path / "elsewhere" / "report"


def test_labels_only_has_no_image_columns_and_bars_without_numeric_key(tmp_path):
    make_job(tmp_path / "a", ["attack=none", "distribution=unique"], label_accuracy=[1.0, 0.5])
    make_job(tmp_path / "b", ["attack=none", "distribution=one_class"], label_accuracy=[1.0])
    folder = rep.report([tmp_path])
    header = next(csv.reader(open(folder / "report.csv")))
    assert header[0] == "distribution" and not any(h.startswith(("psnr", "ssim", "lpips")) for h in header)
    assert (folder / "fig_label_accuracy.png").stat().st_size > 1000  # a bar chart
    assert not (folder / "montage.png").exists()
    assert "## Jobs not done" not in (folder / "report.md").read_text()


def test_value_missing_from_overrides_comes_from_config(tmp_path):
    """Two sweeps: one sets distribution and batch_size, the other leaves them at their defaults."""
    make_job(tmp_path / "s1" / "0", ["distribution=random", "batch_size=8"], label_accuracy=[0.5],
             choices={"distribution": "random"}, config={"batch_size": 8, "seed": 0})
    make_job(tmp_path / "s2" / "0", ["trials=1"], label_accuracy=[1.0],
             choices={"distribution": "unique"}, config={"batch_size": 4, "seed": 0, "trials": 1})
    folder = rep.report([tmp_path / "s1", tmp_path / "s2"])
    assert folder == tmp_path / "s1" / "report"
    rows = read_csv(folder)
    assert [(r["distribution"], r["batch_size"], r["trials"]) for r in rows] == [("random", "8", ""), ("unique", "4", "1")]


def test_tex_is_a_booktabs_tabular(sweep):
    tex = (rep.report([sweep]) / "report.tex").read_text()
    lines = tex.splitlines()
    assert lines[0].startswith("% cells: $mean \\pm std$ [95% CI]")
    assert lines[1] == r"\begin{tabular}{llrrrrrr}" and lines[-1] == r"\end{tabular}"
    assert r"\toprule" in lines and r"\midrule" in lines and r"\bottomrule" in lines
    assert r"batch\_size & distribution & $n$" in tex
    assert r"2 & unique & 3 & $0.667 \pm 0.577$ [-0.768, 2.101]" in tex
    assert r"2 & random & 2 & $1.000 \pm 0.000$ [1.000, 1.000]" in tex
    assert r"noise floor: uniform &  &  & -- & -- & not recorded & not recorded & -- \\" in tex


def test_cli_main(sweep, capsys):
    rep.main([str(sweep)])
    out = capsys.readouterr().out
    assert out.startswith(f"report written to {sweep / 'report'}")
    assert "| batch_size | distribution |" in out and "some jobs did not finish" in out
    with pytest.raises(SystemExit) as exit_info:
        rep.main([str(sweep / "missing")])
    assert exit_info.value.code == 2
    assert "deepleak: error: no such directory" in capsys.readouterr().err


def test_no_jobs_is_an_error(tmp_path):
    with pytest.raises(DeepleakError, match="no job"):
        rep.report([tmp_path])
    assert not (tmp_path / "report").exists()


@pytest.mark.slow
def test_report_of_a_real_sweep(deepleak, tmp_path):
    result = deepleak("attack", "-m", "batch_size=1,2", "attack.iterations=2", "trials=2")
    assert result.returncode == 0, result.stderr
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    folder = rep.report([sweep])
    rows = read_csv(folder)
    assert [(r["batch_size"], r["n"], r["done"]) for r in rows] == [("1", "2", "1"), ("2", "2", "1")]
    summary = json.loads((sweep / "1" / "metrics.json").read_text())["summary"]["psnr_mean"]
    assert float(rows[1]["psnr_mean_mean"]) == pytest.approx(summary["mean"])
    assert float(rows[1]["psnr_mean_std"]) == pytest.approx(summary["std"] * np.sqrt(2))  # summary: ddof 0, n 2
    floors = read_csv(folder, floors=True)  # every real run records its noise floor
    assert [r["reference"] for r in floors] == ["uniform", "mean_image"]
    assert all(r["n"] == "4" and 0 < float(r["psnr_mean_mean"]) < 100 for r in floors)
    assert (folder / "montage.png").stat().st_size > 1000


def test_only_report_dirs_are_skipped(tmp_path):
    make_job(tmp_path / "reports_2026" / "0", ["batch_size=2"], label_accuracy=[1.0])
    make_job(tmp_path / "report" / "0", ["batch_size=3"], label_accuracy=[1.0])  # looks like an old report
    rows = read_csv(rep.report([tmp_path]))
    assert [r["n"] for r in rows] == ["1"]
    assert (tmp_path / "report-1" / "report.csv").is_file()


def test_attempts_moved_aside_by_resume_are_not_jobs(tmp_path):
    job = make_job(tmp_path / "0", ["batch_size=2"], label_accuracy=[1.0, 1.0])
    (job / "previous-1").mkdir()
    (job / "previous-1" / "metrics.json").write_text(json.dumps({"trials": 2, "trials_done": 1, "per_trial": [{"label_accuracy": 0.0}]}))
    rows = read_csv(rep.report([tmp_path]))
    assert [(r["n"], r["label_accuracy_mean"]) for r in rows] == [("2", "1.0")]


# --------------------------------------------------------------------------- unreadable jobs

@pytest.mark.parametrize("content, reason", [
    ('{"per_trial": [', "corrupt JSON: Expecting value: line 1 column 16 (char 15); status file: done"),
    (None, "missing; status file: done"),
    ('[1, 2]', "not a JSON object but a list ([1, 2]); status file: done"),
    ('{"trials": 2, "trials_done": "2", "per_trial": []}', 'trials_done is a string ("2"), not an integer; status file: done'),
    ('{"per_trial": "none"}', 'per_trial is a string ("none"), not a list; status file: done'),
    ('{"per_trial": [{"psnr_mean": "12.0"}]}', 'per_trial[0].psnr_mean is a string ("12.0"), not a number; status file: done'),
])
def test_unreadable_metrics_are_shown_as_unreadable(tmp_path, capsys, content, reason):
    make_job(tmp_path / "0", ["batch_size=2"], psnr=[10.0, 12.0], label_accuracy=[1.0, 1.0], grid=False)
    job = make_job(tmp_path / "1", ["batch_size=4"], psnr=[10.0, 12.0], label_accuracy=[1.0, 1.0], grid=False)
    if content is None:
        (job / "metrics.json").unlink()
    else:
        (job / "metrics.json").write_text(content)
    folder = rep.report([tmp_path])  # still builds
    md = (folder / "report.md").read_text()
    assert "2 jobs (1 done, 1 unreadable) in 2 settings" in md
    assert "| 4 | 0 | 1 unreadable | - | - | - | - | - |" in md  # not "1 done" with n = 0
    table_end = md.index("\n\n", md.index("| batch_size |"))
    note = md[table_end:]
    assert note.startswith("\n\nUnreadable (1 job; their trials are missing from the table):\n\n")
    assert f"- `../1/metrics.json`: {reason}\n" in note
    assert "## Jobs not done" not in md  # named once, in the note
    (row,) = [r for r in read_csv(folder) if r["batch_size"] == "4"]
    assert (row["n"], row["done"], row["unreadable"], row["other"]) == ("0", "0", "1", "0")
    rep.main([str(tmp_path)])
    assert "metrics.json cannot be read: see" in capsys.readouterr().out


def test_missing_metrics_of_a_failed_job_is_not_unreadable(sweep):
    job = rep.read_job(sweep / "4")  # failed before its first trial: no metrics.json
    assert (job.status, job.unreadable) == ("failed", None)


# --------------------------------------------------------------------------- n = 1 and partial n

def test_single_trial_cells_say_n_1_not_std_0(tmp_path):
    make_job(tmp_path / "a", ["batch_size=1"], psnr=[27.47], label_accuracy=[1.0], grid=False)
    make_job(tmp_path / "b", ["batch_size=2"], psnr=[20.0, float("nan"), 24.0], label_accuracy=[1.0, 0.5, 0.0],
             grid=False)
    folder = rep.report([tmp_path])
    md = (folder / "report.md").read_text()
    assert "| 1 | 1 | 1 done | 1.000 (n = 1) | 1.000 (n = 1) | 27.47 (n = 1) | 0.500 (n = 1) | absent |" in md
    assert "| 2 | 3 | 1 done | 0.500 ± 0.500 [-0.742, 1.742] |" in md
    assert "| 22.00 ± 2.83 [-3.41, 47.41] (n = 2) |" in md  # NaN PSNR: 2 of 3 trials
    one = read_csv(folder)[0]
    assert (one["psnr_mean_mean"], one["psnr_mean_std"], one["psnr_mean_ci_low"], one["psnr_mean_n"]) == ("27.47", "", "", "1")
    assert r"$27.47$ ($n = 1$)" in (folder / "report.tex").read_text()
    assert (folder / "fig_psnr_mean.png").stat().st_size > 1000  # no error bar for n = 1


def test_nothing_swept_has_a_setting_column(tmp_path):
    make_job(tmp_path / "a", ["batch_size=1"], psnr=[10.0, 12.0], label_accuracy=[1.0, 1.0], grid=False)
    md = (rep.report([tmp_path]) / "report.md").read_text()
    assert "| setting | n | jobs | label acc." in md and "| all jobs | 2 | 1 done |" in md
    assert "| noise floor: uniform |  |  | - | - | not recorded | not recorded | - |" in md  # label, n, jobs


# --------------------------------------------------------------------------- noise floor

def floor(uniform_psnr, mean_psnr, uniform_ssim=0.01, mean_ssim=0.2):
    return {"uniform": {"psnr": uniform_psnr, "ssim": uniform_ssim},
            "mean_image": None if mean_psnr is None else {"psnr": mean_psnr, "ssim": mean_ssim},
            "mean_image_over": None if mean_psnr is None else 256, "seconds": 0.001}


def test_noise_floor_rows_pool_every_trial_of_the_table(tmp_path):
    make_job(tmp_path / "a", ["batch_size=1"], psnr=[20.0, 22.0], label_accuracy=[1.0, 1.0], grid=False,
             noise_floor=[floor(7.0, 12.0), floor(8.0, 13.0)])
    make_job(tmp_path / "b", ["batch_size=2"], psnr=[15.0, 16.0], label_accuracy=[1.0, 1.0], grid=False,
             noise_floor=[floor(9.0, 14.0, 0.03, 0.4), floor(8.0, 13.0, 0.02, 0.3)])
    make_job(tmp_path / "c", ["batch_size=4"], psnr=[14.0], label_accuracy=[1.0], grid=False)  # an old run
    folder = rep.report([tmp_path])
    md = (folder / "report.md").read_text()
    lines = md.splitlines()
    table = [line for line in lines if line.startswith("|")]
    # uniform PSNR 7, 8, 9, 8: mean 8, std 0.8165, t(0.975, 3) = 3.1824 -> 8 ± 1.2992
    # mean image PSNR 12, 13, 14, 13 (mean 13, the same spread); SSIM 0.01, 0.01, 0.03, 0.02
    # (0.0175 ± 0.009574 -> [0.002266, 0.032734]) and 0.2, 0.2, 0.4, 0.3 (0.275 ± 0.095743)
    assert table[-2:] == [
        "| noise floor: uniform | 4 |  | - | - | 8.00 ± 0.82 [6.70, 9.30] | 0.018 ± 0.010 [0.002, 0.033] | - |",
        "| noise floor: mean image | 4 |  | - | - | 13.00 ± 0.82 [11.70, 14.30] | 0.275 ± 0.096 [0.123, 0.427] | - |",
    ]  # the columns: batch_size (the label), n, jobs (blank), then the metrics
    assert "Noise floor: the PSNR/SSIM of uniform noise and of the data set's mean image" in md
    uniform, mean_image = read_csv(folder, floors=True)
    assert (uniform["reference"], uniform["n"], uniform["batch_size"], uniform["label_accuracy_mean"]) == (
        "uniform", "4", "", "")
    assert float(uniform["psnr_mean_mean"]) == 8.0
    assert float(uniform["psnr_mean_std"]) == pytest.approx(0.8164966, abs=1e-7)
    assert float(uniform["psnr_mean_ci_low"]) == pytest.approx(8 - 3.1824463 * 0.8164966 / 2, abs=1e-6)
    assert float(mean_image["ssim_mean_mean"]) == pytest.approx(0.275)
    tex = (folder / "report.tex").read_text()
    assert "\\midrule\nnoise floor: uniform & 4 & -- & -- & $8.00 \\pm 0.82$ [6.70, 9.30]" in tex


def test_noise_floor_not_recorded_and_no_mean_image(tmp_path):
    make_job(tmp_path / "a", ["batch_size=1"], psnr=[20.0, 22.0], label_accuracy=[1.0, 1.0], grid=False,
             noise_floor=[floor(7.0, None), floor(8.0, None)])  # an imported update: no data set
    md = (rep.report([tmp_path]) / "report.md").read_text()
    assert "| noise floor: uniform | 2 |  | - | - | 7.50 ± 0.71 [1.15, 13.85] | 0.010 ± 0.000 [0.010, 0.010] | - |" in md
    assert "| noise floor: mean image |  |  | - | - | - | - | - |" in md


def test_labels_only_table_has_no_noise_floor_rows(tmp_path):
    make_job(tmp_path / "a", ["attack=none", "distribution=unique"], label_accuracy=[1.0, 0.5])
    make_job(tmp_path / "b", ["attack=none", "distribution=one_class"], label_accuracy=[1.0])
    folder = rep.report([tmp_path])
    assert "noise floor" not in (folder / "report.md").read_text().lower()
    assert "reference" not in (folder / "report.csv").read_text()
