"""The kernels on a CUDA GPU in bf16 (and fp16), against the reference; and a GptOss model with
``attn_implementation="stratagem"`` against eager, forward and backward.

    python benchmarks/check_attention_gpu.py     # about 8 minutes on an H100: every case autotunes

The CPU tests run the same kernels in Triton's interpreter in fp32/fp16; the interpreter computes
bf16 wrongly, so bf16 is checked here. Errors are ``|x - ref| / |ref|`` (norms) against the
float64 reference; bf16 operands land between 1e-3 and 1e-2. Exit status 1 if any check fails.
"""

from __future__ import annotations

import sys

import torch

from stratagem.kernels import attention
from stratagem.kernels.reference import attention_reference

# (name, B, Hq, Hkv, N, D, window, sink scale, padding)
CASES = [
    ("causal", 2, 8, 8, 1000, 64, None, None, False),
    ("causal + sinks, GQA 8", 2, 16, 2, 777, 64, None, 1.0, False),
    ("window 128 + sinks", 2, 8, 1, 1500, 64, 128, 1.0, False),
    ("window 1", 1, 4, 2, 300, 64, 1, 1.0, False),
    ("window > N", 1, 4, 2, 300, 128, 4096, 1.0, True),
    ("huge sinks + padding", 3, 8, 4, 513, 128, None, 30.0, True),
    ("negative sinks, window 33", 2, 8, 2, 640, 128, 33, -30.0, True),
    ("GQA 2, D 128, padding", 2, 8, 4, 2048, 128, 256, 1.0, True),
]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a - b| / |b|, with |b| floored at 1e-3 per element: values under fp16's resolution (an output scaled
    by exp(-30) next to a huge sink) are compared in absolute terms, as rtol + atol would."""
    floor = 1e-3 * b.numel() ** 0.5
    return ((a.double() - b.double()).norm() / b.double().norm().clamp(min=floor)).item()


def check_kernels(dtype: torch.dtype) -> list[tuple[str, float, bool]]:
    rows = []
    for name, b, hq, hkv, n, d, window, sink, padding in CASES:
        gen = torch.Generator(device="cuda").manual_seed(hash(name) % 2**31)
        q, k, v = (torch.randn(b, n, h, d, device="cuda", generator=gen, dtype=dtype).transpose(1, 2).requires_grad_()
                   for h in (hq, hkv, hkv))  # fmt: skip
        s = None if sink is None else (sink + torch.randn(hq, device="cuda", generator=gen)).to(dtype).requires_grad_()
        pad = torch.randint(0, n // 2, (b,), device="cuda", generator=gen) if padding else None
        if pad is not None:
            pad[-1] = n  # one row of padding only
        torch.cuda.synchronize()
        out = attention(q, k, v, sinks=s, window=window, padding_start=pad)
        leaves = [q, k, v] + ([s] if s is not None else [])
        do = torch.randn_like(out)
        grads = torch.autograd.grad(out, leaves, do)
        ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
        ref = attention_reference(*ref_leaves[:3], sinks=ref_leaves[3] if s is not None else None, window=window,
                                  padding_start=pad)  # fmt: skip
        ref_grads = torch.autograd.grad(ref, ref_leaves, do.double())
        errors = [rel(out, ref)] + [rel(g, r) for g, r in zip(grads, ref_grads, strict=True)]
        nan = any(t.isnan().any().item() for t in [out, *grads])
        worst = max(errors)
        rows.append((f"{name} [{str(dtype)[6:]}] N={n} D={d}", worst, not nan and worst < 2e-2))
        print(f"{rows[-1][0]:<48} out {errors[0]:.1e}  dq {errors[1]:.1e}  dk {errors[2]:.1e}  dv {errors[3]:.1e}"
              + (f"  dsinks {errors[4]:.1e}" if s is not None else "") + ("  NaN!" if nan else ""))  # fmt: skip
    return rows


def check_gptoss() -> tuple[str, float, bool]:
    """bf16 with our attention vs bf16 eager, both against the same model run eagerly in float32."""
    import copy

    from transformers import GptOssConfig, GptOssForCausalLM

    import stratagem.kernels.hf  # noqa: F401

    torch.manual_seed(0)
    config = GptOssConfig(vocab_size=512, hidden_size=512, intermediate_size=512, num_hidden_layers=4,
                          num_attention_heads=8, num_key_value_heads=2, head_dim=64, num_local_experts=2,
                          num_experts_per_tok=2, sliding_window=128,  # every expert active: no routing flips
                          layer_types=["sliding_attention", "full_attention"] * 2)  # fmt: skip
    model32 = GptOssForCausalLM(config).to("cuda")
    for layer in model32.model.layers:
        torch.nn.init.normal_(layer.self_attn.sinks, std=1.0)
    model16 = copy.deepcopy(model32).to(torch.bfloat16)
    ids = torch.randint(0, 512, (2, 700), device="cuda")
    mask = torch.ones_like(ids)
    mask[1, :123] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    real = mask.bool()

    def run(model, implementation):
        model.set_attn_implementation(implementation)
        model.zero_grad()
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()
        logits[real].log_softmax(-1).mean().backward()
        return logits[real].detach(), [p.grad.float() for p in model.parameters() if p.grad is not None]

    truth = run(model32, "eager")
    errors = {}
    for implementation in ("eager", "stratagem"):
        logits, grads = run(model16, implementation)
        errors[implementation] = (rel(logits, truth[0]),
                                  max(rel(g, t) for g, t in zip(grads, truth[1], strict=True)))  # fmt: skip
    name = "GptOss bf16 (4 layers, 2 sliding, sinks, padded batch) vs fp32 eager"
    print(
        f"{name}: bf16 eager logits {errors['eager'][0]:.1e} grads {errors['eager'][1]:.1e}; "
        f"bf16 stratagem logits {errors['stratagem'][0]:.1e} grads {errors['stratagem'][1]:.1e}"
    )
    worst = max(errors["stratagem"])
    return name, worst, worst <= 1.5 * max(errors["eager"]) + 1e-3


def main() -> int:
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    print(torch.cuda.get_device_name(), "torch", torch.__version__)
    rows = check_kernels(torch.bfloat16) + check_kernels(torch.float16) + [check_gptoss()]
    print(f"\n{'check':<72} {'worst rel. error':>16}  result")
    for name, worst, ok in rows:
        print(f"{name:<72} {worst:16.2e}  {'ok' if ok else 'FAIL'}")
    return 0 if all(ok for *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
