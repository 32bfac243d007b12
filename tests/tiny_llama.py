"""A tiny, untrained Llama and the default model's kind of tokenizer, saved as a transformers directory.

For tests that need a real model directory (``load_model``, ``stratagem train --model``) but not a
policy that writes good programs: it saves in about a second, where the SFT-primed ``tiny_policy``
of conftest trains for a while.
"""

from __future__ import annotations

from pathlib import Path

import torch


def save_tiny_llama(path: Path, max_positions: int = 1024) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    from stratagem.agents.prompts import task_prompt
    from stratagem.envs.spec import resolve
    from stratagem.rl.corpus import generate_programs
    from stratagem.rl.default_model import _train_tokenizer, completion_text

    programs = [completion_text(p) for p in generate_programs(60, 0)]
    tokenizer = _train_tokenizer([task_prompt(resolve("2048")), *programs], 400)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                         tie_word_embeddings=True, bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
