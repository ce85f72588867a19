"""Defences through the task code (issue 22): the client applies them, the server sees only
their public parameters, the adaptive and the naive attacker, secure aggregation's union,
DP-SGD's epsilon, and refusals before any work."""

import math

import pytest
import torch

from deepleak.errors import DeepleakError
from deepleak.tasks.attack import run, validate

LABELS = ("model.width=8", "dataset.resolution=16", "save_images=false", "attack=none")
SMALL = (*LABELS[:3], "attack.max_evaluations=20")


def test_defence_none_gives_the_numbers_of_no_defence_group(compose, tmp_path):
    """defence=none and a config without the group (~defence) give identical results."""
    none = run(compose(*SMALL, "defence=none"), tmp_path / "none")
    absent = run(compose(*SMALL, "~defence"), tmp_path / "absent")
    for key in ("restored_labels", "psnr", "ssim", "gradient_distance"):
        assert none["per_trial"][0][key] == absent["per_trial"][0][key]
    assert none["defence"] == absent["defence"] == {"name": "none"}


def test_the_server_sees_the_public_parameters_and_metrics_say_which_attacker_ran(compose, tmp_path):
    adaptive = run(compose(*SMALL, "defence=noise", "defence.std=0.01"), tmp_path / "a")
    naive = run(compose(*SMALL, "defence=noise", "defence.std=0.01", "attack.adaptive=false"), tmp_path / "n")
    assert adaptive["defence"] == {"name": "noise", "std": 0.01, "distribution": "gaussian"}
    assert adaptive["threat_model"]["defence"] == adaptive["defence"]
    assert adaptive["adaptive"] is True and naive["adaptive"] is False
    assert adaptive["per_trial"][0]["defence_attack"]["modelled"] is True
    assert naive["per_trial"][0]["defence_attack"] == {"adaptive": False, "modelled": False, "adaptations": []}
    # The same private batch and the same noisy update: the labels restored from it agree.
    assert adaptive["per_trial"][0]["true_labels"] == naive["per_trial"][0]["true_labels"]


def test_noise_changes_the_shared_gradient_by_its_std(compose, tmp_path, monkeypatch):
    from deepleak.scenarios import FedSGD

    shared = []
    original = FedSGD.observe

    def spy(self, *args, **kwargs):
        observation = original(self, *args, **kwargs)
        shared.append(torch.cat([g.flatten() for g in observation.gradient]))
        return observation

    monkeypatch.setattr(FedSGD, "observe", spy)
    run(compose(*LABELS, "defence=none"), tmp_path / "a")
    run(compose(*LABELS, "defence=noise", "defence.std=0.5"), tmp_path / "b")
    difference = shared[1] - shared[0]
    assert abs(float(difference.std()) - 0.5) < 0.02 * 0.5 + 3 * 0.5 / math.sqrt(2 * len(difference))


def test_secagg_attacks_the_union_adaptively_and_one_client_naively(compose, tmp_path):
    adaptive = run(compose(*SMALL, "batch_size=2", "defence=secagg", "defence.clients=2", "labels=oracle"), tmp_path / "a")
    naive = run(compose(*SMALL, "batch_size=2", "defence=secagg", "defence.clients=2",
                        "attack.adaptive=false"), tmp_path / "n")  # restores labels for the one client it assumes
    trial = adaptive["per_trial"][0]
    assert len(trial["true_labels"]) == 4 and len(trial["restored_labels"]) == 4 and len(trial["psnr"]) == 4
    assert trial["label_accuracy"] == 1.0
    one = naive["per_trial"][0]
    assert len(one["restored_labels"]) == 2 and len(one["psnr"]) == 2
    assert one["scored_against"]["of"] == 4 and len(set(one["scored_against"]["originals"])) == 2
    assert one["label_accuracy"] <= 0.5  # at most K of the n x K union's labels


def test_dp_sgd_records_the_accountants_epsilon(compose, tmp_path):
    from opacus.accountants import RDPAccountant

    result = run(compose(*LABELS, "defence=dp_sgd", "defence.noise_multiplier=1.5"), tmp_path)
    accountant = RDPAccountant()
    accountant.step(noise_multiplier=1.5, sample_rate=1.0)
    assert result["privacy"]["epsilon"] == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-12)
    assert result["privacy"]["steps"] == 1 and result["privacy"]["sample_rate"] == 1.0


def test_fedavg_dp_sgd_accounts_every_local_step(compose, tmp_path):
    result = run(compose(*LABELS, "+scenario=fedavg", "labels=fedavg_interpolated", "batch_size=4",
                         "scenario.local_batch_size=2", "scenario.epochs=2", "defence=dp_sgd"), tmp_path)
    assert result["privacy"]["steps"] == 4 and result["privacy"]["sample_rate"] == 0.5


@pytest.mark.parametrize("overrides, message", [
    (("defence=secagg", "export_update=true"), "export_update"),
    (("+scenario=fedavg", "scenario.snapshot_every=1", "defence=noise"), "snapshot_every"),
])
def test_incompatible_settings_are_refused_before_any_work(compose, overrides, message):
    with pytest.raises(DeepleakError, match=message):
        validate(compose(*SMALL, *overrides))


def test_the_adaptive_attack_refuses_finite_differences(compose, tmp_path):
    with pytest.raises(DeepleakError, match="double_backward"):
        run(compose(*SMALL, "defence=prune", "attack/image_gradient=finite_difference"), tmp_path)
