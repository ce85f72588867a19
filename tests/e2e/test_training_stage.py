"""scripts/reproduce_training_stage.sh end to end at scale=smoke (issue 25): a victim trained with
checkpoint_epochs, every route attacked at every stage, and the report's Training stages
section in training order with the victims' own accuracies. About 2 min on 2 loaded cores."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "reproduce_training_stage.sh"
ROUTES = ["labels=zeroshot, labels only (attack=none), batch_size=8",
          "labels=zeroshot, labels only (attack=none), batch_size=64",
          "labels=zeroshot_plus, labels only (attack=none), batch_size=8",
          "labels=zeroshot_plus, labels only (attack=none), batch_size=64",
          "labels=gradinversion, labels only (attack=none), batch_size=8",
          "labels=llg, labels only (attack=none), batch_size=8",
          "labels=llg, labels only (attack=none), batch_size=64",
          "labels=ilrg, labels only (attack=none), batch_size=8",
          "labels=ilrg, labels only (attack=none), batch_size=64",
          "labels=feature_fit, labels only (attack=none), batch_size=8",
          "labels=adaptive, labels only (attack=none), batch_size=64",
          "labels=idlg, labels only (attack=none), batch_size=1",
          "labels=oracle, labels only (attack=none), batch_size=8",
          "labels=adaptive, attack=cosine_lbfgs, batch_size=4",
          "labels=oracle, attack=cosine_lbfgs, batch_size=4",
          "labels=oracle, attack=geng_plus, batch_size=4",
          *(f"scenario=fedavg, labels={m}, labels only (attack=none), batch_size=8"
            for m in ("zeroshot", "interpolated", "fitted", "fitted_search"))]


@pytest.mark.slow
def test_training_stage_script_at_smoke_scale(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", TORCH_HOME=str(tmp_path / "torch_home"), EPOCHS="2", STAGES="0,2",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run(["bash", str(SCRIPT), "scale=smoke"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ended with an error" not in result.stderr
    (parent,) = list((tmp_path / "outputs" / "multirun" / "training_stage").glob("*/*"))

    victim = parent / "victim"
    trained = json.loads((victim / "metrics.json").read_text())
    assert [c["epoch"] for c in trained["checkpoints"]] == [0, 2]
    stages = {e: json.loads((victim / "checkpoints" / f"epoch_{e}.json").read_text()) for e in (0, 2)}
    assert stages[2]["test_accuracy"] == trained["history"][1]["test_accuracy"]

    jobs = sorted(p.parent for p in parent.glob("*/*/metrics.json") if p.parent.parent.name != "victim")
    assert len(jobs) == 2 * (7 + 5 + 1 + 4 + 3)  # two stages x (seven label methods, five at batch 64, idlg, four FedAvg ones, three reconstructions)
    for job in jobs:
        assert (job / "status").read_text().strip() == "done", job
        block = json.loads((job / "metrics.json").read_text())["victim"]
        assert block["test_accuracy"] == stages[block["epoch"]]["test_accuracy"]

    md = (parent / "report" / "report.md").read_text()
    assert "the victims whose stages are in Training stages below" in md
    text = md[md.index("## Training stages"):]
    headings = [line[4:] for line in text.splitlines() if line.startswith("### ")]
    assert headings == ROUTES
    for heading in ROUTES:
        table = text[text.index(f"### {heading}"):].split("\n\n")[1].splitlines()[2:]
        assert [row.split(" | ")[:2] for row in table] == [["| 0", f"{stages[0]['test_accuracy']:.3f}"],
                                                           ["| 2", f"{stages[2]['test_accuracy']:.3f}"]]
    with open(parent / "report" / "stages.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 2 * len(ROUTES)
    assert (parent / "report" / "fig_stage_label_accuracy.png").is_file()
    assert (parent / "report" / "fig_stage_psnr.png").is_file()
