"""The GRPO-family losses against loop-by-loop references: values, gradients, accumulation, validation."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from stratagem.rl.losses import (
    LOSS_TYPES,
    BatchTotals,
    LossSettings,
    LossSettingWarning,
    group_advantages,
    policy_loss,
)

DTYPE = torch.float64
LEVELS = ("token", "sequence")


def make_batch(lengths: list[int], T: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random log-probs for sequences of the given lengths; old_logps far enough off that clipping triggers."""
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    logps = -3 * torch.rand(b, T, generator=g, dtype=DTYPE) - 0.01
    offsets = 0.6 * torch.randn(b, 1, generator=g, dtype=DTYPE)  # some whole sequences drift: GSPO clips too
    old_logps = logps - offsets - 0.4 * torch.randn(b, T, generator=g, dtype=DTYPE)
    ref_logps = logps + 0.3 * torch.randn(b, T, generator=g, dtype=DTYPE)
    advantages = torch.randn(b, generator=g, dtype=DTYPE)
    mask = torch.arange(T).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    return {"logps": logps, "old_logps": old_logps, "ref_logps": ref_logps, "advantages": advantages, "mask": mask}


def reference_loss(logps, old_logps, ref_logps, advantages, mask, s: LossSettings, totals: BatchTotals):
    """The loss one token at a time, in plain Python; returns (loss, clipped token count, delta-capped count)."""
    eps_high = s.epsilon if s.epsilon_high is None else s.epsilon_high
    b, T = logps.shape
    sequence_losses, counts, clipped, capped = [], [], 0, 0
    for i in range(b):
        active = [t for t in range(T) if mask[i, t]]
        sequence_log_ratio = sum(logps[i, t] - old_logps[i, t] for t in active) / max(len(active), 1)
        A = advantages[i]
        token_losses = []
        for t in active:
            token_log_ratio = logps[i, t] - old_logps[i, t]
            log_ratio = sequence_log_ratio if s.importance_sampling_level == "sequence" else token_log_ratio
            ratio = torch.exp(log_ratio)
            if s.loss_type == "cispo":
                weight = min(ratio.item(), eps_high)  # a plain float: no gradient through it
                loss = -weight * A * logps[i, t]
                clipped += ratio.item() > eps_high
            elif s.loss_type == "sapo":
                tau = s.sapo_temperature_pos if A > 0 else s.sapo_temperature_neg
                loss = -torch.sigmoid(tau * (ratio - 1)) * 4 / tau * A
            elif s.loss_type == "vespo":  # the whole sequence's ratio, clamped, as a plain float
                log_w = sum(min(max((logps[i, u] - old_logps[i, u]).item(), -20), 20) for u in active)
                log_w = min(max(log_w, math.log(1e-8)), 20.0)
                k, lam = (s.vespo_k_pos, s.vespo_lambda_pos) if A >= 0 else (s.vespo_k_neg, s.vespo_lambda_neg)
                loss = -math.exp(lam + k * log_w - lam * math.exp(log_w)) * A * logps[i, t]
            else:
                clipped_ratio = min(max(ratio, 1 - s.epsilon), 1 + eps_high)
                unclipped_ratio = ratio if s.delta is None else min(ratio, s.delta)
                loss = -min(unclipped_ratio * A, clipped_ratio * A)
                a, r = A.item(), ratio.item()
                clipped += (r < 1 - s.epsilon and a < 0) or (r > 1 + eps_high and a > 0)
                capped += s.delta is not None and r > s.delta and a < 0
            if s.beta > 0:
                d = ref_logps[i, t] - logps[i, t]
                loss = loss + s.beta * (torch.exp(d) - d - 1)
            token_losses.append(loss)
        sequence_losses.append(sum(token_losses))
        counts.append(len(active))
    total = sum(sequence_losses)
    if s.loss_type in ("grpo", "sapo"):
        loss = sum(x / max(n, 1) for x, n in zip(sequence_losses, counts, strict=True)) / totals.num_sequences
    elif s.loss_type == "bnpo":
        loss = total / max(sum(counts), 1) / totals.num_micro_batches
    elif s.loss_type == "dr_grpo":
        loss = total / (totals.num_sequences * s.max_completion_length)
    elif s.loss_type == "luspo":
        loss = total / totals.num_sequences
    else:
        loss = total / totals.num_tokens
    return loss, clipped, capped


def loss_and_grad(fn, batch, settings, totals):
    logps = batch["logps"].clone().requires_grad_(True)
    inputs = [batch[name] for name in ("old_logps", "ref_logps", "advantages", "mask")]
    loss, *rest = fn(logps, *inputs, settings, totals)
    loss.backward()
    return loss.detach(), logps.grad, rest


