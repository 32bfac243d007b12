"""The embedded default policy, built offline: a tokenizer and a small causal LM, SFT-primed.

No machine here reaches a model hub, yet ``stratagem train`` must have a policy to start
from, for every built-in environment and for a user's own. So we build one: a byte-level BPE
tokenizer and a small Llama-style model trained on ``prompt -> program`` pairs for a fixed
number of steps, where the corpus (``corpus/``) holds procedurally generated programs of widely
varying quality for 2048, five Atari games, OpenSpiel games, the matmul task and synthetic
user-defined manifests, each under the prompt of its environment (which names the game). One
model, one tokenizer: sampling from it under a task's prompt gives mostly valid programs of
mixed strength for that task, which is what GRPO needs to select from.

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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from stratagem.agents.policy import no_transformers_bars
from stratagem.rl.corpus import MIXED, generate_samples

BUILDER_VERSION = 2  # bump when the tokenizer, model or SFT code changes what a build produces
EOS, PAD = "<|endoftext|>", "<|pad|>"


ARCHITECTURES = ("llama", "gpt-oss")


@dataclass(frozen=True)
class DefaultModelSettings:
    architecture: str = "llama"  # or "gpt-oss"
    seed: int = 0
    programs: int = 12000  # corpus size
    corpus: str = MIXED  # every task (or one task's name, e.g. "2048": see corpus.TASKS)
    vocab_size: int = 4096
    hidden_size: int = 256
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate_size: int = 768
    max_positions: int = 1024
    sft_steps: int = 1200
    batch_size: int = 32
    learning_rate: float = 3e-3

    def fingerprint(self) -> str:
        """Settings, builder version and the corpus itself: a change to any of them is a new model."""
        fields = asdict(self)
        if fields["architecture"] == "llama":  # the field came after the Llama builds: their caches stay valid
            del fields["architecture"]
        digest = hashlib.sha256(json.dumps({"version": BUILDER_VERSION, **fields}, sort_keys=True).encode())
        for prompt, completion in training_pairs(self):
            digest.update(prompt.encode())
            digest.update(completion.encode())
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


PRIME_PROGRAMS, PRIME_STEPS = 400, 150  # a user manifest's derived programs, and the SFT steps on them


def primed_for(path: Path, env: str, params: dict[str, Any], settings: DefaultModelSettings) -> Path:
    """The default model at ``path``, primed for a user-defined environment when its manifest allows it.

    The default model has seen synthetic manifests, not this one, and a tiny model does not copy a prompt's
    names into a program reliably. Where the manifest's declarations say what class of task it is (today the
    guessing class of ``corpus.manifests``: bounds, a history of hints), programs are derived from its declared
    arguments, bounds and hint words, as the corpus derives them, and the model gets ``PRIME_STEPS`` of SFT on
    them under this run's prompt (about a minute on 2 cores), cached beside it by the prompt and programs.
    Built-in environments, and manifests of a class not recognised, get the default model unchanged.
    """
    from stratagem.agents.prompts import task_prompt
    from stratagem.envs.spec import resolve
    from stratagem.rl.corpus import manifests

    spec = resolve(env)
    if spec.source is None or spec.source.resolve().is_relative_to(Path(__file__).parents[1] / "envs" / "manifests"):
        return path
    try:
        samples = manifests.programs_for(spec, random.Random(settings.seed), PRIME_PROGRAMS)
    except ValueError:
        return path
    prompt = task_prompt(spec, params)
    pairs = [(prompt, completion_text(sample.source)) for sample in samples]
    digest = hashlib.sha256(json.dumps([path.name, PRIME_STEPS, pairs]).encode()).hexdigest()[:12]
    primed = path.parent / f"{path.name}-primed-{digest}"
    if not (primed / "config.json").is_file():
        with torch.random.fork_rng():
            _prime(path, primed, pairs, replace(settings, sft_steps=PRIME_STEPS, batch_size=16, learning_rate=1e-3))
    return primed


def _prime(path: Path, primed: Path, pairs: list[tuple[str, str]], settings: DefaultModelSettings) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(settings.seed)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    prompt_ids = tokenizer(pairs[0][0])["input_ids"]
    examples = [(prompt_ids, tokenizer(c)["input_ids"] + [tokenizer.eos_token_id]) for _, c in pairs]
    _sft(model, examples, tokenizer.pad_token_id, settings, desc="priming the default model on this manifest")
    _save(model, tokenizer, primed, {"primed_from": path.name, "programs": len(pairs)})


def completion_text(program: str) -> str:
    """How the default model answers: the program in one fenced block (what ``extraction.extract`` reads)."""
    return f"```python\n{program.strip()}\n```"


def _train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    """Byte-level BPE whose merges may span a whole line (never two): code is written in lines, so
    common lines become single tokens and a program is ~30 tokens instead of ~250. That makes
    sampling and training several times cheaper, which is what fits a run into minutes on a CPU.
    The prompts are among the training texts as often as the corpus uses them, so the built-in
    ones' lines are merged too; any text still encodes (byte fallback), only less compactly."""
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
    bpe.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, pad_token=PAD, padding_side="left")


