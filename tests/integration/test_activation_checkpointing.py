"""``train.activation_checkpointing``: each block recomputes its activations in the backward pass; losses,
gradients and checkpoints are those of the run without it (one device here; DDP and FSDP in test_fsdp.py)."""

from __future__ import annotations

import torch

from midtrain.cli import main
from tests.integration.train_helpers import TINY_MODEL, losses, tiny_config, write_config


def test_the_gradients_are_those_without_checkpointing():
    from litgpt.config import Config
    from litgpt.model import GPT

    from midtrain.train.devices import checkpoint_blocks

    torch.manual_seed(0)
    plain = GPT(Config(**TINY_MODEL))
    checkpointed = GPT(Config(**TINY_MODEL))
    checkpointed.load_state_dict(plain.state_dict())
    checkpoint_blocks(checkpointed)
    assert sorted(checkpointed.state_dict()) == sorted(plain.state_dict())  # litgpt's keys, no wrapper prefix
    tokens = torch.randint(0, 4096, (2, 17))
    for model in (plain, checkpointed):
        logits = model(tokens[:, :-1])
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
    grads = {n.replace("_checkpoint_wrapped_module.", ""): p.grad for n, p in checkpointed.named_parameters()}
    for name, parameter in plain.named_parameters():
        assert torch.equal(parameter.grad, grads[name]), name


def test_a_run_with_checkpointing_trains_the_run_without_and_resumes_without_it(train_root, tiny_trunk, tmp_path,
                                                                                 capsys):
    """8 of the trunk's 12 steps with checkpointing, the rest without: the trunk's losses and final weights."""
    out = tmp_path / "ac"
    config = tiny_config(train_root, out, activation_checkpointing=True, max_additional_steps=8)
    assert main(["pretrain", "--config", str(write_config(tmp_path / "ac.yaml", config))]) == 0
    assert "activation checkpointing per block" in capsys.readouterr().out
    assert sorted(losses(out)) == list(range(1, 9))
    config = tiny_config(train_root, out)  # the same run, resumed without checkpointing
    assert main(["pretrain", "--config", str(write_config(tmp_path / "ac.yaml", config))]) == 0
    assert losses(out) == losses(tiny_trunk)
    saved = torch.load(out / "final" / "lit_model.pth", map_location="cpu", weights_only=True)["model"]
    trunk = torch.load(tiny_trunk / "final" / "lit_model.pth", map_location="cpu", weights_only=True)["model"]
    assert saved.keys() == trunk.keys()
    for name in saved:
        assert torch.equal(saved[name], trunk[name]), name


def test_a_model_without_blocks_is_refused(train_root, tmp_path, capsys):
    config = tiny_config(train_root, tmp_path / "out", activation_checkpointing=True)
    config["model_config"] = {**TINY_MODEL, "n_layer": 0}
    assert main(["pretrain", "--config", str(write_config(tmp_path / "c.yaml", config)), "--dry_run=true"]) == 2
    assert "--train.activation_checkpointing=true recomputes transformer blocks" in capsys.readouterr().err
