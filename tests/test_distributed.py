"""`torchrun --nproc-per-node 2 -m stratagem.cli train` on gloo: the same run as one process with the same total
batch, metric for metric; its checkpoint resumes in one process; a group samples the same tokens on any rank; and
every loss type's step-wide normaliser makes the ranks' summed gradient one process's."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stratagem.cli import main
from stratagem.rl.config import load_config
from stratagem.rl.distributed import Shard, group_uniforms
from stratagem.rl.losses import LOSS_TYPES, NORMALISERS, BatchTotals, LossSettings, dapo_normaliser, policy_loss
from stratagem.rl.trainer import Trainer

# Two groups of two a rank (one rank: four), two micro-batches each; beta and num_iterations > 1 so the reference
# and the old log-probs go through the split too.
RUN = {"num_generations": 2, "per_device_train_batch_size": 2, "max_completion_length": 48, "num_episodes": 1,
       "workers": 1, "learning_rate": 1e-2, "lora_r": 4, "lora_alpha": 8, "beta": 0.05, "num_iterations": 2,
       "seed": 3, "max_steps": 2, "save_steps": 1, "record_best": False}  # fmt: skip


def _flags(values: dict, **more: object) -> list[str]:
    """Config fields as `stratagem train` flags (a false bool as --no-NAME)."""
    flags = {k.replace("_", "-"): v for k, v in {**values, **more}.items()}
    return [f"--no-{k}" if v is False else f"--{k}={v}" for k, v in flags.items()]


def _metrics(run: Path) -> list[dict]:
    return [_comparable(json.loads(line)) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _adapter(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run / "adapter" / "adapter_model.safetensors")


def _comparable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.startswith("time/")}


def _assert_same_step(mine: dict, expected: dict) -> None:
    """Every metric within float tolerance: counts and rewards come out exact, the loss, KL and grad norm are
    sums taken in another order."""
    assert mine.keys() == expected.keys()
    for name, value in expected.items():
        assert mine[name] == pytest.approx(value, rel=1e-4, abs=1e-6), (expected["step"], name)


@pytest.fixture
def one_thread():
    """One intra-op thread in this process, as torchrun gives each rank (OMP_NUM_THREADS=1): for a model this
    small on 2 shared cores, a second thread only waits on the first (a step took 6 s with two, 0.6 s with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def two_ranks(tiny_policy, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """What a user runs: torchrun, two ranks on gloo, two groups each, a checkpoint after each step."""
    run = tmp_path_factory.mktemp("two") / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "stratagem.cli", "train", "--model", str(tiny_policy), "--out", str(run),
               *_flags(RUN, gradient_accumulation_steps=2)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return run, done


def test_two_ranks_step_as_one_process_and_resume_in_one(two_ranks, tiny_policy, tmp_path, one_thread):
    """One process with the same total batch (four groups a step) reproduces the two-rank run: its first step from
    scratch, and its second resumed from the two-rank run's first checkpoint (cut there, as a kill would)."""
    run, done = two_ranks
    first = Trainer(load_config(None, {**RUN, "model": str(tiny_policy), "gradient_accumulation_steps": 4}),
                    tmp_path / "first")  # fmt: skip
    try:
        _assert_same_step(_comparable(first.step()), _metrics(run)[0])
    finally:
        first.close()

    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step-000002")
    (resumed / "checkpoints" / "latest").write_text("step-000001\n")
    assert main(["train", "--resume", str(resumed), "--gradient-accumulation-steps", "4"]) == 0
    for mine, expected in zip(_metrics(resumed), _metrics(run), strict=True):
        _assert_same_step(mine, expected)
    for name, tensor in _adapter(run).items():  # the trained adapter, at the end of step 2
        assert torch.allclose(_adapter(resumed)[name], tensor, atol=1e-6, rtol=1e-4), name
    assert json.loads((resumed / "best.json").read_text())["completion_sha"] == json.loads(
        (run / "best.json").read_text())["completion_sha"]  # fmt: skip

    lines = done.stdout.splitlines()  # rank 0 alone speaks: one of each line, not one per rank
    assert [line.split()[0] for line in lines if line.startswith(("run directory:", "step ", "done:"))] == [
        "run", "step", "step", "done:"]  # fmt: skip
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step-000001", "step-000002"]


def test_a_group_samples_the_same_tokens_in_any_batch(tiny_policy, one_thread):
    """The keyed draws: the whole batch, each rank's half, and chunks that split groups all agree row by row."""
    from stratagem.agents.policy import SamplingParams, context_length, encode_prompts, load_model, sample
    from stratagem.agents.prompts import task_prompt
    from stratagem.envs.spec import resolve

    model, tokenizer = load_model(str(tiny_policy), "float32", "cpu", None)
    params = SamplingParams(max_new_tokens=16)
    ids, mask = encode_prompts(tokenizer, [task_prompt(resolve("2048"), {})] * 8, 512, context=context_length(model),
                               max_new_tokens=params.max_new_tokens)  # fmt: skip
    whole = sample(model, tokenizer, ids, mask, params, group_uniforms(3, 1, range(4), 2, 16, "cpu"))
    halves = []
    for shard in (Shard(0, 2, 2, 2), Shard(1, 2, 2, 2)):
        draws = group_uniforms(3, 1, shard.group_ids, 2, 16, "cpu")
        halves += sample(model, tokenizer, ids[shard.rows], mask[shard.rows], params, draws).texts
    chunked = sample(model, tokenizer, ids, mask, params, group_uniforms(3, 1, range(4), 2, 16, "cpu"), max_batch=3)
    assert whole.texts == halves == chunked.texts
    assert len(set(whole.texts)) > 1  # rows draw apart: not one stream copied


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_step_wide_counts_make_the_ranks_gradient_one_process(loss_type):
    """Each rank's micro-batches normalised by counts summed over the ranks (``Distributed.sum_totals``), their
    gradients summed (``sum_gradients``): one process's gradient over the same micro-batches, for every loss."""
    g = torch.Generator().manual_seed(0)
    rows, tokens, micro, ranks = 8, 6, 2, 2
    logps = (-torch.rand(rows, tokens, generator=g) * 3).requires_grad_()
    old, ref = logps.detach() + 0.1 * torch.randn(rows, tokens, generator=g), logps.detach() - 0.2
    advantages = torch.randn(rows, generator=g)
    mask = (torch.rand(rows, tokens, generator=g) > 0.3).float()
    settings = LossSettings(loss_type=loss_type, beta=0.04, max_completion_length=tokens)

    def gradient(parts: list[slice], totals: BatchTotals) -> torch.Tensor:
        logps.grad = None
        for part in parts:
            policy_loss(logps[part], old[part], ref[part], advantages[part], mask[part], settings, totals)[0].backward()
        return logps.grad.clone()

    micro_batches = [slice(i, i + micro) for i in range(0, rows, micro)]
    one = gradient(micro_batches, BatchTotals(rows, int(mask.sum()), len(micro_batches)))
    per_rank, size = len(micro_batches) // ranks, rows // ranks
    shards = [micro_batches[r * per_rank : (r + 1) * per_rank] for r in range(ranks)]
    owns = [BatchTotals(size, int(mask[r * size : (r + 1) * size].sum()), per_rank) for r in range(ranks)]
    step_wide = BatchTotals(*(sum(getattr(t, f) for t in owns) for f in ("num_sequences", "num_tokens",
                                                                            "num_micro_batches")))  # fmt: skip
    summed = sum(gradient(shard, step_wide) for shard in shards)
    assert torch.allclose(summed, one, atol=1e-7)
    if NORMALISERS[loss_type] is dapo_normaliser:  # DDP's way, own counts and averaged gradients, would be off
        assert owns[0].num_tokens != owns[1].num_tokens
        averaged = sum(gradient(shard, own) for shard, own in zip(shards, owns, strict=True)) / ranks
        assert not torch.allclose(averaged, one, atol=1e-5)


def test_one_rank_under_torchrun_joins_a_group_of_its_own(monkeypatch):
    """`torchrun --nproc-per-node 1` is a real process group (how NCCL is checked on one GPU); a plain process is
    not (its collectives are no-ops and nothing is initialised)."""
    import socket

    import torch.distributed as dist

    from stratagem.rl.distributed import Distributed

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    plain = Distributed.from_env()
    plain.start("cpu", 30)
    assert not plain.started and not dist.is_initialized()
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    for name, value in {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": str(port)}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    alone = Distributed.from_env()
    alone.start("cpu", 30)
    try:
        assert alone.started and dist.get_world_size() == 1
        assert alone.all_sum(torch.tensor([2.0, 3.0])).tolist() == [2.0, 3.0]
        assert alone.gather({"x": 1}) == [{"x": 1}]
    finally:
        alone.close()
    assert not dist.is_initialized()
