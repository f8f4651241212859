"""The mixture controller's pure logic: its settings and their refusals, the update rule (checked against values
computed by hand), the passes cap, the decisions' timeline, resume and reset, and the stream pausing at a decision
not yet taken."""

from __future__ import annotations

import math

import pytest

from midtrain.data.discovery import Shard
from midtrain.data.mix_controller import (
    ControllerSettings,
    MixController,
    check_run,
    mixture_text,
    parse_settings,
    passes_capacity,
    update,
)
from midtrain.data.stream_state import StreamTracker
from midtrain.errors import ConfigError

PRIOR = {"main": 0.8, "code": 0.1, "math": 0.1}


def settings(**raw) -> ControllerSettings:
    return parse_settings(raw, PRIOR)


def test_defaults_and_yaml_strings_are_read():
    s = settings(eta="1e-1", min_weight="0.02")  # YAML reads 1e-1 as a string, as in the paper's configs
    assert (s.signal, s.every_steps, s.eta, s.min_weight, s.max_weight, s.smoothing) == (
        "val_loss", 1000, 0.1, 0.02, 0.95, 0.0)
    assert s.record()["domains"] is None and "reset" not in s.record()


@pytest.mark.parametrize("raw, message", [
    ({"eta_": 1}, "unknown key 'eta_'. Did you mean 'eta'?"),
    ({"signal": "loss"}, "signal='loss' is not one of val_loss, train_loss"),
    ({"every_steps": 0}, "every_steps=0 must be a positive number of optimizer steps"),
    ({"every_steps": 2.5}, "every_steps=2.5 must be a positive number"),
    ({"eta": 0}, "eta=0 must be a positive step size"),
    ({"smoothing": 1.5}, "smoothing=1.5 must be between 0 and 1"),
    ({"min_weight": 0}, "min_weight=0 must be a share above 0"),
    ({"min_weight": 0.5}, "they need min_weight <= 0.3333 <= max_weight"),
    ({"max_weight": 0.2}, "they need min_weight <= 0.3333 <= max_weight"),
    ({"domains": ["code", "science"]}, "domains names 'science', which has no weight in the prior"),
    ({"domains": ["code"]}, "would move 1 domain(s) (code)"),
    ({"reference": {"main": 1.0, "code": 2.0}}, "reference gives no loss for 'math'"),
    ({"reference": "begin"}, "reference='begin' must be none, start"),
    ({"signal": "train_loss", "reference": "start"}, "reference=start scores held-out losses"),
    ({"reset": "yes"}, "reset='yes' must be true or false"),
])
def test_bad_settings_are_refused_naming_the_key(raw, message):
    with pytest.raises(ConfigError, match="--data.mix_controller") as error:
        settings(**raw)
    assert message in str(error.value)


def test_the_update_rule_by_hand():
    s = settings(eta=1.0, min_weight=0.001, max_weight=0.999)
    current = {"main": 0.5, "code": 0.25, "math": 0.25}
    signal = {"main": 2.0, "code": 4.0, "math": 3.0}
    after, score, capped, clamped = update(s, PRIOR, current, signal, None)
    assert score == {"main": 0.5, "code": 1.0, "math": 0.75}
    logits = {"main": math.log(0.5) + 0.5, "code": math.log(0.25) + 1.0, "math": math.log(0.25) + 0.75}
    total = sum(math.exp(v) for v in logits.values())
    expected = {d: round(math.exp(v) / total, 4) for d, v in logits.items()}
    assert after == expected and sum(after.values()) == pytest.approx(1.0, abs=1e-12)
    assert (capped, clamped) == ((), ())
    # a reference subtracts before the clip at 0; all scores 0 leave the weights as they are
    after, score, _, _ = update(s, PRIOR, current, signal, {"main": 5.0, "code": 5.0, "math": 5.0})
    assert score == {"main": 0.0, "code": 0.0, "math": 0.0} and after == current


def test_smoothing_bounds_and_unmoved_domains():
    s = settings(eta=5.0, smoothing=1.0, min_weight=0.01, max_weight=0.95)
    current = {"main": 0.5, "code": 0.25, "math": 0.25}
    after, *_ = update(s, PRIOR, current, {"main": 1.0, "code": 9.0, "math": 1.0}, None)
    assert after == PRIOR  # full smoothing: back to the prior, whatever the scores
    s = settings(eta=20.0, min_weight=0.05, max_weight=0.6)
    after, _, _, clamped = update(s, PRIOR, current, {"main": 1.0, "code": 9.0, "math": 1.0}, None)
    assert after["code"] == 0.6 and min(after.values()) >= 0.05 and sum(after.values()) == pytest.approx(1.0)
    assert "code" in clamped
    # domains: only code and math move; main keeps its share to the last bit
    s = settings(domains=["code", "math"], eta=1.0)
    after, score, _, _ = update(s, PRIOR, PRIOR, {"code": 2.0, "math": 1.0}, None)
    assert after["main"] == 0.8 and after["code"] > 0.1 > after["math"] and set(score) == {"code", "math"}
    assert after["code"] + after["math"] == pytest.approx(0.2, abs=1e-12)