CLIPPED = [t for t in LOSS_TYPES if t not in ("sapo", "vespo")]  # sapo and vespo have no clip, epsilon or delta
MATRIX = [
    dict(loss_type=loss_type, importance_sampling_level=level, beta=beta, delta=delta, epsilon_high=epsilon_high)
    for loss_type, level, beta, delta, epsilon_high in itertools.product(
        CLIPPED, LEVELS, (0.0, 0.1), (None, 1.5), (None, 0.28)
    )
    if not (loss_type == "luspo" and level == "token")  # warned about; its own case below
]
MATRIX += [dict(loss_type="sapo", importance_sampling_level=level, beta=beta, sapo_temperature_neg=tau)
           for level, beta, tau in itertools.product(LEVELS, (0.0, 0.1), (1.05, 2.0))]  # fmt: skip
MATRIX += [dict(loss_type="vespo", beta=beta, vespo_k_neg=k) for beta, k in itertools.product((0.0, 0.1), (3.0, 0.5))]
# CISPO with an epsilon_high where some weights are capped and some are not
MATRIX += [dict(loss_type="cispo", importance_sampling_level=level, beta=0.1, epsilon_high=1.2) for level in LEVELS]


@pytest.mark.parametrize("kwargs", MATRIX, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_policy_loss_matches_token_loop(kwargs):
    settings = LossSettings(max_completion_length=12, **kwargs)
    lengths = [10, 6, 1, 4, 8, 3, 10, 7]
    batch = make_batch(lengths, T=10, seed=7)  # a seed where GSPO's per-sequence ratios clip low, high and at delta
    # Totals as if this were one micro-batch of three: they, not the local counts, must be used.
    totals = BatchTotals(num_sequences=3 * len(lengths), num_tokens=sum(lengths) + 41, num_micro_batches=3)
    loss, grad, (metrics,) = loss_and_grad(policy_loss, batch, settings, totals)
    ref_loss, ref_grad, (clipped, capped) = loss_and_grad(reference_loss, batch, settings, totals)

    assert loss.ndim == 0
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-12)
    if settings.loss_type in ("sapo", "vespo"):  # no clipping to count
        return
    assert 0 < clipped < sum(lengths), "clipping must trigger on some tokens and spare others"
    if settings.delta is not None and settings.loss_type != "cispo":
        assert capped > 0, "delta must cap some ratios"
    key = "cispo_clip_ratio" if settings.loss_type == "cispo" else "clip_ratio/region_mean"
    assert metrics[key] == pytest.approx(clipped / sum(lengths))
    if settings.loss_type != "cispo":
        assert metrics["clip_ratio/low_mean"] + metrics["clip_ratio/high_mean"] == pytest.approx(metrics[key])
        assert metrics["clip_ratio/low_mean"] > 0 and metrics["clip_ratio/high_mean"] > 0
    if settings.beta > 0:
        d = (batch["ref_logps"] - batch["logps"])[batch["mask"]]
        assert metrics["kl"] == pytest.approx((d.exp() - d - 1).mean().item())
    else:
        assert "kl" not in metrics


def test_empty_row_contributes_nothing_and_padding_garbage_is_ignored():
    batch = make_batch([5, 0, 3], T=6, seed=2)
    batch["old_logps"][~batch["mask"]] = -1e4  # exp(logp - old) would overflow at padded positions
    for loss_type, level in itertools.product(LOSS_TYPES, LEVELS):
        settings = LossSettings(loss_type=loss_type, importance_sampling_level=level, beta=0.1)
        loss, grad, _ = loss_and_grad(policy_loss, batch, settings, BatchTotals(3, 8, 1))
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        assert (grad[~batch["mask"]] == 0).all()


def test_beta_without_ref_logps_raises():
    batch = make_batch([3, 2], T=4)
    settings, totals = LossSettings(beta=0.1), BatchTotals(2, 5, 1)
    with pytest.raises(ValueError, match="ref_logps"):
        policy_loss(batch["logps"], batch["old_logps"], None, batch["advantages"], batch["mask"], settings, totals)


def accumulate(batch, settings, k):
    """Gradient accumulation the way the trainer does it: k contiguous micro-batches, whole-batch totals."""
    totals = BatchTotals(len(batch["advantages"]), int(batch["mask"].sum()), k)
    logps = batch["logps"].clone().requires_grad_(True)
    total_loss = 0.0
    float_mask = batch["mask"].to(DTYPE)  # the trainer may pass either; the matrix test passes bool
    for rows in torch.arange(len(logps)).chunk(k):
        micro = [batch[name][rows] for name in ("old_logps", "ref_logps", "advantages")]
        loss, _ = policy_loss(logps[rows], *micro, float_mask[rows], settings, totals)
        loss.backward()
        total_loss += loss.item()
    return total_loss, logps.grad


