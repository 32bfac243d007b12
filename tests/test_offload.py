"""Activation offload's choice of what moves to the host (the move itself is measured on a GPU by
``benchmarks/bench_learner.py --variants ours-offload``; on a CPU there is no device memory to free)."""

from __future__ import annotations

import torch

from stratagem.rl.offload import ActivationOffload, is_activation


def test_only_large_tensors_computed_with_a_gradient_to_follow_are_activations():
    weight = torch.randn(512, 512)  # a frozen weight: no grad_fn
    adapter = torch.randn(512, 512, requires_grad=True)  # a trainable leaf: no grad_fn either
    hidden = torch.randn(1024, 512, requires_grad=True) @ weight  # 2 MiB, from an input that needs a gradient
    assert not is_activation(weight) and not is_activation(adapter)
    assert is_activation(hidden)
    assert not is_activation(hidden[:8])  # 16 KiB: not worth a synchronising copy
    assert is_activation(hidden[:8], min_bytes=0)


def test_host_tensors_are_never_copied_and_the_gradient_is_unchanged():
    x = torch.randn(1024, 512, requires_grad=True)
    w = torch.randn(512, 512, requires_grad=True)

    def loss() -> torch.Tensor:
        return torch.tanh(x @ w).square().sum()

    loss().backward()
    expected = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = None
    offload = ActivationOffload(min_bytes=0)
    with offload:
        result = loss()
    result.backward()
    assert offload.moved_bytes == 0
    assert torch.equal(x.grad, expected[0]) and torch.equal(w.grad, expected[1])
