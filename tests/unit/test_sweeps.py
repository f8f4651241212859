"""Sweep spec expansion: grid points, names, the branch_step and share axes, dotted keys, errors."""

from __future__ import annotations

import pytest
import yaml

from midtrain.errors import ConfigError
from midtrain.sweeps import expand, point_name, set_dotted

BASE = {
    "out_dir": "x",
    "data": {"class_path": "midtrain.data.ShardedMixedDataset",
             "init_args": {"data_path": "${MIDTRAIN_DATA}", "mix_config_path": "m.json"}},
    "train": {"max_lr": 3e-4},
}


@pytest.fixture
def spec_dir(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    return tmp_path


def test_grid_in_axis_order_with_names_paths_and_placeholders_kept(spec_dir):
    spec = {
        "base": "base.yaml",
        "out_root": "${MIDTRAIN_RUNS}/timing",
        "trunk": "${MIDTRAIN_RUNS}/trunk",
        "specialised_domain": "code",
        "axes": {"branch_step": [20000, 40000], "share": [0.1, 0.3], "train.max_lr": [1e-3]},
    }
    points = expand(spec, spec_dir)
    assert [p.name for p in points] == [
        "branch_step20000_share0.1_max_lr0.001", "branch_step20000_share0.3_max_lr0.001",
        "branch_step40000_share0.1_max_lr0.001", "branch_step40000_share0.3_max_lr0.001"]
    config = points[1].config
    assert config["branch_from"] == "${MIDTRAIN_RUNS}/trunk/step-00020000"
    assert config["data"]["init_args"] == {"data_path": "${MIDTRAIN_DATA}", "mix_weights_str": "main:0.7,code:0.3"}
    assert config["train"]["max_lr"] == 1e-3 and config["out_dir"] == "${MIDTRAIN_RUNS}/timing/" + points[1].name
    assert BASE["train"]["max_lr"] == 3e-4  # the base is not modified


def test_dotted_data_keys_go_to_init_args():
    config = {"data": {"class_path": "x", "init_args": {}}}
    set_dotted(config, "data.seed", 3)
    set_dotted(config, "model_config.n_layer", 2)
    assert config == {"data": {"class_path": "x", "init_args": {"seed": 3}}, "model_config": {"n_layer": 2}}
    assert point_name("p", {"model_name": "pythia-70m", "seed": 1}) == "p_model_namepythia-70m_seed1"


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"base": "base.yaml", "out_root": "r", "axes": {"branch_step": [1]}}, r"branch_step axis needs 'trunk'"),
        ({"base": "base.yaml", "out_root": "r", "axes": {"share": [0.2]}}, r"share axis needs 'specialised_domain'"),
        ({"base": "base.yaml", "out_root": "r", "specialised_domain": "code", "axes": {"share": [1.5]}},
         r"between 0 and 1"),
        ({"base": "base.yaml", "axes": {"seed": []}}, r"'axes' must map each key to a non-empty list"),
        ({"base": "base.yaml", "out_root": "r", "axis": {"seed": [1]}}, r"unknown sweep spec keys \['axis'\]"),
        ({"base": "nope.yaml", "out_root": "r", "axes": {"seed": [1]}}, r"base config='.*nope.yaml' cannot be read"),
    ],
)
def test_spec_errors(spec_dir, spec, match):
    with pytest.raises(ConfigError, match=match):
        expand(spec, spec_dir)


def test_every_point_gets_its_own_out_dir_or_the_sweep_is_refused(spec_dir):
    with pytest.raises(ConfigError, match="no 'out_root', so every point would train in the base config's out_dir"):
        expand({"base": "base.yaml", "axes": {"seed": [1, 2]}}, spec_dir)
    with pytest.raises(ConfigError, match="sets both 'out_root' and an 'out_dir' axis"):
        expand({"base": "base.yaml", "out_root": "r", "axes": {"out_dir": ["a", "b"]}}, spec_dir)
    with pytest.raises(ConfigError, match="sweep points share the out_dir 'runs/a'"):
        expand({"base": "base.yaml", "axes": {"out_dir": ["runs/a", "runs/./a"]}}, spec_dir)
    points = expand({"base": "base.yaml", "axes": {"out_dir": ["runs/a", "runs/b"]}}, spec_dir)
    assert [p.config["out_dir"] for p in points] == ["runs/a", "runs/b"]


def test_point_names_are_short_safe_and_distinct_whatever_the_values(spec_dir):
    weights = ",".join(f"c{i}:0.025" for i in range(1, 40))
    spec = {"base": "base.yaml", "out_root": "runs",
            "axes": {"data.literal_weights_str": [weights, weights.replace("0.025", "0.0250")],
                     "log.run": ["line\nbreak", "slash/and space"]}}
    points = expand(spec, spec_dir)
    names = [p.name for p in points]
    assert len(set(names)) == 4 and all(len(n) <= 64 for n in names)
    assert all(set(n) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._=+-") for n in names)
    assert names[0].startswith("literal_weights_strc1-0.025-c2-0.025")
    assert points[1].config["log"]["run"] == "slash/and space"  # the value itself stays in the config
    assert point_name("", {"branch_step": 20000, "share": 0.2}) == "branch_step20000_share0.2"  # readable ones stay


def test_an_axis_that_is_no_key_of_pretrain_is_refused_with_its_group_before_anything_is_written(tmp_path, capsys):
    from midtrain.cli import main

    (tmp_path / "base.yaml").write_text("out_dir: x\ntrain: {max_steps: 4}\n")
    for axis, message in (("train.max_lrr", "sweep axis 'train.max_lrr' is not a key of 'midtrain pretrain' (train). "
                                            "Did you mean 'train.max_lr'?"),
                          ("seeed", "sweep axis 'seeed' is not a key of 'midtrain pretrain'. Did you mean 'seed'?"),
                          ("data.mix_weigths_str", "Did you mean 'data.mix_weights_str'?")):
        (tmp_path / "spec.yaml").write_text(f"base: base.yaml\nout_root: runs\naxes:\n  {axis}: [1, 2]\n")
        assert main(["sweep", "--spec", str(tmp_path / "spec.yaml"), "--out_dir", str(tmp_path / "sweep")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "sweep").exists()
    (tmp_path / "spec.yaml").write_text("base: base.yaml\nout_root: runs\naxes:\n  data.init_args.seed: [1, 2]\n"
                                        "  optimizer.init_args.lr: [0.1, 0.2]\n")
    assert main(["sweep", "--spec", str(tmp_path / "spec.yaml"), "--out_dir", str(tmp_path / "sweep"),
                 "--validate=false"]) == 0