def training_pairs(settings: DefaultModelSettings) -> list[tuple[str, str]]:
    """The (prompt, completion) pairs the model is primed on: each program in a fenced block, under its prompt."""
    samples = generate_samples(settings.programs, settings.seed, settings.corpus)
    return [(sample.prompt_text(), completion_text(sample.source)) for sample in samples]  # prompts cached there


def default_tokenizer(settings: DefaultModelSettings | None = None) -> Any:
    """The default model's tokenizer alone, trained as the build trains it (seconds, no model): to measure prompts."""
    settings = settings or DefaultModelSettings()
    return _train_tokenizer([text for pair in training_pairs(settings) for text in pair], settings.vocab_size)


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
    pairs = training_pairs(settings)
    tokenizer = _train_tokenizer([text for pair in pairs for text in pair], settings.vocab_size)
    prompt_ids = {prompt: tokenizer(prompt)["input_ids"] for prompt in dict.fromkeys(p for p, _ in pairs)}
    examples = [(prompt_ids[p], tokenizer(c)["input_ids"] + [tokenizer.eos_token_id]) for p, c in pairs]
    examples = [(p, c) for p, c in examples if len(p) + len(c) <= settings.max_positions]

    config = _config(settings, tokenizer)
    model = LlamaForCausalLM(config) if settings.architecture == "llama" else GptOssForCausalLM(config)
    _sft(model, examples, tokenizer.pad_token_id, settings)

    _save(model, tokenizer, path, {"builder_version": BUILDER_VERSION, **asdict(settings)})
    return path


def _save(model: Any, tokenizer: Any, path: Path, info: dict[str, Any]) -> None:
    """Written to a staging directory and renamed into place: a build killed half-way leaves nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=path.parent))
    try:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        with no_transformers_bars():  # "Writing model shards": the build has its own bar
            model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "stratagem.json").write_text(json.dumps(info))
        try:
            staging.rename(path)
        except OSError:  # another process finished the same build first: theirs is identical
            shutil.rmtree(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _sft(model: torch.nn.Module, examples: list[tuple[list[int], list[int]]], pad_id: int,
         settings: DefaultModelSettings, desc: str = "building the default model (SFT)") -> None:  # fmt: skip
    """Next-token loss on the completion only (the prompt is context), cosine-decayed AdamW. On a GPU where there
    is one: the gpt-oss build is 15+ minutes of CPU on 2 cores and under a minute on a GPU (same corpus, same
    steps; the weights differ from a CPU build's by float rounding)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
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
    batches: list[list[int]] = []
    bar = tqdm(range(settings.sft_steps), desc=desc, unit="step")
    for _ in bar:
        if not batches:
            batches = _length_batches(len(examples), [len(p) + len(c) for p, c in examples], settings.batch_size, rng)
        batch = [examples[i] for i in batches.pop()]
        width = max(len(p) + len(c) for p, c in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (prompt, completion) in enumerate(batch):  # right padding: positions start at 0 in every row
            row = prompt + completion
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
            labels[i, len(prompt) : len(row)] = torch.tensor(completion)
        loss = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.to("cpu").eval()


def _length_batches(n: int, lengths: list[int], size: int, rng: random.Random) -> list[list[int]]:
    """One epoch of batches (the last partial one dropped): shuffled, then sorted by length within windows of 16
    batches, so a batch holds examples of similar length and little of it is padding (the corpus mixes
    10-token and 150-token examples); the batches' order is shuffled again."""
    if n == 0:
        raise ValueError("no training example fits max_positions")
    size = min(size, n)
    order = rng.sample(range(n), n)
    window = 16 * size
    batches = []
    for start in range(0, n - size + 1, window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches += [chunk[i : i + size] for i in range(0, len(chunk) - size + 1, size)]
    rng.shuffle(batches)
    return batches