def test_a_domain_without_samples_has_no_signal_and_keeps_its_weight():
    """train_loss: a 3 % domain that drew no sample in an interval used to be scored as loss 0 and pushed to
    min_weight; no samples is no evidence: its weight stays, the others share the rest by the rule."""
    prior = {"main": 0.87, "code": 0.1, "math": 0.03}
    s = parse_settings({"eta": 1.0, "min_weight": 0.001, "max_weight": 0.999, "signal": "train_loss"}, prior)
    after, score, capped, clamped = update(s, prior, prior, {"main": 2.0, "code": 4.0, "math": None}, None)
    assert after["math"] == 0.03 and score["math"] is None and (capped, clamped) == ((), ())
    logits = {"main": math.log(0.87) + 0.5, "code": math.log(0.1) + 1.0}
    total = sum(math.exp(v) for v in logits.values())
    assert after["code"] == round(0.97 * math.exp(logits["code"]) / total, 4)
    assert sum(after.values()) == pytest.approx(1.0, abs=1e-9) and score == {"main": 0.5, "code": 1.0, "math": None}
    # nothing heard from anyone: nothing moves
    after, score, _, _ = update(s, prior, prior, {"main": None, "code": None, "math": None}, None)
    assert after == prior and set(score.values()) == {None}
    # the passes cap still holds a silent domain back, and says so
    after, _, capped, _ = update(s, prior, prior, {"main": 2.0, "code": 4.0, "math": None}, None, {"math": 0.01})
    assert after["math"] == 0.01 and capped == ("math",)
    controller = MixController(s, prior, 0, resolve=lambda text: {})
    decision = controller.decide(1000, {"main": 2.0, "code": 4.0, "math": None})
    assert decision.signal["math"] is None and decision.after["math"] == 0.03
    from midtrain.train.mix_control import render_decision

    row = next(line for line in render_decision(decision, "train_loss").splitlines() if line.startswith("math"))
    assert "no samples" in row and "0.0000" not in row.split("no samples")[0]


def test_the_passes_cap_holds_a_domain_back_and_says_so():
    # code has one shard of 100 samples, 149 read; max_passes 2 leaves 51 (one held back: 50) of the 1,000 to come
    capacity = passes_capacity({"code": [(1.0, 149, 100)], "main": [(0.5, 0, 10_000), (0.5, 0, 10_000)]}, 1000, 2.0)
    assert capacity["code"] == pytest.approx(0.05) and capacity["main"] == pytest.approx(39.998)
    s = settings(eta=3.0, domains=["main", "code"])
    after, _, capped, _ = update(s, PRIOR, PRIOR, {"main": 1.0, "code": 5.0}, None, capacity)
    assert after["code"] == 0.05 and capped == ("code",) and after["main"] == pytest.approx(0.85)


def test_decisions_make_the_timeline_and_replay():
    resolve = lambda text: dict(item.split(":") for item in text.split(","))  # noqa: E731 (text -> fake weights)
    c = MixController(settings(every_steps=4), dict(PRIOR), 0, resolve)
    assert c.next_due() == 4 and [s.end_step for s in c.segments()] == [4]
    with pytest.raises(RuntimeError, match="due at step 4"):
        c.decide(3, {"main": 1.0, "code": 2.0, "math": 1.0})
    first = c.decide(4, {"main": 1.0, "code": 2.0, "math": 1.0})
    assert first.before == PRIOR and first.after["code"] > 0.1 and c.next_due() == 8
    segments = c.segments()
    assert [(s.start_step, s.end_step, s.label()) for s in segments] == [(0, 4, "prior"), (4, 8, "decision 1")]
    assert segments[1].weights == resolve(mixture_text(first.after)) and segments[1].detail["step"] == 4
    assert MixController.replay_phases(c.state_dict()) == [(0, mixture_text(PRIOR)), (4, mixture_text(first.after))]
    # a branch at step 10 with every 4 decides first at 12
    assert MixController(settings(every_steps=4), dict(PRIOR), 10, resolve).next_due() == 12


