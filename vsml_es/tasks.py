"""Episodes as pure, key-driven functions of in-memory dataset arrays.

An episode is described by a small spec drawn from a key (which examples, which label
permutation); each online step gathers and preprocesses one example inside the jitted scan.
So memory does not grow with the episode length, and any worker can rebuild the exact episode
from (seed, generation, episode id) without receiving data.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from vsml_es import preprocess as pre
from vsml_es.config import MetaTestConfig, ModelConfig, PreprocessConfig, TaskConfig
from vsml_es.data import ArrayDataset, dataset_status, get_spec, load_dataset
from vsml_es.data.official_stats import OFFICIAL_STATS, official_stats
from vsml_es.errors import DatasetError

_TRANSFORM_TAG = 7  # folded into the episode key for the input transforms (keeps other streams)


class TaskData(NamedTuple):
    """Device arrays of one dataset split; passed to jitted functions as arguments."""

    x: jax.Array  # [N, ...] stored values
    y: jax.Array  # [N] int32


class EpisodeSpec(NamedTuple):
    indices: jax.Array  # [T] example indices into TaskData
    label_perm: jax.Array  # [dataset_classes] label permutation
    transform: pre.InputTransform | None = None  # per-episode pixel shuffle / projection


@dataclass(frozen=True)
class Task:
    """Static description of an episode distribution (hashable: a jit static argument)."""

    name: str
    num_examples: int
    num_features: int
    dataset_classes: int
    num_outputs: int  # network output size (>= dataset_classes)
    episode_length: int
    permute_labels: bool
    mean: float
    std: float
    preprocess: PreprocessConfig = PreprocessConfig()
    transforms: bool = True  # draw per-episode input transforms (a mixture draws its own)
    input_shape: tuple[int, ...] = ()  # one preprocessed example before flattening
    # task.per_dataset_outputs: outputs beyond dataset_classes are masked (see live_outputs)
    mask_outputs: bool = False
    # Few-shot episodes (task.ways > 0; see ``fewshot_episode``): the examples are sorted by
    # class, class c at [class_starts[c], class_starts[c] + class_counts[c]). Static, so the
    # episode draw needs no data (any worker rebuilds it from its key alone).
    ways: int = 0
    shots: int = 0
    class_starts: tuple[int, ...] = ()
    class_counts: tuple[int, ...] = ()

    @property
    def parts(self) -> tuple[Task, ...]:
        """The single-dataset tasks this task draws from (itself)."""
        return (self,)

    def live_outputs(self, spec: EpisodeSpec) -> jax.Array | None:
        """Outputs this episode uses: the dataset's classes when masking, else None (all)."""
        del spec
        used = self.ways or self.dataset_classes
        if not self.mask_outputs or used == self.num_outputs:
            return None
        return jnp.asarray(used, jnp.int32)

    def with_episode_length(self, steps: int) -> Task:
        if self.ways and steps != self.ways * self.shots + 1:
            raise DatasetError(fewshot_length_message(self.ways, self.shots, steps))
        return dataclasses.replace(self, episode_length=steps)

    def episode(self, key: jax.Array) -> EpisodeSpec:
        if self.ways:
            return self.fewshot_episode(key)
        k_idx, k_perm = jax.random.split(key)
        if self.episode_length <= self.num_examples:
            # Without replacement: a held-out stream never repeats an example.
            indices = pre.sample_without_replacement(k_idx, self.num_examples,
                                                     self.episode_length)
        else:
            indices = jax.random.randint(k_idx, (self.episode_length,), 0, self.num_examples)
        if self.permute_labels:
            perm = pre.permute_labels(k_perm, self.dataset_classes)
        else:
            perm = jnp.arange(self.dataset_classes, dtype=jnp.int32)
        transform = None
        if self.transforms and pre.has_transforms(self.preprocess):
            transform = pre.episode_transform(jax.random.fold_in(key, _TRANSFORM_TAG),
                                              self.preprocess, self.num_features)
        return EpisodeSpec(indices.astype(jnp.int32), perm, transform)

    def fewshot_episode(self, key: jax.Array) -> EpisodeSpec:
        """A few-shot episode as the official ``omniglot_fewshot`` dataset builds it: ``ways``
        distinct classes with ``shots + 1`` distinct examples each; the ``ways * shots``
        support examples in one shuffled sequence, then the first example of one class drawn
        uniformly as the query (never one of the support examples). Labels are the classes'
        order of first appearance in the support (official: ``tf.unique``), so the query's
        label is where its class first appeared; with ``permute_labels`` a random permutation
        of the ``ways`` labels on top. The same EpisodeSpec as any episode: ``example`` and
        everything downstream stay as they are."""
        n, k = self.ways, self.shots
        k_cls, k_ex, k_order, k_query, k_perm = jax.random.split(key, 5)
        classes = pre.sample_without_replacement(k_cls, self.dataset_classes, n)
        starts = jnp.asarray(self.class_starts, jnp.int32)[classes]
        counts = jnp.asarray(self.class_counts, jnp.int32)[classes]
        largest = max(self.class_counts)
        scores = jax.random.uniform(k_ex, (n, largest))
        scores = jnp.where(jnp.arange(largest) < counts[:, None], scores, -1.0)
        picks = jax.lax.top_k(scores, k + 1)[1]  # k + 1 distinct examples of each class
        examples = starts[:, None] + picks.astype(jnp.int32)
        order = jax.random.permutation(k_order, n * k)
        support = examples[:, 1:].reshape(-1)[order]
        owner = jnp.repeat(jnp.arange(n), k)[order]  # which drawn class each support step shows
        query = examples[jax.random.randint(k_query, (), 0, n), 0]
        first_seen = jnp.full((n,), n * k).at[owner].min(jnp.arange(n * k))
        labels = jnp.argsort(jnp.argsort(first_seen))  # rank of first appearance
        if self.permute_labels:
            labels = pre.permute_labels(k_perm, n)[labels]
        perm = jnp.zeros((self.dataset_classes,), jnp.int32).at[classes].set(
            labels.astype(jnp.int32))
        transform = None
        if self.transforms and pre.has_transforms(self.preprocess):
            transform = pre.episode_transform(jax.random.fold_in(key, _TRANSFORM_TAG),
                                              self.preprocess, self.num_features)
        indices = jnp.concatenate([support, query[None]]).astype(jnp.int32)
        return EpisodeSpec(indices, perm, transform)

    def example(
        self, data: TaskData, spec: EpisodeSpec, t: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """The t-th (features, label) of the episode, preprocessed and flattened."""
        i = spec.indices[t]
        x = pre.prepare_example(data.x[i], self.preprocess, self.mean, self.std)
        if spec.transform is not None:
            x = pre.apply_transform(x, spec.transform)
        y = spec.label_perm[data.y[i]]
        return x, y


class EpisodeSource(Protocol):
    """What learners, evaluators and meta-tests need of a task: :class:`Task` (one dataset)
    and :class:`MixtureTask` (several) both provide it. Hashable: a static jit argument."""

    name: str

    @property
    def num_features(self) -> int: ...
    @property
    def num_outputs(self) -> int: ...
    @property
    def episode_length(self) -> int: ...
    @property
    def parts(self) -> tuple[Task, ...]: ...
    @property
    def input_shape(self) -> tuple[int, ...]: ...
    def with_episode_length(self, steps: int) -> EpisodeSource: ...
    def episode(self, key: jax.Array) -> NamedTuple: ...
    def example(self, data, spec, t: jax.Array) -> tuple[jax.Array, jax.Array]: ...


# The device arrays of a task: one TaskData, or one per dataset of a mixture.
Data = TaskData | tuple[TaskData, ...]


class MixtureSpec(NamedTuple):
    choice: jax.Array  # which dataset this episode comes from
    parts: tuple[EpisodeSpec, ...]  # an episode of every dataset; ``choice`` picks one
    transform: pre.InputTransform | None


@dataclass(frozen=True)
class MixtureTask:
    """Episodes from one of several datasets, drawn per episode with the given weights.

    Same interface as :class:`Task`; its data is a tuple with one TaskData per dataset. All
    datasets are preprocessed to the same number of features (checked when built).
    """

    name: str
    parts: tuple[Task, ...]
    weights: tuple[float, ...]
    preprocess: PreprocessConfig

    @property
    def num_features(self) -> int:
        return self.parts[0].num_features

    @property
    def num_outputs(self) -> int:
        return self.parts[0].num_outputs

    @property
    def episode_length(self) -> int:
        return self.parts[0].episode_length

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.parts[0].input_shape

    def with_episode_length(self, steps: int) -> MixtureTask:
        return dataclasses.replace(
            self, parts=tuple(part.with_episode_length(steps) for part in self.parts))

    def episode(self, key: jax.Array) -> MixtureSpec:
        k_choice, k_parts = jax.random.split(key)
        p = jnp.asarray(self.weights, jnp.float32) / sum(self.weights)
        choice = jax.random.choice(k_choice, len(self.parts), p=p)
        parts = tuple(part.episode(jax.random.fold_in(k_parts, j))
                      for j, part in enumerate(self.parts))
        transform = None
        if pre.has_transforms(self.preprocess):
            transform = pre.episode_transform(jax.random.fold_in(key, _TRANSFORM_TAG),
                                              self.preprocess, self.num_features)
        return MixtureSpec(choice.astype(jnp.int32), parts, transform)

    def live_outputs(self, spec: MixtureSpec) -> jax.Array | None:
        """The class count of the dataset this episode draws from, when its parts mask."""
        if not any(p.live_outputs(p_spec) is not None
                   for p, p_spec in zip(self.parts, spec.parts, strict=True)):
            return None
        counts = jnp.asarray([p.dataset_classes if p.mask_outputs else p.num_outputs
                              for p in self.parts], jnp.int32)
        return counts[spec.choice]

    def example(
        self, data: tuple[TaskData, ...], spec: MixtureSpec, t: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        branches = [
            (lambda d, s, step, j=j: self.parts[j].example(d[j], s[j], step))
            for j in range(len(self.parts))
        ]
        x, y = jax.lax.switch(spec.choice, branches, data, spec.parts, t)
        if spec.transform is not None:
            x = pre.apply_transform(x, spec.transform)
        return x, y


def parse_dataset_ref(ref: str, default_split: str) -> tuple[str, str]:
    """'NAME', 'NAME:SPLIT', either with an '@HxW' size (see ``split_size``)."""
    name, _, split = split_size(ref)[0].partition(":")
    return name, split or default_split


def split_size(ref: str) -> tuple[str, tuple[int, int] | None]:
    """'fashion_mnist:test@28x28' -> ('fashion_mnist:test', (28, 28)): a meta-test dataset at
    its own image size, for learners whose parameters do not depend on the input size (VSML,
    SGD/Adam). Without a size the dataset takes ``metatest.preprocess`` as it is."""
    base, at, size = ref.partition("@")
    if not at:
        return ref, None
    height, x, width = size.partition("x")
    if not (x and height.isdigit() and width.isdigit() and 0 < int(height) <= 4096
            and 0 < int(width) <= 4096):
        raise DatasetError(
            f"Dataset reference '{ref}': the part after '@' must be an image size HEIGHTxWIDTH "
            "(each 1-4096), e.g. 'fashion_mnist:test@28x28'."
        )
    return base, (int(height), int(width))


def ref_preprocess(ref: str, preprocess: PreprocessConfig) -> PreprocessConfig:
    """``preprocess`` with the ref's own '@HxW' size, if it has one."""
    size = split_size(ref)[1]
    return preprocess if size is None else dataclasses.replace(preprocess, resize=size)


def task_at_size(task: TaskConfig, size: tuple[int, ...]) -> TaskConfig:
    """The meta-training task resampled to images of ``size`` (1-D signals to as many points):
    baselines meta-tested at another input size are tuned on these streams, not the test's."""
    cfg = task.preprocess
    if cfg.pad_to:
        raise DatasetError("task.preprocess.pad_to fixes the training input shape, so the "
                           "meta-training streams cannot be resampled to another size.")
    resized = dataclasses.replace(cfg, resize=tuple(size),
                                  signal_length=math.prod(size) if cfg.signal_length else 0)
    return dataclasses.replace(task, preprocess=resized, input_sizes=())


def primary_size(task: TaskConfig) -> TaskConfig:
    """The task at its first ``input_sizes`` entry (itself without them): the one input size
    that single-stream uses see (tuning baselines, the network's recorded input size)."""
    return task_at_size(task, task.input_sizes[0]) if task.input_sizes else task


def sized_tasks(task: TaskConfig) -> tuple[TaskConfig, ...]:
    """The task at each of its ``input_sizes`` (itself alone without them)."""
    return tuple(task_at_size(task, size) for size in task.input_sizes) or (task,)


def make_task(
    dataset: ArrayDataset,
    episode_length: int,
    num_outputs: int,
    permute_labels: bool,
    preprocess: PreprocessConfig | None = None,
    transforms: bool = True,
    fewshot: tuple[int, int] = (0, 0),
) -> tuple[Task, TaskData]:
    """``dataset`` as a task; ``fewshot`` (ways, shots), ways > 0: few-shot episodes."""
    cfg = preprocess or PreprocessConfig()
    x, y, classes = dataset.x, dataset.y, dataset.num_classes
    if cfg.classes:
        x, y = pre.filter_classes(x, y, tuple(cfg.classes), classes, dataset.name)
        classes = len(cfg.classes)
    ways, shots = fewshot
    layout: dict[str, object] = {}
    if ways:
        if episode_length != ways * shots + 1:
            raise DatasetError(fewshot_length_message(ways, shots, episode_length))
        if ways > num_outputs:
            raise DatasetError(
                f"task.ways is {ways} but the network has {num_outputs} outputs. Set "
                f"task.num_classes to at least {ways}."
            )
        x, y, counts = fewshot_layout(x, y, ways, shots, f"{dataset.name}:{dataset.split}")
        classes = len(counts)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        layout = dict(ways=ways, shots=shots, class_starts=tuple(int(s) for s in starts),
                      class_counts=tuple(int(c) for c in counts))
    elif classes > num_outputs:
        raise DatasetError(
            f"Dataset '{dataset.name}' has {classes} classes but the network has "
            f"{num_outputs} outputs. Set task.num_classes to at least {classes}."
        )
    shape = pre.output_shape(dataset.name, dataset.example_shape, cfg)
    mean, std = float(dataset.mean), float(dataset.std) or 1.0
    if cfg.normalize == "official":
        mean, std = official_stats(dataset.name, x.dtype == np.uint8)
    task = Task(
        name=f"{dataset.name}:{dataset.split}",
        num_examples=len(x),
        num_features=math.prod(shape),
        dataset_classes=classes,
        num_outputs=num_outputs,
        episode_length=episode_length,
        permute_labels=permute_labels,
        mean=mean,
        std=std,
        preprocess=cfg,
        transforms=transforms,
        input_shape=tuple(shape),
        **layout,  # type: ignore[arg-type]
    )
    data = TaskData(jnp.asarray(x), jnp.asarray(y, dtype=jnp.int32))
    return task, data


def fewshot_length_message(ways: int, shots: int, steps: int) -> str:
    return (f"A few-shot episode of task.ways {ways} and task.shots {shots} has "
            f"{ways} x {shots} support steps and one query: {ways * shots + 1} steps, but "
            f"{steps} were asked for. Set task.episode_length and metatest.steps to "
            f"{ways * shots + 1} (official omniglot.yaml: episode_length 6 for 5 ways, 1 shot).")


def fewshot_layout(x: np.ndarray, y: np.ndarray, ways: int, shots: int,
                   name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The examples sorted by class, the classes present renumbered 0..C-1 in label order,
    and each class's count: a few-shot episode then draws classes and examples from static
    offsets. Every class needs shots + 1 examples (the support and a distinct query)."""
    present, compact, counts = np.unique(y, return_inverse=True, return_counts=True)
    if len(present) < ways:
        raise DatasetError(f"Dataset '{name}' has {len(present)} classes, too few for "
                           f"task.ways {ways}. Lower task.ways or use a dataset with more "
                           "classes.")
    if counts.min() < shots + 1:
        few = present[counts < shots + 1][:5].tolist()
        raise DatasetError(
            f"Dataset '{name}': class(es) {few} have fewer than task.shots + 1 = {shots + 1} "
            f"examples (a few-shot episode shows {shots} of a class and queries a different "
            f"one; the smallest class has {counts.min()}). Lower task.shots."
        )
    order = np.argsort(compact, kind="stable")
    return x[order], compact[order].astype(np.int32), counts


def load_task(
    ref: str,
    default_split: str,
    episode_length: int,
    num_outputs: int,
    permute_labels: bool = True,
    data_dir: str | None = None,
    num_features: int | None = None,
    preprocess: PreprocessConfig | None = None,
    fewshot: tuple[int, int] = (0, 0),
) -> tuple[Task, TaskData]:
    """Load a dataset by reference and wrap it as a task; checks the input size fits."""
    name, split = parse_dataset_ref(ref, default_split)
    dataset = load_dataset(name, split, data_dir)
    task, data = make_task(dataset, episode_length, num_outputs, permute_labels, preprocess,
                           fewshot=fewshot)
    if num_features is not None and task.num_features != num_features:
        raise DatasetError(
            f"Dataset '{ref}' has {task.num_features} input features (shape "
            f"{dataset.example_shape}) but the meta-learned network was built for "
            f"{num_features}. Choose a dataset with {num_features} features or preprocess it "
            "to that size (e.g. metatest.preprocess.resize or pad_to)."
        )
    return task, data


def load_mixture_task(
    refs: tuple[str, ...],
    weights: tuple[float, ...],
    default_split: str,
    episode_length: int,
    num_outputs: int,
    permute_labels: bool = True,
    data_dir: str | None = None,
    preprocess: PreprocessConfig | None = None,
    class_subsets: tuple[tuple[int, ...], ...] = (),
) -> tuple[MixtureTask, tuple[TaskData, ...]]:
    """Several datasets, one drawn per episode; all must preprocess to one input size. With
    ``class_subsets`` (task.class_subsets) every dataset is split into one part per subset,
    the dataset's weight shared equally between its subsets."""
    cfg = preprocess or PreprocessConfig()
    weights = tuple(float(w) for w in weights) or (1.0,) * len(refs)
    parts, datas, shapes, part_weights = [], [], [], []
    for ref, weight in zip(refs, weights, strict=True):
        name, split = parse_dataset_ref(ref, default_split)
        dataset = load_dataset(name, split, data_dir)
        for subset in class_subsets or ((),):
            sub_cfg = dataclasses.replace(cfg, classes=subset) if subset else cfg
            task, data = make_task(dataset, episode_length, num_outputs, permute_labels, sub_cfg,
                                   transforms=False)
            parts.append(task)
            datas.append(data)
            part_weights.append(weight / len(class_subsets or ((),)))
            shapes.append(f"{ref}: {dataset.example_shape} -> {task.num_features}")
    if len({p.num_features for p in parts}) > 1:
        raise DatasetError(
            "The datasets of task.mixture preprocess to different input sizes ("
            + "; ".join(shapes) + "). Give them a common shape with task.preprocess.resize "
            "and/or task.preprocess.pad_to."
        )
    name = "mixture(" + ",".join(p.name for p in parts) + ")"
    return MixtureTask(name, tuple(parts), tuple(part_weights), cfg), tuple(datas)


def with_output_mask(task: Task | MixtureTask, on: bool) -> Task | MixtureTask:
    """``task`` whose episodes mask the outputs beyond their dataset's classes when ``on``
    (task.per_dataset_outputs)."""
    if not on:
        return task
    if isinstance(task, MixtureTask):
        return dataclasses.replace(task, parts=tuple(dataclasses.replace(p, mask_outputs=True)
                                                     for p in task.parts))
    return dataclasses.replace(task, mask_outputs=True)


def build_task(config: TaskConfig) -> tuple[Task | MixtureTask, Data]:
    """The meta-training task of ``config``: one dataset, or a mixture (at the first of
    ``input_sizes``; ``vsml_es.multisize`` builds the others)."""
    config = primary_size(config)
    if config.mixture or config.class_subsets:
        task, data = load_mixture_task(config.mixture or (config.dataset,),
                                       config.mixture_weights, config.split,
                                       config.episode_length, config.num_classes,
                                       config.permute_labels, config.data_dir,
                                       config.preprocess, config.class_subsets)
    else:
        task, data = load_task(config.dataset, config.split, config.episode_length,
                               config.num_classes, config.permute_labels, config.data_dir,
                               preprocess=config.preprocess,
                               fewshot=(config.ways, config.shots))
    return with_output_mask(task, config.per_dataset_outputs), data


def load_metatest_task(ref: str, task: TaskConfig, metatest: MetaTestConfig, steps: int,
                       num_features: int | None) -> tuple[Task, TaskData]:
    """One meta-test dataset, shaped like the meta-training task (its outputs, permutation).
    A ref with an '@HxW' size keeps its own input size (``num_features`` is not imposed)."""
    sized = split_size(ref)[1] is not None
    loaded, data = load_task(ref, "test", steps, task.num_classes, task.permute_labels,
                             task.data_dir, None if sized else num_features,
                             preprocess=ref_preprocess(ref, metatest.preprocess),
                             fewshot=(task.ways, task.shots))
    loaded = with_output_mask(loaded, task.per_dataset_outputs)
    return dataclasses.replace(loaded, name=ref) if sized else loaded, data


def dataset_refs(task: TaskConfig,
                 metatest: MetaTestConfig) -> list[tuple[str, str, str, str]]:
    """(config key, reference, name, split) of every dataset a config names, training and
    meta-test."""
    refs = ([(f"task.mixture[{i}]", ref) for i, ref in enumerate(task.mixture)] if task.mixture
            else [("task.dataset", task.dataset)])
    refs += [(f"metatest.datasets[{i}]", ref) for i, ref in enumerate(metatest.datasets)]
    out = []
    for path, ref in refs:
        name, split = parse_dataset_ref(ref, task.split if path.startswith("task") else "test")
        out.append((path, ref, name, split))
    return out


def check_dataset_refs(task: TaskConfig, metatest: MetaTestConfig) -> None:
    """Names, splits, class counts and input sizes of every dataset, from the registry alone
    (no loading): a meta-test dataset that cannot reach the network's inputs fails here."""
    features: dict[str, int] = {}
    for path, ref, name, split in dataset_refs(task, metatest):
        try:
            spec = get_spec(name)
        except DatasetError as err:
            raise DatasetError(f"Config key '{path}': {err}") from None
        if split not in spec.splits:
            raise DatasetError(f"Config key '{path}' names split '{split}' of '{name}', which "
                               f"has the splits {', '.join(spec.splits)}.")
        pre_cfg = task.preprocess if path.startswith("task") else metatest.preprocess
        if pre_cfg.normalize == "official" and name not in OFFICIAL_STATS:
            section = path.split(".")[0]
            raise DatasetError(f"Config key '{path}' names '{name}', which has no official "
                               f"normalization constants, but {section}.preprocess.normalize "
                               "is 'official'. Constants exist for "
                               f"{', '.join(sorted(OFFICIAL_STATS))}; use normalize: dataset "
                               "for the others.")
        if path.startswith("task") and "@" in ref:
            raise DatasetError(f"Config key '{path}': an '@HxW' size is for meta-test datasets; "
                               "size the meta-training data with task.preprocess.resize.")
        if pre_cfg.classes:
            too_big = [c for c in pre_cfg.classes if c >= spec.num_classes]
            if too_big:
                raise DatasetError(
                    f"{path.split('.')[0]}.preprocess.classes keeps classes {too_big}, but "
                    f"'{name}' has only classes 0..{spec.num_classes - 1}."
                )
        classes = len(pre_cfg.classes) or spec.num_classes
        if task.ways:  # a few-shot episode has task.ways classes, whatever the dataset has
            if classes < task.ways:
                raise DatasetError(f"Dataset '{name}' ({path}) has {classes} classes, too "
                                   f"few for task.ways {task.ways}.")
            classes = task.ways
        if path.startswith("task") and task.class_subsets:
            too_big = sorted({c for s in task.class_subsets for c in s if c >= spec.num_classes})
            if too_big:
                raise DatasetError(
                    f"task.class_subsets keeps classes {too_big}, but '{name}' ({path}) has "
                    f"only classes 0..{spec.num_classes - 1}."
                )
            classes = max(len(s) for s in task.class_subsets)
        if classes > task.num_classes:
            raise DatasetError(
                f"Dataset '{name}' ({path}) has {classes} classes but the network has "
                f"{task.num_classes} outputs. Set task.num_classes to at least {classes}, or "
                "keep fewer classes with preprocess.classes."
            )
        if path.startswith("task."):  # meta-test shapes: check_metatest_fits, when they matter
            images = len(spec.example_shape) == 3 or task.preprocess.signal_length
            if task.input_sizes and not images:
                raise DatasetError(
                    f"Config key 'task.input_sizes' resizes every meta-training episode, but "
                    f"dataset '{name}' ({path}) has examples of shape {spec.example_shape}, not "
                    "images. Drop task.input_sizes, or meta-train on image datasets."
                )
            counts = [static_num_features(path, name, t.preprocess) for t in sized_tasks(task)]
            features[path] = counts[0]
    if len(set(features.values())) > 1:
        raise DatasetError(
            "The datasets of task.mixture preprocess to different input sizes ("
            + "; ".join(f"{p}: {n}" for p, n in features.items()) + "). Give them a common "
            "shape with task.preprocess.resize and/or task.preprocess.pad_to."
        )


def check_conv_inputs(model: ModelConfig, task: TaskConfig, metatest: MetaTestConfig) -> None:
    """With ``model.conv_layers`` every dataset must reach the network as images (conv VSML
    layers slide over the image): see :func:`check_image_inputs`."""
    if model.conv_layers:
        check_image_inputs(task, metatest, "model.conv_layers")


def check_image_inputs(task: TaskConfig, metatest: MetaTestConfig, who: str) -> None:
    """Every dataset (meta-training and meta-test) reaches ``who`` (a config key whose
    network convolves) as images, HEIGHT x WIDTH x CHANNELS after preprocessing, and a
    mixture's datasets as images of one shape. From the registry, before any work."""
    train_shapes: dict[str, tuple[int, ...]] = {}
    for path, ref, name, _ in dataset_refs(task, metatest):
        pre_cfg = (primary_size(task).preprocess if path.startswith("task")
                   else ref_preprocess(ref, metatest.preprocess))
        try:
            shape = tuple(pre.output_shape(name, get_spec(name).example_shape, pre_cfg))
        except DatasetError as err:
            raise DatasetError(f"Config key '{path}': {err}") from None
        if len(shape) != 3:
            raise DatasetError(
                f"{who} needs image-shaped data (HEIGHT x WIDTH x CHANNELS), but "
                f"dataset '{name}' ({path}) has examples of shape {shape} after "
                f"preprocessing. Use an image dataset, or drop {who} for it."
            )
        if path.startswith("task."):
            train_shapes[path] = shape
    if len(set(train_shapes.values())) > 1:
        raise DatasetError(
            f"With {who} the datasets of task.mixture must be images of one shape ("
            + "; ".join(f"{p}: {s}" for p, s in train_shapes.items()) + "). Resize them with "
            "task.preprocess.resize."
        )


def static_num_features(ref_path: str, name: str, preprocess: PreprocessConfig) -> int:
    """Input features of dataset ``name`` after ``preprocess``, from the registry (no loading)."""
    try:
        return math.prod(pre.output_shape(name, get_spec(name).example_shape, preprocess))
    except DatasetError as err:
        raise DatasetError(f"Config key '{ref_path}': {err}") from None


def training_num_features(task: TaskConfig) -> int:
    """The network's input size for this meta-training data (at its first input size),
    from the registry."""
    return training_feature_counts(task)[0]


def training_feature_counts(task: TaskConfig) -> tuple[int, ...]:
    """The network's input size at each of ``task.input_sizes`` (one entry without them)."""
    path, _, name, _ = dataset_refs(task, MetaTestConfig(datasets=()))[0]
    return tuple(static_num_features(path, name, t.preprocess) for t in sized_tasks(task))


def check_metatest_fits(task: TaskConfig, metatest: MetaTestConfig,
                        num_features: int | None = None,
                        size_free: tuple[str, ...] | None = None) -> None:
    """Every meta-test dataset reaches the network's inputs (``num_features``, default: what
    the meta-training data preprocesses to), checked from the registry before any work.

    ``size_free``: the learners to be meta-tested that run at any input size (None: none);
    only with one may a dataset carry its own '@HxW' size (its baselines are then tuned on the
    meta-training streams resampled to that size, which must be possible; the learners that
    depend on the input size skip it).
    """
    if num_features is None:
        num_features = training_num_features(task)
    for path, ref, name, _ in dataset_refs(task, metatest):
        if not path.startswith("metatest."):
            continue
        size = split_size(ref)[1]
        if size is not None:
            if size_free is None:
                raise DatasetError(
                    f"Meta-test dataset '{ref}' ({path}) asks for its own input size, but "
                    "the learners to be meta-tested depend on the input size (VSML and the "
                    "SGD/Adam baselines do not). Drop the '@HxW' and use metatest.preprocess."
                )
            try:
                task_at_size(task, size)
            except DatasetError as err:
                raise DatasetError(f"Meta-test dataset '{ref}' ({path}): {err}") from None
            static_num_features(path, name, ref_preprocess(ref, metatest.preprocess))
            continue
        n = static_num_features(path, name, metatest.preprocess)
        if n != num_features:
            sized = "; or, for VSML, meta-test at its own size with '@HxW'" if size_free else ""
            raise DatasetError(
                f"Meta-test dataset '{name}' ({path}) has {n} input features after "
                f"metatest.preprocess, but the network takes {num_features}. Preprocess it "
                f"to that size (metatest.preprocess.resize or pad_to), choose another{sized}, "
                "or skip the meta-test (--no-metatest)."
            )


def check_datasets_ready(task: TaskConfig, metatest: MetaTestConfig | None,
                         training: bool = True) -> None:
    """Every dataset the run will read is prepared: checked before Ray starts or data loads.
    ``metatest`` None: no meta-test; ``training`` False: the training data is not read."""
    refs = dataset_refs(task, metatest or MetaTestConfig(datasets=()))
    for path, _, name, _ in refs:
        if not training and path.startswith("task."):
            continue
        status = dataset_status(name, task.data_dir)
        if not status.available:
            raise DatasetError(f"Dataset '{name}' is not prepared ({path}): {status.detail}")
