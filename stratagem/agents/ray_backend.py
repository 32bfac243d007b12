"""``Runner(ray=...)``: each evaluation spread over a Ray cluster, with the local runner's results.

One actor per node (or ``RayCluster(actors=N)``: N of them) holds a local ``Runner``, so every node plays
programs in the same kernel sandbox: an actor whose node lacks a layer fails as the local runner does
(``SandboxUnavailable``), unless ``allow_weaker_sandbox`` says otherwise. An evaluation is cut into the
jobs the local runner would make with as many workers as the actors hold together (one program on
``seeds[part::parts]``), and each actor plays a share of them with ``Runner.evaluate(parts=, jobs=)``.
A job's episodes depend on its program, its seeds and the secret only (``envs/rng.py``), never on the
node or worker that plays it, so the results are the local runner's, field for field (``seconds`` aside:
it is a clock). The secret goes to the actors with the work, so every node plays this machine's games.

An actor that dies (its node lost, the OOM killer, ``ray.kill``) costs its unfinished jobs a replay on
another actor, and a fresh actor takes its place; a job lost ``MAX_ATTEMPTS`` times stops the run with
``WorkersKilled``, as a sandbox worker's would. An error inside an actor (a sandbox layer missing, every
environment server down) is raised here as itself. Recordings are written on the actor's node, sent back
and written here. Ray is optional (``pip install -e ".[ray]"``): it is imported only when used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stratagem.agents.results import EpisodeResult, ProgramResult
from stratagem.envs.spec import EnvSpec
from stratagem.sandbox.failures import WorkersKilled

INSTALL = "pip install -e \".[ray]\" in a checkout, or pip install 'stratagem[ray]'"
MAX_ATTEMPTS = 3  # a task whose actor died is played this many times at most
IN_FLIGHT = 2  # tasks queued on an actor at once: the next one is there when one ends
START_TIMEOUT_S = 120.0  # an actor not started by then: the cluster has no room for it
TICK_S = 0.05
ADDRESS_FORMS = "auto (a running cluster), local (start one on this machine), HOST:PORT or ray://HOST:PORT"
_ADDRESS = re.compile(r"^(ray://)?[\w.\-]+:\d{1,5}$|^(ray://)?\[[0-9a-fA-F:]+\]:\d{1,5}$")


class RayUnavailable(ValueError):
    """Ray is not installed here, or its cluster cannot be reached or used: the message says what to do."""


def check_address(text: str) -> str:
    """``text`` if it is a Ray address ``--ray`` takes; else ValueError naming the forms it takes."""
    if text in ("auto", "local") or _ADDRESS.match(text):
        return text
    raise ValueError(f"--ray takes {ADDRESS_FORMS}, got {text!r}")


def require_ray() -> Any:
    """The ``ray`` module; ``RayUnavailable`` (one line, what to install) where it is not installed."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable(f"--ray needs Ray, which is not installed here: {INSTALL}") from None
    return ray


@dataclass(frozen=True)
class RayCluster:
    """Where and how wide: ``address`` as ``--ray`` takes it; ``actors`` (None: one per node); ``workers``, the
    sandbox workers of each actor (None: the Runner's ``workers``, else the node's CPUs, else CPUs / actors)."""

    address: str = "auto"
    actors: int | None = None
    workers: int | None = None

    def __post_init__(self) -> None:
        check_address(self.address)
        for name in ("actors", "workers"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"RayCluster.{name} must be a positive integer or None, got {value!r}")


class SandboxActor:
    """The inside of one Ray actor: a local Runner (its own sandbox pool) on the actor's node, for every task."""

    def __init__(self, runner_class: type, spec: dict[str, Any], source: str | None, kwargs: dict[str, Any]) -> None:
        env = EnvSpec.model_validate(spec)
        if source:
            env.source = Path(source)
        self.runner = runner_class(env, **kwargs)

    def start(self) -> dict[str, Any]:
        """Start the sandbox now (``SandboxUnavailable`` where a layer is missing); what runs where."""
        import socket

        return {"sandbox": self.runner.sandbox, "host": socket.gethostname(), "pid": os.getpid(),
                "workers": self.runner.workers}  # fmt: skip

    def evaluate(self, completions: list[str], seeds: list[int], parts: int, jobs: list[tuple[int, int]],
                 record: bool) -> tuple[list[ProgramResult], dict[str, bytes]]:  # fmt: skip
        if not record:
            return self.runner.evaluate(completions, seeds, parts=parts, jobs=jobs), {}
        with tempfile.TemporaryDirectory(prefix="stratagem-ray-") as folder:
            results = self.runner.evaluate(completions, seeds, record=folder, parts=parts, jobs=jobs)
            return results, {path.name: path.read_bytes() for path in Path(folder).iterdir() if path.is_file()}


