"""Config layering: defaults < preset < user file < overrides; types coerced; unknown keys named."""

from dataclasses import dataclass

import pytest

from ebmlab.config import (
    RunConfig,
    TrainConfig,
    build_dataclass,
    find_preset,
    merge,
    parse_overrides,
)
from ebmlab.errors import EbmlabError


@dataclass(frozen=True)
class Example:
    lr: float = 1e-3
    steps: int = 10
    clip: float | None = 0.5
    betas: tuple[float, float] = (0.0, 0.999)
    flag: bool = False


def test_overrides_parse_to_nested_typed_values():
    tree = parse_overrides(["--method.lr=1e-4", "train.steps=20", "method.net.width=64"])
    assert tree == {"method": {"lr": 1e-4, "net": {"width": 64}}, "train": {"steps": 20}}


def test_coercion_from_strings_and_lists():
    cfg = build_dataclass(
        Example,
        {"lr": "2e-4", "steps": "7", "clip": "none", "betas": "[0.5, 0.9]", "flag": "true"},
        "method",
    )
    assert cfg == Example(lr=2e-4, steps=7, clip=None, betas=(0.5, 0.9), flag=True)


def test_unknown_key_is_named_with_the_valid_ones():
    with pytest.raises(EbmlabError, match=r"unknown method option\(s\) \['lrr'\]; valid: .*lr"):
        build_dataclass(Example, {"lrr": 1.0}, "method")


def test_bad_type_is_one_clear_error():
    with pytest.raises(EbmlabError, match="method.steps must be int"):
        build_dataclass(Example, {"steps": "many"}, "method")
    with pytest.raises(EbmlabError, match="must be an integer"):
        build_dataclass(Example, {"steps": 2.5}, "method")


def test_merge_is_recursive_and_later_wins():
    base = {"method": {"name": "cd", "lr": 1.0, "net": {"kind": "mlp", "width": 8}}}
    merged = merge(base, {"method": {"lr": 2.0, "net": {"width": 16}}})
    assert merged == {"method": {"name": "cd", "lr": 2.0, "net": {"kind": "mlp", "width": 16}}}
    assert base["method"]["lr"] == 1.0


def test_run_config_round_trip():
    cfg = RunConfig("cd", {"lr": 0.1}, train=TrainConfig(steps=5))
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


def test_run_config_rejects_unknown_sections_and_missing_method():
    with pytest.raises(EbmlabError, match="unknown config section"):
        RunConfig.from_dict({"method": {"name": "cd"}, "optim": {}})
    with pytest.raises(EbmlabError, match="names no method"):
        RunConfig.from_dict({"train": {"steps": 3}})


def test_presets_fall_back_from_dataset_to_kind():
    assert find_preset("cd", "8gaussians", "toy2d").name == "cd_toy2d.yaml"
    assert find_preset("no-such-method", "8gaussians", "toy2d") is None


def test_every_method_has_a_preset_for_tables():
    from ebmlab.methods import METHODS

    assert all(find_preset(m, "points.npy", "tabular").stem == f"{m}_tabular" for m in METHODS)


def test_2d_points_without_a_2d_preset_take_the_tables_preset():
    assert find_preset("dualmcmc", "moons", "toy2d").name == "dualmcmc_tabular.yaml"
    assert find_preset("shortrun", "moons", "toy2d").name == "shortrun_toy2d.yaml"
    assert find_preset("cd", "faces.npz", "image").name == "cd_image.yaml"


def test_only_2d_points_fall_back_to_the_tables_preset(tmp_path, monkeypatch):
    (tmp_path / "m_tabular.yaml").write_text("method: {}\n")
    monkeypatch.setattr("ebmlab.config.PRESET_DIR", tmp_path)
    assert find_preset("m", "moons", "toy2d") == tmp_path / "m_tabular.yaml"
    assert find_preset("m", "digits", "image") is None


def test_a_dataset_file_named_after_a_preset_picks_it():
    assert find_preset("icd", "cifar10.npz", "image").name == "icd_cifar10.yaml"
    assert find_preset("icd", "cifar10", "image").name == "icd_cifar10.yaml"
    assert find_preset("icd", "faces.npz", "image").name == "icd_image.yaml"


def test_config_may_name_a_packaged_preset(tmp_path):
    from ebmlab.config import read_user_config

    assert read_user_config("icd_cifar10")["method"]["langevin_steps"] == 40
    with pytest.raises(EbmlabError, match="neither a file nor a preset"):
        read_user_config("no_such_preset")
