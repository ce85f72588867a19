"""deepleak report's Training stages section (issue 25): jobs grouped by route (label method,
attack, batch size) and ordered by the victim's epoch, the victims' test accuracy, stages.csv
and the figures (crafted job dirs; no attack or training runs)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from deepleak import report as rep
from deepleak.report import stages

FLOOR = {"uniform": {"psnr": 7.0, "ssim": 0.01}, "mean_image": {"psnr": 12.0, "ssim": 0.2}, "mean_image_over": 256}
TRAIN_RUN = "/runs/train/victim"
# epoch -> (train accuracy, test accuracy) of the victim's stage files
STAGES = {0: (0.094, 0.092), 5: (0.767, 0.723), 20: (0.988, 0.985)}


def victim(epoch: int | None, *, run: str = TRAIN_RUN, accuracy: tuple[float, float] | None = None) -> dict:
    """metrics.json's ``victim`` block: None: model.checkpoint=null (the fresh init)."""
    if epoch is None:
        return {"epoch": 0, "train_accuracy": None, "test_accuracy": None, "checkpoint": None, "train_run": None}
    train, test = accuracy or STAGES[epoch]
    return {"epoch": epoch, "train_accuracy": train, "test_accuracy": test,
            "checkpoint": f"{run}/checkpoints/epoch_{epoch}.pt", "train_run": run}