EQUAL_TOKENS = [3, 5, 4, 4, 6, 2, 1, 7]  # every pair and every quadruple holds the same number of tokens
UNEQUAL_TOKENS = [9, 1, 2, 8, 10, 10, 1, 3]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_gradient_accumulation_equals_full_batch(loss_type, level):
    settings = LossSettings(loss_type=loss_type, importance_sampling_level=level, epsilon_high=0.28, beta=0.1)
    for lengths in (EQUAL_TOKENS, UNEQUAL_TOKENS):
        batch = make_batch(lengths, T=10, seed=3)
        full_loss, full_grad = accumulate(batch, settings, 1)
        for k in (2, 4):
            loss, grad = accumulate(batch, settings, k)
            if loss_type == "bnpo" and lengths is UNEQUAL_TOKENS:  # bnpo is local by definition
                assert not torch.allclose(grad, full_grad) and loss != pytest.approx(full_loss)
            else:
                torch.testing.assert_close(grad, full_grad, rtol=1e-12, atol=1e-14)
                assert loss == pytest.approx(full_loss, rel=1e-12)


def reference_advantages(rewards: list[float], G: int, scale: str) -> list[float]:
    def mean(xs):
        return sum(xs) / len(xs)

    def std(xs):
        return math.sqrt(sum((x - mean(xs)) ** 2 for x in xs) / (len(xs) - 1))

    out = []
    for start in range(0, len(rewards), G):
        group = rewards[start : start + G]
        for r in group:
            divisor = {"group": std(group) + 1e-4, "batch": std(rewards) + 1e-4, "none": 1.0}[scale]
            out.append((r - mean(group)) / divisor)
    return out


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_advantages_match_direct_computation(scale):
    g = torch.Generator().manual_seed(4)
    rewards = torch.randn(12, generator=g, dtype=DTYPE)
    rewards[4:8] = 0.7  # one group where every completion scored the same
    advantages = group_advantages(rewards, num_generations=4, scale_rewards=scale)
    expected = torch.tensor(reference_advantages(rewards.tolist(), 4, scale), dtype=DTYPE)
    torch.testing.assert_close(advantages, expected, rtol=1e-12, atol=1e-12)
    assert (advantages[4:8] == 0).all()
    assert advantages.abs().sum() > 0


def test_group_advantages_rejects_bad_input():
    with pytest.raises(ValueError, match="scale_rewards='mean'"):
        group_advantages(torch.zeros(8), 4, "mean")
    with pytest.raises(ValueError, match="num_generations=3"):
        group_advantages(torch.zeros(8), 3)