@dataclass(eq=False)
class _Slot:
    handle: Any
    workers: int
    options: dict[str, Any]  # how Ray places it (a replacement is placed alike)
    ready: Any = None  # the ``start`` call, until it answers
    info: dict[str, Any] | None = None
    tasks: int = 0
    dead: bool = False


@dataclass(eq=False)
class _Task:
    jobs: list[tuple[int, int]]  # (program index, part)
    attempts: int = 0
    indices: list[int] = field(default_factory=list)  # the programs sent, in order


class RayBackend:
    """The driver's side: actors started on first use, jobs handed out, dead actors replaced."""

    def __init__(self, cluster: str | RayCluster, runner_class: type, spec: EnvSpec, workers: int | None,
                 runner_kwargs: dict[str, Any]) -> None:  # fmt: skip
        self.cluster = cluster if isinstance(cluster, RayCluster) else RayCluster(check_address(cluster))
        self.ray = require_ray()
        self.runner_class, self.workers, self.kwargs = runner_class, workers, runner_kwargs
        self.spec = (spec.model_dump(mode="json"), str(spec.source) if spec.source else None)
        self._slots: list[_Slot] = []
        self._actor_class: Any = None
        self._owns = False  # whether this backend started the Ray connection (so ends it)
        self._replaced = 0  # actors replaced, over this backend's life (the run's record)
        self._replaced_now = 0  # ... during the current ``run``: bounded

    # --- actors -------------------------------------------------------------------------------------
    def _connect(self) -> None:
        ray, address = self.ray, self.cluster.address
        if ray.is_initialized():
            return
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            hint = " (start one with `ray start --head`, or use --ray local)" if address == "auto" else ""
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RayUnavailable(f"cannot connect to the Ray cluster at {address}: {first}{hint}") from None
        self._owns = True

    def _start(self, every: bool = False) -> list[_Slot]:
        """The actors, made on first use and then all started (their sandboxes up). Later, with replacements
        still starting, it waits for those only when ``every`` (or when no actor is ready)."""
        if not self._slots:
            self._create()
            every = True
        deadline = time.monotonic() + START_TIMEOUT_S
        while any(slot.info is None for slot in self._slots) if every else all(s.info is None for s in self._slots):
            starting = {slot.ready: slot for slot in self._slots if slot.info is None}
            done, _ = self.ray.wait(list(starting), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not done:
                raise RayUnavailable(self._no_room(len(starting)))
            self._started(starting[done[0]])
        return self._slots

    def _create(self) -> None:
        """One actor per node (or ``cluster.actors``), each asking for as many CPUs as it runs workers. Under
        torchrun every rank has a runner of its own on the one cluster: each takes 1/WORLD_SIZE of every node."""
        self._connect()
        nodes = [n for n in self.ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= 1]
        if not nodes:
            raise RayUnavailable(f"the Ray cluster at {self.cluster.address} has no live node with a CPU")
        ranks = int(os.environ["WORLD_SIZE"]) if os.environ.get("WORLD_SIZE", "").isdigit() else 1
        cpus = [max(1, int(node["Resources"]["CPU"]) // max(1, ranks)) for node in nodes]
        asked = self.cluster.workers or self.workers
        if self.cluster.actors is None:  # one per node, kept there (soft: a replacement may go elsewhere)
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            for node, count in zip(nodes, cpus, strict=True):
                workers = asked or count
                place = {"num_cpus": min(workers, count),
                         "scheduling_strategy": NodeAffinitySchedulingStrategy(node["NodeID"], soft=True)}  # fmt: skip
                self._slots.append(self._new(workers, place))
        else:
            workers = asked or max(1, sum(cpus) // self.cluster.actors)
            options = {"num_cpus": min(workers, max(cpus)), "scheduling_strategy": "SPREAD"}
            self._slots = [self._new(workers, options) for _ in range(self.cluster.actors)]

    def _new(self, workers: int, options: dict[str, Any]) -> _Slot:
        if self._actor_class is None:
            self._actor_class = self.ray.remote(SandboxActor)
        spec, source = self.spec
        actor = self._actor_class.options(max_restarts=0, max_concurrency=1, **options)
        handle = actor.remote(self.runner_class, spec, source, {**self.kwargs, "workers": workers})
        return _Slot(handle, workers, options, ready=handle.start.remote())

    def _started(self, slot: _Slot) -> None:
        """``slot``'s start answered: ready, or lost (replaced), or an error of the sandbox's (raised)."""
        try:
            slot.info = self._get(slot.ready)
            slot.workers, slot.ready = slot.info["workers"], None
        except _Lost:
            self._replace(slot)

    def _replace(self, slot: _Slot) -> None:
        if slot.dead:
            return
        slot.dead = True
        self._replaced, self._replaced_now = self._replaced + 1, self._replaced_now + 1
        if self._replaced_now > MAX_ATTEMPTS * max(1, len(self._slots)):
            raise WorkersKilled(
                f"Ray actors keep dying ({self._replaced_now} in this evaluation: a node lost, "
                "the OOM killer, a `ray.kill`); the run stops rather than blame the programs"
            )
        with contextlib.suppress(Exception):  # already gone
            self.ray.kill(slot.handle, no_restart=True)
        self._slots[self._slots.index(slot)] = self._new(slot.workers, slot.options)

    def _get(self, ref: Any) -> Any:
        """``ray.get``: an actor lost is ``_Lost``; an error raised inside it, itself."""
        from ray import exceptions as errors

        try:
            return self.ray.get(ref)
        except (errors.RayActorError, errors.WorkerCrashedError, errors.NodeDiedError, errors.ObjectLostError) as exc:
            raise _Lost(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__) from None
        except errors.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise

    def _no_room(self, count: int) -> str:
        need = max(int(slot.options.get("num_cpus", 1)) for slot in self._slots)
        return (f"{count} Ray actor(s) did not start within {START_TIMEOUT_S:g} s: the cluster at "
                f"{self.cluster.address} has no room for an actor of {need} CPUs (see `ray status`)")  # fmt: skip

    def sandbox(self, allow_weaker: bool) -> dict[str, Any]:
        """The sandbox on every node: a layer counts as applied only where every actor applied it."""
        infos = [slot.info for slot in self._start(every=True) if slot.info is not None]
        applied = {k: v for k, v in infos[0]["sandbox"]["applied"].items() if all(k in i["sandbox"]["applied"]
                                                                                 for i in infos)}  # fmt: skip
        missing = {k: v for info in infos for k, v in info["sandbox"]["missing"].items()}
        nodes = [{"host": info["host"], "pid": info["pid"], "workers": info["workers"]} for info in infos]
        ray = {"address": self.cluster.address, "actors": nodes, "actors_replaced": self._replaced}
        return {"applied": applied, "missing": missing, "allow_weaker": allow_weaker, "ray": ray}

    # --- one evaluation -----------------------------------------------------------------------------
    def run(self, completions: list[str], runnable: list[int], seeds: list[int], results: list[ProgramResult],
            record: str | Path | None, on_episode: Callable[[EpisodeResult], None] | None) -> None:  # fmt: skip
        """Play every runnable program on ``seeds`` over the actors, merging into ``results`` as tasks end."""
        self._replaced_now = 0
        slots = self._start()
        if not runnable:
            return
        try:
            self._run(slots, completions, runnable, seeds, results, record, on_episode)
        except Exception:  # the actors may still be busy with this evaluation's tasks: the next one starts afresh
            self.abandon()
            raise

    def _run(self, slots: list[_Slot], completions: list[str], runnable: list[int], seeds: list[int],
             results: list[ProgramResult], record: str | Path | None,
             on_episode: Callable[[EpisodeResult], None] | None) -> None:  # fmt: skip
        total = sum(slot.workers for slot in slots)
        parts = min(len(seeds), -(-total // len(runnable)))  # the local runner's split, at ``total`` workers
        fresh = deque((index, part) for index in runnable for part in range(parts))
        per_worker = max(1, len(fresh) // (total * IN_FLIGHT * 2))  # a few tasks an actor: balance, few round trips
        lost: deque[_Task] = deque()
        flying: dict[Any, tuple[_Slot, _Task]] = {}
        folder = Path(record) if record else None
        idle_since = time.monotonic()
        while fresh or lost or flying:
            for slot in self._slots:
                while slot.info is not None and not slot.dead and slot.tasks < IN_FLIGHT and (fresh or lost):
                    size = min(len(fresh), slot.workers * per_worker)
                    task = lost.popleft() if lost else _Task([fresh.popleft() for _ in range(size)])
                    flying[self._submit(slot, task, completions, seeds, parts, folder is not None)] = (slot, task)
                    slot.tasks += 1
            starting = {slot.ready: slot for slot in self._slots if slot.info is None and slot.ready is not None}
            if not flying and not starting:
                raise RuntimeError("no Ray actor to play on: none running and none starting")
            done, _ = self.ray.wait([*flying, *starting], num_returns=1, timeout=TICK_S)
            if flying or any(slot.info is not None for slot in self._slots):
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > START_TIMEOUT_S:
                raise RayUnavailable(self._no_room(len(starting)))
            for ref in done:
                if ref in starting:
                    self._started(starting[ref])
                    continue
                slot, task = flying.pop(ref)
                slot.tasks -= 1
                try:
                    task_results, files = self._get(ref)
                except _Lost as why:
                    task.attempts += 1
                    if task.attempts >= MAX_ATTEMPTS:
                        raise WorkersKilled(f"a task of {len(task.jobs)} job(s) lost its Ray actor {task.attempts} "
                                            f"times (last: {why}); the run stops rather than blame the programs"
                                            ) from None  # fmt: skip
                    lost.appendleft(task)
                    self._replace(slot)
                    continue
                self._merge(task, task_results, files, results, folder, on_episode)

    def _submit(self, slot: _Slot, task: _Task, completions: list[str], seeds: list[int], parts: int,
                record: bool) -> Any:  # fmt: skip
        """Only the task's programs travel; its jobs are renumbered to match."""
        task.indices = sorted({index for index, _ in task.jobs})
        local = {index: position for position, index in enumerate(task.indices)}
        return slot.handle.evaluate.remote([completions[i] for i in task.indices], seeds, parts,
                                           [(local[index], part) for index, part in task.jobs], record)  # fmt: skip

    @staticmethod
    def _merge(task: _Task, task_results: list[ProgramResult], files: dict[str, bytes], results: list[ProgramResult],
               folder: Path | None, on_episode: Callable[[EpisodeResult], None] | None) -> None:  # fmt: skip
        """A task's results into the evaluation's, as the local runner collects a job's."""
        for index, part in zip(task.indices, task_results, strict=True):
            result = results[index]
            if part.sha != result.sha:
                raise RuntimeError(f"a Ray actor read program {result.sha} as {part.sha}: the nodes run different "
                                   "versions of stratagem")  # fmt: skip
            result.episodes.extend(part.episodes)
            result.seconds += part.seconds
            if part.error is not None:
                result.error, result.message = part.error, part.message
            for episode in part.episodes if on_episode is not None else ():
                on_episode(episode)
        if files and folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            for name, data in files.items():
                (folder / Path(name).name).write_bytes(data)

    # --- the end ------------------------------------------------------------------------------------
    def abandon(self) -> None:
        """After an interrupt: end the actors now (their pools were mid-work); the next call starts afresh."""
        slots, self._slots = self._slots, []
        for slot in slots:
            with contextlib.suppress(Exception):  # already gone
                self.ray.kill(slot.handle, no_restart=True)

    def close(self) -> None:
        """End the actors (their sandbox pools end with them), and Ray itself where this backend started it."""
        self.abandon()
        if self._owns and self.ray.is_initialized():
            self.ray.shutdown()
        self._owns = False


class _Lost(Exception):
    """An actor was lost (died, its node gone): never the programs' doing."""
