"""The rollout engine: sampling completions fast, with exact token ids, masks and truncation flags.

``sample`` (``engine.py``) is what the trainer and ``play`` call; ``sampling.py`` holds the parameters, the
result and the stop rules, ``kv.py`` the preallocated KV cache and its decode attention, ``lora.py`` the
adapter folded into the weights while sampling.
"""

from stratagem.rollout.engine import cache_field, sample
from stratagem.rollout.sampling import Completions, SamplingParams, filter_logits, program_complete

__all__ = ["Completions", "SamplingParams", "cache_field", "filter_logits", "program_complete", "sample"]
