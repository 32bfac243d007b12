"""The embedded default policy, built offline: a tokenizer and a small causal LM, SFT-primed.

No machine here reaches a model hub, yet ``stratagem train`` must have a policy to start
from. So we build one: a byte-level BPE tokenizer trained on the task prompt and a corpus of
procedurally generated 2048 programs of widely varying quality (``corpus.py``), and a small
Llama-style model trained on ``prompt -> program`` for a fixed number of steps. Sampling from
it gives mostly valid programs of mixed strength, which is what GRPO needs to select from.

Why Llama and not gpt-oss: at the same size on 2 CPU cores a ``GptOssForCausalLM`` step is
3-5x slower (transformers runs its sink attention eagerly only, and routes every token through
its MoE block), which would not fit a few-minute build plus a training run in ten minutes.
``model: default-gpt-oss`` (``examples/gpu_gpt_oss.yaml``, the GPU preset) is the same build as a
gpt-oss: attention sinks, 128-token sliding windows on alternate layers, a mixture of 4 experts
(2 per token), head dim 64, so a GPU run trains the whole gpt-oss path through our kernels.

The build is deterministic from its settings (seeded corpus, seeded init, fixed step count)
and cached under ``~/.cache/stratagem/default-model/<fingerprint>`` (``STRATAGEM_CACHE``
overrides the root). It is written to a temporary directory and renamed into place, so a
build killed half-way never leaves a broken model in the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from stratagem.agents.policy import no_transformers_bars
from stratagem.agents.prompts import task_prompt
from stratagem.envs.spec import resolve
from stratagem.rl.corpus import generate_programs

BUILDER_VERSION = 1  # bump when the tokenizer, model or SFT code changes what a build produces
EOS, PAD = "<|endoftext|>", "<|pad|>"
PROMPT_WEIGHT = 200  # copies of the prompt among the tokenizer's training texts


ARCHITECTURES = ("llama", "gpt-oss")


@dataclass(frozen=True)
class DefaultModelSettings:
    architecture: str = "llama"  # or "gpt-oss"
    seed: int = 0
    programs: int = 8000  # corpus size
    vocab_size: int = 1536
    hidden_size: int = 256
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate_size: int = 768
    max_positions: int = 1024
    sft_steps: int = 300
    batch_size: int = 32
    learning_rate: float = 3e-3

    def fingerprint(self) -> str:
        """Settings, builder version and the corpus itself: a change to any of them is a new model."""
        fields = asdict(self)
        if fields["architecture"] == "llama":  # the field came after the Llama builds: their caches stay valid
            del fields["architecture"]
        digest = hashlib.sha256(json.dumps({"version": BUILDER_VERSION, **fields}, sort_keys=True).encode())
        for program in generate_programs(self.programs, self.seed):
            digest.update(program.encode())
        return digest.hexdigest()[:12]


def cache_root() -> Path:
    return Path(os.environ.get("STRATAGEM_CACHE", Path.home() / ".cache" / "stratagem")).expanduser()


def default_model_path(settings: DefaultModelSettings | None = None, build: bool = True) -> Path:
    """The directory of the default model (a normal transformers directory), built on first use."""
    settings = settings or DefaultModelSettings()
    path = cache_root() / "default-model" / settings.fingerprint()
    if not (path / "config.json").is_file() and build:
        build_default_model(path, settings)
    return path


def completion_text(program: str) -> str:
    """How the default model answers: the program in one fenced block (what ``extraction.extract`` reads)."""
    return f"```python\n{program.strip()}\n```"


def _train_tokenizer(prompt: str, programs: list[str], vocab_size: int) -> Any:
    """Byte-level BPE whose merges may span a whole line (never two): code is written in lines, so
    common lines become single tokens and a program is ~30 tokens instead of ~250. That makes
    sampling and training several times cheaper, which is what fits a run into minutes on a CPU.
    The prompt is repeated in the training text so its lines are merged too; any text still
    encodes (byte fallback), only less compactly."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex("\n"), behavior="merged_with_previous"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])  # fmt: skip
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    bpe.train_from_iterator([prompt] * PROMPT_WEIGHT + programs, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, pad_token=PAD, padding_side="left")


def _training_texts(settings: DefaultModelSettings) -> tuple[str, list[str]]:
    """The task prompt the model is primed on, and its completions (programs in fenced blocks)."""
    programs = [completion_text(p) for p in generate_programs(settings.programs, settings.seed)]
    return task_prompt(resolve("2048")), programs


