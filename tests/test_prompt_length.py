"""A prompt longer than its room is never cut without a word: the warning names both lengths.

With the default model's own tokenizer (trained as its build trains it) a built-in prompt is a
few tokens (its lines are merged whole), so the long prompt here is the Pong prompt with user notes
the tokenizer never saw, ~700 tokens: past ``max_prompt_length`` 512 it is cut and said so; given
the model's context (1024 positions) and no cap, it is kept whole; past what the context leaves
beside the completion it is cut and said so.
"""

from __future__ import annotations

import warnings

import pytest

from stratagem.agents.policy import PromptTruncatedWarning, context_length, encode_prompts, prompt_room
from stratagem.agents.prompts import task_prompt
from stratagem.envs.spec import resolve
from stratagem.rl.default_model import DefaultModelSettings, default_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return default_tokenizer()


@pytest.fixture(scope="module")
def pong(tokenizer) -> tuple[str, list[int]]:
    notes = " ".join(f"note{i}" for i in range(150))  # text no training line holds: many small tokens
    prompt = task_prompt(resolve("pong")) + "\n" + notes
    return prompt, tokenizer(prompt)["input_ids"]


def encode(*args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids, mask = encode_prompts(*args, **kwargs)
    return ids, mask, [w for w in caught if issubclass(w.category, PromptTruncatedWarning)]


def test_the_pong_prompt_past_max_prompt_length_is_cut_with_one_warning_naming_both_lengths(tokenizer, pong):
    prompt, full = pong
    assert len(full) > 512, "the Pong prompt no longer needs more than 512 tokens: pick a longer one"
    ids, _, caught = encode(tokenizer, [prompt] * 8, 512)
    assert len(caught) == 1, [str(w.message) for w in caught]  # one for the batch, not one per row
    message = str(caught[0].message)
    assert f"{len(full)} tokens" in message and "max_prompt_length 512" in message, message
    assert f"first {len(full) - 512} tokens are cut" in message
    assert ids.shape == (8, 512) and ids[0].tolist() == full[-512:]  # the last tokens, as before


def test_the_pong_prompt_is_kept_whole_where_the_model_has_room(tokenizer, pong):
    prompt, full = pong
    context = DefaultModelSettings().max_positions
    ids, mask, caught = encode(tokenizer, [prompt] * 2, None, context=context, max_new_tokens=128)
    assert not caught
    assert ids[0].tolist() == full and mask.all()
    ids, _, caught = encode(tokenizer, [prompt] * 2, len(full), context=context, max_new_tokens=128)
    assert not caught and ids[0].tolist() == full


def test_a_prompt_past_what_the_context_leaves_beside_the_completion_is_cut_with_a_warning(tokenizer, pong):
    prompt, full = pong
    ids, _, caught = encode(tokenizer, [prompt], None, context=600, max_new_tokens=128)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert f"{len(full)} tokens" in message and "the 472 tokens the model's context 600 leaves" in message, message
    assert ids[0].tolist() == full[-472:]
    assert prompt_room(512, 600, 128) == 472 and prompt_room(None, None) is None and prompt_room(400, 600, 128) == 400


def test_prompts_of_different_lengths_say_how_many_are_cut(tokenizer, pong):
    prompt, _ = pong
    _, mask, caught = encode(tokenizer, [prompt, "a short prompt"], 512)
    assert len(caught) == 1 and "1 of 2 prompts are cut" in str(caught[0].message)
    assert mask.sum(1).tolist()[0] == 512


def test_context_length_reads_the_model_config_through_a_peft_wrapper():
    from transformers import LlamaConfig, LlamaForCausalLM

    from stratagem.agents.policy import add_lora

    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=777)  # fmt: skip
    model = LlamaForCausalLM(config)
    assert context_length(model) == 777
    assert context_length(add_lora(model, 2, 4, 0.0, ["all-linear"])) == 777
