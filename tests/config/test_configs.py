"""Every config option composes, passes the schema and builds; every preset composes at both scales."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from deepleak.config import check_types, config_dir, make
from deepleak.models import build_model
from deepleak.tasks.attack import validate

CONF = Path(config_dir())
GROUPS = ["dataset", "model", "labels", "attack", "distribution", "scenario"]
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))]
EXPERIMENTS = sorted(path.stem for path in (CONF / "experiment").glob("*.yaml"))


def test_every_group_has_options():
    assert {group for group, _ in OPTIONS} == set(GROUPS)
    assert len(EXPERIMENTS) >= 4


@pytest.mark.parametrize("group, option", OPTIONS)
def test_option_composes_and_builds(compose, group, option):
    override = f"+scenario={option}" if group == "scenario" else f"{group}={option}"
    cfg = compose(override)
    check_types(cfg)
    validate(cfg)
    node = OmegaConf.to_container(cfg[group], resolve=True)
    node.pop("wrong", None)
    if group == "dataset":
        if option != "sample":
            pytest.skip("needs data on disk (tests/test_data.py builds tiny trees)")
        assert make(node).num_classes == cfg.dataset.num_classes
    elif group == "model":
        model = build_model(node, num_classes=10, image_shape=(3, 32, 32), seed=0)
        assert sum(p.numel() for p in model.parameters()) > 0
    else:
        assert make(node) is not None


@pytest.mark.parametrize("scale", ["cpu", "paper"])
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_presets_compose_at_both_scales(compose, experiment, scale):
    cfg = compose(f"+experiment={experiment}", f"scale={scale}")
    check_types(cfg)
    validate(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["trials"] >= 1


def test_scale_picks_the_preset_size(compose):
    cpu = compose("+experiment=paper_label_duplicates")
    paper = compose("+experiment=paper_label_duplicates", "scale=paper")
    assert cpu.trials < paper.trials


def test_precheck_lets_the_command_line_override_a_presets_sweep():
    """Hydra's sweeper takes a command-line key over the preset's sweeper param of the same
    key; the precheck must check that combination, not the preset's other values."""
    import pytest

    from deepleak.config import precheck
    from deepleak.errors import DeepleakError

    # attack.priors.bn exists only in gradinversion: fine once attack=gradinversion replaces
    # the preset's attack sweep ...
    precheck(["-m", "+experiment=paper_recipes_resnet", "attack=gradinversion", "attack.priors.bn.weight=0,0.01"], validate)
    # ... and still an unknown key for the preset's other recipes.
    with pytest.raises(DeepleakError, match="attack.priors.bn"):
        precheck(["-m", "+experiment=paper_recipes_resnet", "attack.priors.bn.weight=0"], validate)