def attack_job(folder: Path, labels: str, attack: str, batch: int, block: dict | None, label_accuracy: list[float],
               psnr: list[float] | None = None, seed: int = 1000, scenario: str = "fedsgd",
               label_floor: list[float] | None = None) -> Path:
    """An attack job dir as a training_stage sweep leaves it (written by hand); ``block`` None:
    a run made before metrics.json had ``victim``."""
    checkpoint = block["checkpoint"] if block else None
    overrides = [f"labels={labels}", f"attack={attack}", f"batch_size={batch}", f"model.checkpoint={checkpoint}",
                 "+experiment=training_stage"]
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "batch_size": batch,
                                                                   "trials": len(label_accuracy)}))
    (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": {}}}}))
    (folder / "status").write_text("done\n")
    records = []
    for i, accuracy in enumerate(label_accuracy):
        record = {"trial": i, "label_accuracy": accuracy}
        if label_floor is not None:
            record["label_floor"] = label_floor[i]
        if psnr is not None:
            record.update(psnr_mean=psnr[i], ssim_mean=0.5, lpips_mean=None, noise_floor=FLOOR,
                          lpips_absent_reason="LPIPS absent: AlexNet weights not found")
        records.append(record)
    metrics = {"scenario": scenario, "labels": labels, "recipe": attack, "batch_size": batch, "seed": seed,
               "trials": len(records), "trials_done": len(records), "summary": {}, "per_trial": records}
    if block is not None:
        metrics["victim"] = block
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def stage_sweep(root: Path) -> Path:
    """Labels (llg, batch 8) and reconstructions (oracle, geng_plus, batch 4) at epochs 20, 0 and
    5 (job numbers out of training order), the fresh init, and a job of an older run."""
    attack_job(root / "labels" / "0", "llg", "none", 8, victim(20), [0.5, 0.75])
    attack_job(root / "labels" / "1", "llg", "none", 8, victim(0), [1.0, 1.0])
    attack_job(root / "labels" / "2", "llg", "none", 8, victim(5), [0.75, 0.75, 1.0])
    attack_job(root / "labels" / "3", "llg", "none", 8, victim(None), [1.0, 0.875])
    attack_job(root / "images" / "0", "oracle", "geng_plus", 4, victim(5), [1.0, 1.0], [20.0, 24.0])
    attack_job(root / "images" / "1", "oracle", "geng_plus", 4, victim(20), [1.0, 1.0], [14.0, 14.0])
    attack_job(root / "images" / "2", "oracle", "geng_plus", 4, victim(0), [1.0, 1.0], [44.0, 46.0])
    return root


def section(md: str) -> str:
    start = md.index("## Training stages")
    end = md.find("\n## ", start + 1)
    return md[start:] if end < 0 else md[start:end]


def tables(md: str) -> dict[str, list[str]]:
    """Each ``### route`` heading with its table's body rows."""
    result: dict[str, list[str]] = {}
    heading = None
    for line in section(md).splitlines():
        if line.startswith("### "):
            heading = line[4:]
            result[heading] = []
        elif heading and line.startswith("| ") and not line.startswith("| epoch"):
            result[heading].append(line)
    return result


def md_row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def test_routes_group_and_order_by_epoch(tmp_path):
    # A job dir named images/ is skipped by the report (it is where runs keep their PNGs):
    # the sweep puts its reconstructions elsewhere, as scripts/reproduce_training_stage.sh does.
    root = stage_sweep(tmp_path / "sweep")
    (root / "images").rename(root / "reconstruction")
    md = (rep.report([root]) / "report.md").read_text()
    found = tables(md)
    assert list(found) == ["labels=llg, labels only (attack=none), batch_size=8",
                           "labels=oracle, attack=geng_plus, batch_size=4"]
    assert found["labels=llg, labels only (attack=none), batch_size=8"] == [
        # 1.0, 0.875: 0.9375 ± 0.0884, half width 12.706205 * 0.0883883 / sqrt(2) = 0.794137
        md_row("0 (fresh init)", "-", "2", "0.938 ± 0.088 [0.143, 1.732]"),
        md_row("0", "0.092", "2", "1.000 ± 0.000 [1.000, 1.000]"),
        # 0.75, 0.75, 1: 0.8333 ± 0.1443, half width 4.302653 * 0.1443376 / sqrt(3) = 0.358550
        md_row("5", "0.723", "3", "0.833 ± 0.144 [0.475, 1.192]"),
        # 0.5, 0.75: 0.625 ± 0.1768, half width 12.706205 * 0.1767767 / sqrt(2) = 1.588276
        md_row("20", "0.985", "2", "0.625 ± 0.177 [-0.963, 2.213]"),
    ]
    assert found["labels=oracle, attack=geng_plus, batch_size=4"] == [
        md_row("0", "0.092", "2", "1.000 ± 0.000 [1.000, 1.000]", "45.00 ± 1.41 [32.29, 57.71]",
               "0.500 ± 0.000 [0.500, 0.500]"),
        md_row("5", "0.723", "2", "1.000 ± 0.000 [1.000, 1.000]", "22.00 ± 2.83 [-3.41, 47.41]",
               "0.500 ± 0.000 [0.500, 0.500]"),
        md_row("20", "0.985", "2", "1.000 ± 0.000 [1.000, 1.000]", "14.00 ± 0.00 [14.00, 14.00]",
               "0.500 ± 0.000 [0.500, 0.500]"),
    ]
    text = section(md)
    assert "| epoch | test acc. | n | label acc. |\n" in text
    assert "| epoch | test acc. | n | label acc. | PSNR (dB) | SSIM |\n" in text
    assert "Noise floor (mean image, over the image routes' trials): PSNR 12.00 ± 0.00 [12.00, 12.00] dB." in text


def test_images_folder_is_not_searched(tmp_path):
    """As for every report: a folder named images/ holds PNGs, not jobs."""
    md = (rep.report([stage_sweep(tmp_path / "sweep")]) / "report.md").read_text()
    assert list(tables(md)) == ["labels=llg, labels only (attack=none), batch_size=8"]


def test_stages_csv_and_figures(tmp_path):
    root = stage_sweep(tmp_path / "sweep")
    (root / "images").rename(root / "reconstruction")
    folder = rep.report([root])
    with open(folder / "stages.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["labels"], r["attack"], r["batch_size"], r["epoch"], r["fresh_init"]) for r in rows] == [
        ("llg", "none", "8", "0", "true"), ("llg", "none", "8", "0", "false"), ("llg", "none", "8", "5", "false"),
        ("llg", "none", "8", "20", "false"), ("oracle", "geng_plus", "4", "0", "false"),
        ("oracle", "geng_plus", "4", "5", "false"), ("oracle", "geng_plus", "4", "20", "false")]
    assert rows[0]["test_accuracy_mean"] == "" and float(rows[1]["test_accuracy_mean"]) == 0.092
    assert float(rows[3]["train_accuracy_mean"]) == 0.988 and rows[3]["victims"] == "1"
    assert float(rows[5]["psnr_mean_mean"]) == 22.0 and rows[5]["psnr_mean_n"] == "2"
    assert float(rows[2]["label_accuracy_mean"]) == (0.75 + 0.75 + 1.0) / 3 and rows[2]["n"] == "3"
    assert rows[0]["psnr_mean_mean"] == ""  # labels only: no PSNR
    text = section((folder / "report.md").read_text())
    for name in ("fig_stage_label_accuracy.png", "fig_stage_psnr.png"):
        data = (folder / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 1000
        assert f"![{Path(name).stem}]({name})" in text


def test_victims_of_two_training_runs_pool_with_the_accuracy_over_victims(tmp_path):
    attack_job(tmp_path / "0", "llg", "none", 8, victim(5), [1.0])
    attack_job(tmp_path / "1", "llg", "none", 8, victim(5, run="/runs/other", accuracy=(0.8, 0.7)), [0.5], seed=1001)
    attack_job(tmp_path / "2", "llg", "none", 8, victim(20), [0.5])
    rows = next(iter(tables((rep.report([tmp_path]) / "report.md").read_text()).values()))
    # 0.723, 0.700: 0.7115 ± 0.0163, half width 12.706205 * 0.0162635 / sqrt(2) = 0.146122
    assert rows[0] == md_row("5", "0.712 ± 0.016 [0.565, 0.858]", "2", "0.750 ± 0.354 [-2.427, 3.927]")
    assert rows[1] == md_row("20", "0.985", "1", "0.500 (n = 1)")


def test_no_stage_no_section(tmp_path):
    """Untrained victims only, a checkpoint without a stage file and older runs: no section."""
    attack_job(tmp_path / "0", "llg", "none", 8, victim(None), [1.0])
    attack_job(tmp_path / "1", "llg", "none", 8, {**victim(5), "epoch": None, "train_accuracy": None,
                                                  "test_accuracy": None, "train_run": None}, [1.0])
    attack_job(tmp_path / "2", "llg", "none", 8, None, [1.0])
    folder = rep.report([tmp_path])
    assert "## Training stages" not in (folder / "report.md").read_text()
    assert not (folder / "stages.csv").exists() and not list(folder.glob("fig_stage_*"))


def test_a_checkpoint_of_unknown_stage_is_counted_out(tmp_path):
    attack_job(tmp_path / "0", "llg", "none", 8, victim(5), [1.0])
    attack_job(tmp_path / "1", "llg", "none", 8, {**victim(5), "epoch": None}, [0.0])
    text = section((rep.report([tmp_path]) / "report.md").read_text())
    assert "Not in this section: 1 job on a checkpoint without a stage file (unknown epoch)." in text
    assert md_row("5", "0.723", "1", "1.000 (n = 1)") in text


def test_a_further_swept_key_splits_routes_only_where_it_varies(tmp_path):
    """wrong_labels swept within one route: two tables; the distribution, which differs only
    between routes (labels at random, reconstructions at unique), splits nothing."""
    def add(job: Path, *extra: str) -> None:
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*overrides, *extra]))

    for n, wrong in enumerate((0, 1)):
        add(attack_job(tmp_path / str(n), "oracle", "geng_plus", 4, victim(5), [1.0], [20.0 - 5 * wrong]),
            f"wrong_labels={wrong}", "distribution=unique")
    add(attack_job(tmp_path / "2", "llg", "none", 8, victim(5), [1.0]), "wrong_labels=0", "distribution=random")
    md = (rep.report([tmp_path]) / "report.md").read_text()
    assert list(tables(md)) == ["labels=llg, labels only (attack=none), batch_size=8, wrong_labels=0",
                                "labels=oracle, attack=geng_plus, batch_size=4, wrong_labels=0",
                                "labels=oracle, attack=geng_plus, batch_size=4, wrong_labels=1"]


