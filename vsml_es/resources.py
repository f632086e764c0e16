"""Will it run? What the config alone cannot tell, checked before any work: the datasets are
prepared and fit the network, and one evaluation chunk fits in memory.

Shapes far beyond memory do not fail politely: XLA aborts the process. VSML keeps an LSTM state
(h and c) per connection for every member of a chunk, so its footprint is predictable.
"""

from __future__ import annotations

import math
import os
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from vsml_es.config import Config
from vsml_es.errors import ConfigError, UserError
from vsml_es.learners import Learner, build_learner, size_free_names
from vsml_es.tasks import (
    check_datasets_ready,
    check_metatest_fits,
    dataset_refs,
    parse_dataset_ref,
    ref_preprocess,
    split_size,
    static_num_features,
    training_feature_counts,
)

WORKING_SET = 4  # states, their update and the gate temporaries live at once (measured ~4x)
ES_COPIES = 4  # the driver holds the population, its noise, and tell's temporaries
RUNTIME_BYTES = 1 << 30  # JAX, XLA and Python themselves (measured ~0.8 GB)
HEADROOM = 0.85  # of the memory available: the rest is for what the estimate leaves out
EVAL_BATCH = 16  # episodes per jitted meta-test call (metatest.EVAL_BATCH)
# Inner learning steps one command may run: beyond this it runs for days on any machine.
MAX_METATEST_STEPS = 10**9  # metatest.steps x metatest.episodes, per dataset and learner
MAX_TRAINING_STEPS = 10**13  # generations x population x episode length
# Examples per split of the registered datasets (upper bounds; generated ones are made to
# order): what a loaded dataset holds in memory, preprocessed to float32.
EXAMPLES = {"cifar10": 60_000, "emnist": 131_600, "emnist_byclass": 814_255,
            "fashion_mnist": 70_000, "kmnist": 70_000, "mnist": 70_000, "omniglot": 32_460,
            "svhn_cropped": 99_289, "digits": 1_797, "mnist1d": 5_000}
DEFAULT_EXAMPLES = 70_000


