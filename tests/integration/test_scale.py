"""Production shapes on CPU: loader workers in training, a world-size change on resume (requeued onto fewer or more
devices), exact and with nothing re-read or skipped."""

from __future__ import annotations

import pytest

from midtrain.cli import main
from tests.integration.train_helpers import losses, read_json, run_cli, tiny_config, write_config

MIX = "main:0.6,code:0.25,math:0.15"
STEPS = 12


@pytest.fixture(scope="module")
def reference(train_root, tmp_path_factory):
    """An uninterrupted one-process run over three domains, no loader workers."""
    out = tmp_path_factory.mktemp("scale") / "reference"
    assert (
        main(
            [
                "pretrain",
                "--config",
                str(write_config(out.parent / "r.yaml", tiny_config(train_root, out, mix=MIX, max_steps=STEPS))),
            ]
        )
        == 0
    )
    return out


def ledger_samples(out):
    return {shard: v["samples"] for shard, v in read_json(out / "final" / "ledger.json")["shards"].items()}


@pytest.mark.slow
def test_loader_workers_train_and_resume_exactly(train_root, reference, tmp_path):
    config = tiny_config(train_root, tmp_path / "workers", mix=MIX, max_steps=STEPS, max_additional_steps=5)
    config["data"]["init_args"]["num_workers"] = 2
    path = write_config(tmp_path / "w.yaml", config)
    for _ in range(3):  # steps 1-5, 6-10, 11-12, each a new process group of workers after a stop
        assert main(["pretrain", "--config", str(path)]) == 0
    assert losses(tmp_path / "workers") == pytest.approx(losses(reference), rel=1e-6)
    assert ledger_samples(tmp_path / "workers") == ledger_samples(reference)


@pytest.mark.slow
@pytest.mark.parametrize("before, after", [(2, 1), (1, 2)])
def test_a_world_size_change_on_resume_keeps_the_global_stream(train_root, reference, tmp_path, before, after):
    config = tiny_config(train_root, tmp_path / "moved", mix=MIX, max_steps=STEPS, max_additional_steps=6)
    for devices in (before, after):
        config["devices"] = devices
        result = run_cli(write_config(tmp_path / "m.yaml", config))
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = tmp_path / "moved"
    assert [i["world_size"] for i in read_json(out / "run.json")["invocations"]] == [before, after]
    ledger = read_json(out / "final" / "ledger.json")
    samples = ledger_samples(out)
    assert sum(samples.values()) == STEPS * 4  # every global batch whole
    # the change of world size starts a new phase at the cursors the first left: each shard's samples are the sum of
    # the two phases', so every position was read once (each rank's schedule keeps round(w n) ± 1, hence ± ranks
    # globally, against the one-process reference)
    phases = ledger["stretches"]
    assert len(phases) == 2 and [p["index"] for p in phases] == [0, 1]
    for shard, count in samples.items():
        assert sum(p["tokens"].get(shard, 0) for p in phases) == count * 16
        assert abs(count - ledger_samples(reference)[shard]) <= max(before, after)
    assert len(losses(out)) == STEPS


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_on_localhost_train_resume_and_validate_as_two_local_ranks(train_root, tmp_path):
    """Two "nodes" × one process, launched as a multi-node allocation launches them (MASTER_ADDR, NODE_RANK, …):
    global ranks 0 and 1 read the same disjoint exact per-rank streams as two ranks on one node (the same losses,
    ledger and all-reduced validation), and a checkpoint saved by the pair is resumed by the pair."""
    import os
    import subprocess
    import sys

    from tests.integration.train_helpers import REPO

    config = tiny_config(train_root, tmp_path / "nodes", mix=MIX, max_steps=STEPS, max_additional_steps=6)
    config.update(num_nodes=2, devices=1)
    path = write_config(tmp_path / "n.yaml", config)
    for _ in range(2):  # steps 1-6 on the two nodes, then resumed by both: steps 7-12
        port = free_port()
        processes = []
        for node in (0, 1):
            env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NODE_RANK": str(node),
                   "LOCAL_RANK": "0", "WORLD_SIZE": "2", "PYTHONPATH": str(REPO), "LITDATA_DISABLE_VERSION_CHECK": "1"}
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "midtrain", "pretrain", "--config", str(path)],
                    env=env,
                    cwd=REPO,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        outputs = [p.communicate(timeout=300) for p in processes]
        for process, (out, err) in zip(processes, outputs, strict=True):
            assert process.returncode == 0, out[-2000:] + err[-3000:]
        assert "GLOBAL_RANK: 0" in outputs[0][1] and "GLOBAL_RANK: 1" in outputs[1][1]
    local = tiny_config(train_root, tmp_path / "local", mix=MIX, max_steps=STEPS)
    local.update(num_nodes=1, devices=2)
    result = run_cli(write_config(tmp_path / "l.yaml", local))
    assert result.returncode == 0, result.stderr[-3000:]
    reference = tmp_path / "local"
    out = tmp_path / "nodes"
    assert [i["world_size"] for i in read_json(out / "run.json")["invocations"]] == [2, 2]
    assert losses(out) == pytest.approx(losses(reference), rel=1e-4)
    from tests.integration.train_helpers import metric

    assert metric(out, "val/overall/loss") == pytest.approx(metric(reference, "val/overall/loss"), rel=1e-4)
    assert ledger_samples(out) == ledger_samples(reference)