def test_a_fedavg_route_is_its_own_route_beside_fedsgd(tmp_path):
    """The same label method under FedSGD and FedAvg (the script's labels_fedavg sweep): two
    routes, FedAvg's marked and after FedSGD's, and the scenario in stages.csv."""
    attack_job(tmp_path / "labels" / "0", "zeroshot", "none", 8, victim(0), [1.0, 1.0])
    attack_job(tmp_path / "labels" / "1", "zeroshot", "none", 8, victim(20), [0.5, 0.25])
    attack_job(tmp_path / "labels_fedavg" / "0", "zeroshot", "none", 8, victim(0), [0.75, 0.5], scenario="fedavg")
    attack_job(tmp_path / "labels_fedavg" / "1", "zeroshot", "none", 8, victim(20), [0.25, 0.25], scenario="fedavg")
    folder = rep.report([tmp_path])
    found = tables((folder / "report.md").read_text())
    assert list(found) == ["labels=zeroshot, labels only (attack=none), batch_size=8",
                           "scenario=fedavg, labels=zeroshot, labels only (attack=none), batch_size=8"]
    fedavg = found["scenario=fedavg, labels=zeroshot, labels only (attack=none), batch_size=8"]
    assert [row.split(" | ")[:2] for row in fedavg] == [["| 0", "0.092"], ["| 20", "0.985"]]
    assert "0.625" in fedavg[0] and "0.250" in fedavg[1]
    with open(folder / "stages.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["scenario"], r["epoch"], r["label_accuracy_mean"][:5]) for r in rows] == [
        ("fedsgd", "0", "1.0"), ("fedsgd", "20", "0.375"), ("fedavg", "0", "0.625"), ("fedavg", "20", "0.25")]