def _meminfo(key: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    return None


def _address_space_left() -> int | None:
    """What RLIMIT_AS (ulimit -v) still allows this process to map."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ValueError, OSError):
        return None
    if soft == resource.RLIM_INFINITY:
        return None
    used = 0
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                used = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return max(soft - used, 0)


def available_memory() -> tuple[int | None, str]:
    """(bytes, what limits them): the smallest of this machine's available memory, the
    container's limit and what RLIMIT_AS leaves; env VSML_ES_MEMORY_BYTES overrides (tests)."""
    forced = os.environ.get("VSML_ES_MEMORY_BYTES")
    if forced and forced.isdigit():
        return int(forced), "VSML_ES_MEMORY_BYTES"
    found = [(n, why) for n, why in (
        (_meminfo("MemAvailable") or physical_memory(), "this machine's available memory"),
        (_cgroup_limit(), "the container's memory limit"),
        (_address_space_left(), "what the address-space limit (ulimit -v) leaves"),
    ) if n is not None]
    return min(found) if found else (None, "")


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


@dataclass
class Need:
    """One part of a command's memory: its bytes, what it is and the knob that lowers it."""

    bytes: int
    what: str
    knob: str


def check_needs(needs: list[Need], command: str) -> None:
    """Refuse, before any work, a command whose estimated memory exceeds what is available."""
    total, why = available_memory()
    if total is None:
        return
    need = RUNTIME_BYTES + sum(n.bytes for n in needs)
    if need <= HEADROOM * total:
        return
    largest = max(needs, key=lambda n: n.bytes)
    parts = "; ".join(f"{n.what} {_gib(n.bytes)}" for n in sorted(
        needs, key=lambda n: -n.bytes) if n.bytes >= 2**26)
    raise ConfigError(
        f"{command} would need about {_gib(need)} of memory ({parts}), more than "
        f"{why} ({_gib(total)}). The largest part is {largest.what}: lower {largest.knob}."
    )


# --------------------------------------------------------------------------------------------
# Sizes derived from the computation: the learner's own parameter and state shapes.


def _tree_bytes(tree: Any) -> int:
    return int(sum(math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize
                   for leaf in jax.tree.leaves(tree)))


@dataclass(frozen=True)
class _Sizes:
    num_features: int
    num_outputs: int
    input_shape: tuple[int, ...]


def learner_bytes(learner: Learner, num_features: int, num_outputs: int,
                  input_shape: tuple[int, ...] | None = None) -> tuple[int, int]:
    """(parameter bytes, one learner's episode-state bytes), from the shapes its ``init``
    makes (``jax.eval_shape``: nothing is allocated). A learner that cannot be traced here
    counts as VSML's per-connection LSTM states would."""
    key = jax.random.key(0)
    shape = tuple(input_shape) if input_shape else (num_features,)
    sizes = _Sizes(num_features, num_outputs, shape)
    try:
        params = jax.eval_shape(lambda: learner.init_params(key, num_features, num_outputs))
        state = jax.eval_shape(lambda p: learner.make_for(p, sizes)[0](key), params)
        return _tree_bytes(params), _tree_bytes(state)
    except Exception:  # noqa: BLE001 (a plugin learner's own limits; estimate, never fail)
        return 0, num_features * num_outputs * 16 * 2 * 4


def vsml_chunk_bytes(config: Config, num_features: int) -> int:
    """Bytes of the per-connection states of one chunk of members (float32 h and c)."""
    sizes = [num_features, *config.model.hidden_layers, config.task.num_classes]
    connections = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    return config.training.eval_chunk * connections * config.model.state_size * 2 * 4


def dataset_bytes(ref_name: str, num_features: int) -> int:
    return EXAMPLES.get(ref_name, DEFAULT_EXAMPLES) * num_features * 4


def training_needs(config: Config, num_features: int) -> list[Need]:
    tr, task = config.training, config.task
    learner = build_learner(config.model.learner, config)
    param_bytes, state_bytes = learner_bytes(learner, num_features, task.num_classes)
    members = tr.eval_chunk
    workers = config.distributed.workers or 1
    names = [parse_dataset_ref(ref, task.split)[0] for ref in (task.mixture or (task.dataset,))]
    return [
        Need(tr.population_size * param_bytes * ES_COPIES,
             f"the ES population ({tr.population_size} x {param_bytes // 4:,} parameters)",
             "training.population_size"),
        Need(workers * members * (state_bytes * WORKING_SET + task.episode_length * 8),
             f"{'each of ' + str(workers) + ' workers: ' if workers > 1 else ''}one evaluation "
             f"chunk ({members} members' episode states)",
             "training.eval_chunk (or the layer sizes: model.hidden_layers, the input size)"),
        Need(sum(dataset_bytes(name, num_features) for name in names),
             "the meta-training data", "the input size (task.preprocess.resize)"),
    ]


def metatest_needs(config: Config, num_features: int | None = None,
                   learners: tuple[str, ...] | None = None,
                   steps: int | None = None, episodes: int | None = None) -> list[Need]:
    """Per meta-test dataset (they run one after the other): the largest one counts."""
    mt, task = config.metatest, config.task
    steps = steps or mt.steps
    episodes = episodes or mt.episodes
    names = tuple(learners or (config.model.learner,)) + tuple(mt.baselines)
    worst: list[Need] = []
    for path, ref, name, _ in dataset_refs(task, mt):
        if not path.startswith("metatest."):
            continue
        try:
            n = static_num_features(path, name, ref_preprocess(ref, mt.preprocess))
        except UserError:
            continue  # check_metatest_fits says what is wrong with it
        features = n if split_size(ref)[1] is not None or num_features is None else num_features
        states = 0
        for label in names:
            try:
                learner = build_learner(label, config)
            except UserError:
                continue
            states = max(states, learner_bytes(learner, features, task.num_classes)[1])
        needs = [
            Need(min(EVAL_BATCH, episodes) * states * WORKING_SET,
                 f"meta-testing on {ref} ({min(EVAL_BATCH, episodes)} episodes at once)",
                 f"the input size of {ref} (its @HxW or metatest.preprocess.resize)"),
            Need(len(names) * steps * episodes * 2 * 4,
                 f"the learning curves ({steps:,} steps x {episodes:,} episodes)",
                 "--steps or --episodes (metatest.steps, metatest.episodes)"),
            Need(dataset_bytes(name, n), f"{ref} at its input size",
                 f"the input size of {ref}"),
        ]
        if sum(x.bytes for x in needs) > sum(x.bytes for x in worst):
            worst = needs
    return worst


def check_metatest_work(config: Config, steps: int | None = None,
                        episodes: int | None = None) -> None:
    mt = config.metatest
    steps, episodes = steps or mt.steps, episodes or mt.episodes
    if steps * episodes > MAX_METATEST_STEPS:
        raise ConfigError(
            f"A meta-test of {steps:,} steps x {episodes:,} episodes is {steps * episodes:,} "
            f"learning steps per dataset and learner, more than {MAX_METATEST_STEPS:,} (days "
            "of compute). Lower --steps or --episodes (metatest.steps, metatest.episodes).")


def check_training_work(config: Config) -> None:
    tr = config.training
    work = tr.generations * tr.population_size * config.task.episode_length
    if work > MAX_TRAINING_STEPS:
        raise ConfigError(
            f"Meta-training {tr.generations:,} generations x {tr.population_size:,} members x "
            f"{config.task.episode_length:,} steps is {work:,} learning steps, more than "
            f"{MAX_TRAINING_STEPS:,} (years of compute). Lower training.generations, "
            "training.population_size or task.episode_length.")


def check_fits(config: Config, num_features: int) -> None:
    """Refuse meta-training whose working set (ES population, one evaluation chunk, the data)
    exceeds this machine's memory (on a cluster the workers' memory is theirs to judge: the
    driver's share is checked)."""
    check_training_work(config)
    needs = training_needs(config, num_features)
    if config.distributed.address is not None:
        needs = needs[:1]
    check_needs(needs, "Meta-training")


def check_evaluate(config: Config, num_features: int | None, learners: tuple[str, ...],
                   steps: int | None = None, episodes: int | None = None,
                   command: str = "The meta-test") -> None:
    """Time and memory of a meta-test (evaluate, introspect, the end of train), before any
    output."""
    check_metatest_work(config, steps, episodes)
    check_needs(metatest_needs(config, num_features, learners, steps, episodes), command)


def check_learner_fits(learner: Learner, num_inputs: int, num_outputs: int,
                       what: str) -> None:
    """One learner of a learner file (its size-dependent states) fits in memory."""
    _, state = learner_bytes(learner, num_inputs, num_outputs)
    check_needs([Need(state * WORKING_SET, f"one learner's states ({num_inputs} inputs x "
                      f"{num_outputs} outputs)", "nothing: the file asks for too much")], what)


def check_before_work(config: Config, metatest: bool = True,
                      learners: tuple[str, ...] | None = None,
                      given_size_free: tuple[str, ...] = ()) -> None:
    """Datasets prepared and fitting, memory enough: before Ray starts or data loads.
    ``learners``: the meta-learners to be meta-tested (default ``model.learner``);
    ``given_size_free``: labels of learners from files (compare.pretrained) that run at any
    input size."""
    check_datasets_ready(config.task, config.metatest if metatest else None)
    if metatest:
        size_free = size_free_names(config, learners or (config.model.learner,)) or ()
        check_metatest_fits(config.task, config.metatest,
                            size_free=(*size_free, *given_size_free) or None)
    check_fits(config, max(training_feature_counts(config.task)))  # the largest input size
    if metatest:
        check_evaluate(config, None, learners or (config.model.learner,))