def test_resume_continues_refuses_a_changed_controller_and_reset_keeps_the_decisions():
    resolve = lambda text: {}  # noqa: E731
    run = MixController(settings(every_steps=4), dict(PRIOR), 0, resolve)
    run.decide(4, {"main": 1.0, "code": 2.0, "math": 1.0})
    saved = run.state_dict()
    resumed = MixController(settings(every_steps=4), dict(PRIOR), 6, resolve, resuming=True)
    resumed.continue_from(saved, 6)
    assert resumed.state_dict() == saved
    changed = MixController(settings(every_steps=4, eta=0.7), dict(PRIOR), 6, resolve, resuming=True)
    with pytest.raises(ConfigError, match=r"--data.mix_controller.eta=0.7 \(the run's: 0.5\).*reset=true"):
        changed.continue_from(saved, 6)
    reset = MixController(settings(every_steps=4, eta=0.7, reset=True), dict(PRIOR), 6, resolve, resuming=True)
    reset.continue_from(saved, 6)
    assert reset.resets == [{"step": 6, "changed": ["eta"]}] and len(reset.decisions) == 1
    assert reset.weights == saved["decisions"][0]["after"] and reset.next_due() == 8
    assert reset.segments()[0].label() == "controller reset at step 6"
    again = MixController(settings(every_steps=4, eta=0.7, reset=True), dict(PRIOR), 7, resolve, resuming=True)
    again.continue_from(reset.state_dict(), 7)  # nothing changed since the reset: a plain resume
    assert again.resets == reset.resets and again.start_step == 6
    with pytest.raises(ConfigError, match="read its mixture without a controller"):
        MixController(settings(), dict(PRIOR), 6, resolve, resuming=True).continue_from(None, 6)


def test_run_checks():
    s = settings(every_steps=1000)
    with pytest.raises(ConfigError, match="every_steps=1,000 is not a multiple of --eval.interval=300"):
        check_run(s, ["main", "code", "math"], 300, ["main", "code", "math"], 10_000, 0)
    with pytest.raises(ConfigError, match="math lack a validation set"):
        check_run(s, ["main", "code", "math"], 500, ["main", "code"], 10_000, 0)
    train_loss = settings(signal="train_loss", every_steps=1000)
    assert check_run(train_loss, ["main", "code", "math"], 300, [], 10_000, 0) == []
    assert "never moves the mixture" in check_run(s, ["main", "code", "math"], 500, ["main", "code", "math"], 900, 0)[0]


def test_the_stream_pauses_at_a_decision_not_yet_taken():
    shards = [Shard(i, d, None, ("chunk-0-0.bin",), (1700,), (1,), "no_header_tensor:16", "f0")
              for i, d in (("main/1", "main"), ("c1", "code"))]
    weights = {"main/1": 0.5, "c1": 0.5}
    c = MixController(parse_settings({"every_steps": 2}, {"main": 0.5, "code": 0.5}), {"main": 0.5, "code": 0.5}, 0,
                      lambda text: dict(weights))
    tracker = StreamTracker(shards, [0.5, 0.5], 17, 0, "exact", timeline=c, start_step=0, samples_per_step=4)
    tracker.advance(8)  # two steps of four samples: up to the decision at step 2
    assert tracker.clock.paused()
    with pytest.raises(RuntimeError, match="decision is not taken"):
        tracker.advance(1)
    weights.update({"main/1": 0.25, "c1": 0.75})
    c.decide(2, {"main": 1.0, "code": 2.0})
    tracker.extend()
    assert not tracker.clock.paused() and tracker.stretch_index == 1
    tracker.advance(8)
    assert [tracker.cursors.counts[i] for i in range(2)] == [2, 6] and tracker.stretches[1]["segment"] == "decision 1"


def test_the_loss_and_each_samples_loss_come_from_one_chunked_per_token_computation():
    """The training loss is litgpt's chunked cross-entropy to the bit (so a run reading per-sample losses trains as
    one that does not), and each sample's mean is the unchunked value's."""
    import torch
    import torch.nn.functional as F
    from litgpt.utils import chunked_cross_entropy

    from midtrain.train.losses import token_losses

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 400, 50, generator=generator)
    targets = torch.randint(0, 50, (3, 400), generator=generator)
    loss, per_sample = token_losses(logits, targets)
    assert torch.equal(loss, chunked_cross_entropy(logits, targets))
    whole = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(3, 400).mean(1)
    assert torch.allclose(per_sample, whole, atol=1e-6)
    half = logits.to(torch.bfloat16)
    assert torch.equal(token_losses(half, targets)[0], chunked_cross_entropy(half, targets))