def test_the_label_floor_is_a_column_beside_label_accuracy_and_a_line_per_batch_size(tmp_path):
    root = tmp_path / "sweep"
    attack_job(root / "labels" / "0", "llg", "none", 8, victim(20), [0.5, 0.75], label_floor=[0.5, 0.625])
    attack_job(root / "labels" / "1", "llg", "none", 8, victim(0), [1.0, 1.0], label_floor=[0.625, 0.625])
    attack_job(root / "labels" / "2", "llg", "none", 64, victim(0), [0.5, 0.5], label_floor=[0.875, 0.8125])
    routes, _, _ = stages.stage_routes(rep.find_jobs([root]), ["labels", "batch_size", "model.checkpoint"])
    floors = stages._label_floors(routes)
    assert list(floors) == ["8", "64"]
    assert floors["8"].mean == pytest.approx(0.59375) and floors["8"].n == 4
    assert floors["64"].mean == pytest.approx(0.84375)
    folder = rep.report([root])
    rows = tables((folder / "report.md").read_text())
    assert rows["labels=llg, labels only (attack=none), batch_size=8"][0].startswith("| 0 | 0.092 | 2 | 1.000 ± 0.000")
    assert "| 0.625 ± 0.000 [0.625, 0.625] |" in rows["labels=llg, labels only (attack=none), batch_size=8"][0]
    assert "label floor" in (folder / "report.md").read_text().split("### ")[1].splitlines()[2]
    with open(folder / "stages.csv", newline="") as handle:
        assert float(next(csv.DictReader(handle))["label_floor_mean"]) == 0.625
