"""Without Triton, the kernels fall back to the torch reference, and say so once per process.

Each test runs a fresh interpreter in which ``import triton`` fails as it does where Triton is not
installed (a finder first on ``sys.meta_path`` refuses it), with ``-W always`` so that Python's own
once-per-location filter cannot hide a notice given on every call.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.tiny_llama import save_tiny_llama

ROOT = Path(__file__).parents[1]
NOTICE = "Triton is not installed"

NO_TRITON = """
import sys

class NoTriton:
    def find_spec(self, name, path=None, target=None):
        if name == "triton" or name.startswith("triton."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoTriton())
"""


def run_without_triton(body: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env["TRITON_INTERPRET"] = "1"  # as the tests' conftest sets it: the interpreter must not be mistaken for Triton
    done = subprocess.run([sys.executable, "-W", "always", "-c", NO_TRITON + textwrap.dedent(body)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_attention_without_triton_equals_the_reference_and_gives_one_notice():
    done = run_without_triton("""
        import torch

        import stratagem.kernels as kernels
        from stratagem.kernels.reference import attention_reference

        assert "triton" not in sys.modules
        torch.manual_seed(0)
        q, k, v = torch.randn(2, 4, 9, 16), torch.randn(2, 2, 9, 16), torch.randn(2, 2, 9, 16)
        sinks, pad = torch.randn(4), torch.tensor([0, 3])
        cases = [{}, {"sinks": sinks}, {"window": 3}, {"padding_start": pad}, {"causal": False},
                 {"sinks": sinks, "window": 4, "padding_start": pad, "scale": 0.3}]
        for options in cases * 2:
            assert torch.equal(kernels.attention(q, k, v, **options), attention_reference(q, k, v, **options))
        half = [t.half() for t in (q, k, v)]
        assert torch.equal(kernels.attention(*half), attention_reference(*half))
        leaf = q.clone().requires_grad_()
        kernels.attention(leaf, k, v, sinks=sinks).sum().backward()
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all()
        assert not kernels.triton_available()
        try:
            kernels.attention(q, k, v, backend="triton")
        except ImportError as exc:
            print("forced:", exc)
        else:
            raise SystemExit("backend='triton' ran without Triton")
        print("ok")
    """)
    assert "ok" in done.stdout
    assert "pip install" in done.stdout and "backend='auto'" in done.stdout  # the forced backend says what to do
    assert done.stderr.count(NOTICE) == 1, done.stderr
    assert "TritonMissingWarning" in done.stderr and "pip install 'triton" in done.stderr


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama")


def test_attn_implementation_stratagem_without_triton_loads_and_matches_eager(tiny_dir):
    done = run_without_triton(f"""
        import torch

        from stratagem.agents.policy import SamplingParams, encode_prompts, load_model, sample

        ours, tokenizer = load_model({str(tiny_dir)!r}, attn_implementation="stratagem")
        eager, _ = load_model({str(tiny_dir)!r}, attn_implementation="eager")
        assert ours.config._attn_implementation == "stratagem"
        ids, mask = encode_prompts(tokenizer, ["def strategy(board):", "Write a 2048 strategy with care."])
        assert (mask == 0).any(), "the batch must be left-padded"
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        real = mask.bool()
        with torch.no_grad():
            a = ours(input_ids=ids, attention_mask=mask, position_ids=positions).logits[real]
            b = eager(input_ids=ids, attention_mask=mask, position_ids=positions).logits[real]
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
        params = SamplingParams(top_k=1, max_new_tokens=12, stop_at_program_end=False)
        runs = [sample(model, tokenizer, ids, mask, params).completion_ids for model in (ours, eager)]
        assert torch.equal(*runs)
        assert "triton" not in sys.modules
        print("ok")
    """)
    assert "ok" in done.stdout
    assert done.stderr.count(NOTICE) == 1, done.stderr