def default_tokenizer(settings: DefaultModelSettings | None = None) -> Any:
    """The default model's tokenizer alone, trained as the build trains it (seconds, no model): to measure prompts."""
    settings = settings or DefaultModelSettings()
    prompt, programs = _training_texts(settings)
    return _train_tokenizer(prompt, programs, settings.vocab_size)


def build_default_model(path: Path, settings: DefaultModelSettings) -> Path:
    """Generate the corpus, train the tokenizer, SFT the model, and move the result into ``path``."""
    with torch.random.fork_rng():  # the caller's random streams are left as they were
        return _build(path, settings)


def _config(settings: DefaultModelSettings, tokenizer: Any) -> Any:
    """The model's shape: Llama, or gpt-oss with sinks, alternating 128-token windows and 4 experts."""
    from transformers import GptOssConfig, LlamaConfig

    shape = {"vocab_size": len(tokenizer), "hidden_size": settings.hidden_size,
             "num_hidden_layers": settings.layers, "num_attention_heads": settings.heads,
             "num_key_value_heads": settings.kv_heads, "max_position_embeddings": settings.max_positions,
             "tie_word_embeddings": True, "bos_token_id": None, "eos_token_id": tokenizer.eos_token_id,
             "pad_token_id": tokenizer.pad_token_id}  # fmt: skip
    if settings.architecture == "llama":
        return LlamaConfig(intermediate_size=settings.intermediate_size, **shape)
    if settings.architecture == "gpt-oss":
        layer_types = ["sliding_attention", "full_attention"] * (settings.layers // 2) + ["sliding_attention"] * (
            settings.layers % 2
        )
        return GptOssConfig(intermediate_size=settings.intermediate_size // 2, num_local_experts=4,
                            num_experts_per_tok=2, sliding_window=128, layer_types=layer_types,
                            head_dim=settings.hidden_size // settings.heads, attention_dropout=0.0,
                            rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, **shape)  # fmt: skip
    raise ValueError(f"architecture={settings.architecture!r}; expected one of {ARCHITECTURES}")


def _build(path: Path, settings: DefaultModelSettings) -> Path:
    from transformers import GptOssForCausalLM, LlamaForCausalLM

    torch.manual_seed(settings.seed)
    prompt, programs = _training_texts(settings)
    tokenizer = _train_tokenizer(prompt, programs, settings.vocab_size)
    prompt_ids = tokenizer(prompt)["input_ids"]
    examples = [tokenizer(p)["input_ids"] + [tokenizer.eos_token_id] for p in programs]
    examples = [e for e in examples if len(prompt_ids) + len(e) <= settings.max_positions]

    config = _config(settings, tokenizer)
    model = LlamaForCausalLM(config) if settings.architecture == "llama" else GptOssForCausalLM(config)
    _sft(model, prompt_ids, examples, tokenizer.pad_token_id, settings)

    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=path.parent))
    try:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        with no_transformers_bars():  # "Writing model shards": the build has its own bar
            model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "stratagem.json").write_text(json.dumps({"builder_version": BUILDER_VERSION, **asdict(settings)}))
        try:
            staging.rename(path)
        except OSError:  # another process finished the same build first: theirs is identical
            shutil.rmtree(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def _sft(model: torch.nn.Module, prompt_ids: list[int], examples: list[list[int]], pad_id: int,
         settings: DefaultModelSettings) -> None:  # fmt: skip
    """Next-token loss on the completion only (the prompt is context), cosine-decayed AdamW."""
    rng = random.Random(settings.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.01)
    warmup = max(1, settings.sft_steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, settings.sft_steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(progress * torch.pi)).item())

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    model.train()
    order: list[int] = []
    bar = tqdm(range(settings.sft_steps), desc="building the default model (SFT)", unit="step")
    for _ in bar:
        if len(order) < settings.batch_size:
            order += rng.sample(range(len(examples)), len(examples))
        batch = [examples[order.pop()] for _ in range(settings.batch_size)]
        width = len(prompt_ids) + max(len(e) for e in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, example in enumerate(batch):  # right padding: positions start at 0 in every row
            row = prompt_ids + example
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
            labels[i, len(prompt_ids) : len(row)] = torch.tensor(example)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