@pytest.mark.parametrize(
    ("loss_type", "epsilon_high", "normaliser"),
    [
        ("grpo", None, lambda lengths: torch.tensor(lengths, dtype=DTYPE).unsqueeze(1) * len(lengths)),
        ("dapo", None, lambda lengths: sum(lengths)),
        ("dr_grpo", None, lambda lengths: len(lengths) * 16),
        ("cispo", 5.0, lambda lengths: sum(lengths)),  # on-policy CISPO is plain REINFORCE too
        ("sapo", None, lambda lengths: torch.tensor(lengths, dtype=DTYPE).unsqueeze(1) * len(lengths)),  # gate 1
        ("vespo", None, lambda lengths: sum(lengths)),  # phi(1) = 1
        ("luspo", None, lambda lengths: len(lengths)),  # a sequence's tokens sum: it weighs its length
    ],
)
def test_on_policy_gradient_is_the_policy_gradient(loss_type, epsilon_high, normaliser):
    lengths = [7, 2, 5, 1, 6]
    batch = make_batch(lengths, T=8, seed=5)
    batch["old_logps"] = batch["logps"].clone()  # num_iterations = 1: the sampler's policy is the current one
    settings = LossSettings(loss_type=loss_type, epsilon_high=epsilon_high, max_completion_length=16)
    _, grad, _ = loss_and_grad(policy_loss, batch, settings, BatchTotals(len(lengths), sum(lengths), 1))
    expected = -batch["advantages"].unsqueeze(1) * batch["mask"] / normaliser(lengths)
    torch.testing.assert_close(grad, expected.to(DTYPE), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss_type": "ppo"}, r"loss_type='ppo'.*'grpo', 'bnpo', 'dr_grpo', 'dapo', 'cispo', 'luspo', 'sapo'"),
        ({"sapo_temperature_neg": 0.0}, r"sapo_temperature_neg=0\.0.*> 0"),
        ({"vespo_lambda_pos": -1.0}, r"vespo_lambda_pos=-1\.0.*> 0"),
        ({"vespo_k_neg": -0.5}, r"vespo_k_neg=-0\.5.*>= 0"),
        ({"importance_sampling_level": "tokens"}, r"importance_sampling_level='tokens'.*'token', 'sequence'"),
        ({"delta": 1.2}, r"delta=1\.2.*> 1 \+ epsilon_high = 1\.2"),
        ({"delta": 1.25, "epsilon_high": 0.28}, r"delta=1\.25.*> 1 \+ epsilon_high = 1\.28"),
        ({"epsilon": -0.1}, r"epsilon=-0\.1.*>= 0"),
        ({"epsilon_high": -1.0}, r"epsilon_high=-1\.0"),
        ({"beta": -0.01}, r"beta=-0\.01.*>= 0"),
        ({"max_completion_length": 0}, r"max_completion_length=0.*>= 1"),
    ],
)
def test_settings_validation_names_field_value_and_allowed(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LossSettings(**kwargs)


def test_valid_settings_are_accepted():
    LossSettings(loss_type="cispo", epsilon_high=5.0)
    LossSettings(loss_type="grpo", importance_sampling_level="sequence", delta=1.3, beta=0.04)


# Cases computed by TRL 1.16.0's own GRPOTrainer._compute_loss (one process, no gradient accumulation), from
# /work/notes/issue16_losses.md: m = [[1,1,1],[1,1,0]], A = [1, -0.5], logp = [[-1,-2,-0.5],[-1,-1,-7]],
# old = logp - D; the padded D is junk that must not count.
TRL_CASES = [
    ("sapo token", dict(loss_type="sapo"), [[0, math.log(1.2), math.log(0.8)], [math.log(1.5), 0, math.log(3)]],
     [1.0, -0.5], -0.462707, [[-1 / 6, -0.198013, -0.132009], [0.175151, 0.125, 0]]),
    ("sapo sequence", dict(loss_type="sapo", importance_sampling_level="sequence"), [[0.3] * 3, [-0.1, -0.1, 5]],
     [1.0, -0.5], -0.720747, [[-0.218230] * 3, [0.112823, 0.112823, 0]]),
    ("luspo sequence", dict(loss_type="luspo", importance_sampling_level="sequence"), [[0.3] * 3, [-0.1, -0.1, 5]],
     [1.0, -0.5], -1.347581, [[0, 0, 0], [0.226209, 0.226209, 0]]),
    ("luspo delta", dict(loss_type="luspo", importance_sampling_level="sequence", delta=1.5),
     [[0.5] * 3, [0, 0, 9]], [-1.0, 1.0], 1.25, [[0, 0, 0], [-0.5, -0.5, 0]]),
    ("vespo off-policy", dict(loss_type="vespo"), [[0.1, 0.1, 0.2], [-0.2, -0.3, 5]], [1.0, -0.5], 0.258212,
     [[-0.101783] * 3, [0.049014, 0.049014, 0]]),
    ("vespo clamps", dict(loss_type="vespo"), [[10, 10, 5], [-15, -15, 0]], [1.0, -0.5], 0.0, [[0] * 3, [0] * 3]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "kwargs", "log_ratio", "advantages", "loss", "grad"), TRL_CASES,
                         ids=[case[0] for case in TRL_CASES])  # fmt: skip
def test_new_loss_types_equal_trl_1_16_on_its_own_numbers(name, kwargs, log_ratio, advantages, loss, grad):
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    logps = torch.tensor([[-1, -2, -0.5], [-1, -1, -7]], dtype=DTYPE, requires_grad=True)
    old = logps.detach() - torch.tensor(log_ratio, dtype=DTYPE)
    value, metrics = policy_loss(logps, old, None, torch.tensor(advantages, dtype=DTYPE), mask,
                                 LossSettings(**kwargs), BatchTotals(2, 5, 1))  # fmt: skip
    value.backward()
    assert value.item() == pytest.approx(loss, abs=1e-6)
    torch.testing.assert_close(logps.grad, torch.tensor(grad, dtype=DTYPE), atol=1e-6, rtol=0)
    if kwargs["loss_type"] == "vespo":
        assert 0 <= metrics["vespo/phi_seq_mean"] < 1


def test_luspo_with_token_ratios_warns_and_sums_token_terms_per_sequence():
    from stratagem.rl.config import make_config

    with pytest.warns(LossSettingWarning, match="importance_sampling_level='sequence'"):
        make_config({"loss_type": "luspo"})
    settings = LossSettings(loss_type="luspo")
    lengths = [5, 2, 4]
    batch = make_batch(lengths, T=6, seed=3)
    loss, grad, _ = loss_and_grad(policy_loss, batch, settings, BatchTotals(3, sum(lengths), 1))
    ref_loss, ref_grad, _ = loss_and_grad(reference_loss, batch, settings, BatchTotals(3, sum(lengths), 1))
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-12)
