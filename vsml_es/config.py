"""The experiment config schema: defaults in code, YAML on top, dot-path overrides last.

This module only parses: types, unknown keys and value ranges that need no domain knowledge.
Checks that need a domain (dataset preprocessing, learner names, ES strategies) live with that
domain and run together in :mod:`vsml_es.experiment`, which is what callers use to turn user
input into a validated config. Every problem is a :class:`ConfigError` whose message says what
is wrong and how to fix it.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vsml_es.errors import ConfigError, closest, did_you_mean


@dataclass(frozen=True)
class ConvLayerConfig:
    """One convolutional VSML layer (official ``ConvSpec``): every kernel connection (kernel
    row, kernel column, input channel, output channel) is an LSTM with the shared parameters."""

    channels: int = 8  # output channels (official out_channels)
    kernel: int = 3  # square kernel, odd: SAME padding of kernel // 2 (official kernel_size)
    stride: int = 1  # output size ceil(input size / stride) (official stride)


@dataclass(frozen=True)
class ModelConfig:
    """The VSML network. The input/output sizes come from the task."""

    hidden_layers: tuple[int, ...] = ()  # sizes of VSML layers between input and output
    state_size: int = 16  # LSTM state (h and c) per connection
    message_size: int = 8  # forward and backward message size
    micro_ticks: int = 2  # LSTM steps per layer per pass
    backward_pass: bool = True  # explicit backward pass after each prediction
    feed_label: bool = False  # put the one-hot label into the last layer's backward message
    output_bound: float = 100.0  # logits are bounded as b * tanh(logits / b)
    init_scale: float = 1.0  # scale of the per-episode random cell state ("weights")
    # A clock for the learned algorithm (not in the paper): the episode's step t reaches every
    # LSTM as the features tanh(t / tau), one per timescale here, through meta-learned gate
    # weights that start at zero (a learner without them computes the same). A step-size
    # schedule then needs no counter kept in the LSTM states. () = off, as in the paper.
    clock_timescales: tuple[float, ...] = ()
    # The paper's deep variants (official model.sub_rnn / model.vsml_rnn switches), all off by
    # default: LayerNorm on every connection's outgoing messages before they are averaged
    # (layer_norm); each VSML layer its own LSTM (layerwise_rnns); the backward pass run by
    # its own LSTM (separate_backward_rnn; needs backward_pass).
    layer_norm: bool = False
    layerwise_lstms: bool = False
    separate_backward_lstm: bool = False
    # Convolutional VSML layers between the image input and the dense layers (paper section
    # 3/Fig. 1, official conv.yaml); needs image-shaped data (HEIGHT x WIDTH x CHANNELS).
    conv_layers: tuple[ConvLayerConfig, ...] = ()
    # Where a conv layer sends its backward messages. official: as vsml_layers.conv does, which
    # is the transposed convolution only for kernel 3 at stride 1 (it hard-codes the offset 1
    # and keeps only output positions p with p * stride < in_size // stride); full: the exact
    # transpose of the forward routing (every output position, offset kernel // 2). They differ
    # only where a conv layer's backward message reaches another conv layer below it.
    conv_backward: str = "official"
    # Which meta-learned learner ES trains: vsml | hebbian | meta_rnn | fwm (vsml_es/learners/).
    # The baselines share the trainer, evaluator and checkpoints with VSML.
    learner: str = "vsml"
    # How VSML's dense layers run: jax (pure JAX, the reference) | fused (the optional C++
    # kernel of vsml_es/fused.py, built by pip where a compiler is present; forward only, for
    # ES; state_size 16, no conv layers). Same results to float32 rounding.
    kernel: str = "jax"
    baseline_hidden: int = 128  # meta_rnn: LSTM units; fwm: fast-weight key size


@dataclass(frozen=True)
class PreprocessConfig:
    """Per-example input preprocessing on device (vsml_es/preprocess.py), in this order:
    resize → normalize → pad → flatten → per-episode pixel shuffle → random projection."""

    # dataset: each dataset's own train mean/std (ours) | official: the fixed constants of
    # the official VSML code (Fashion-MNIST takes MNIST's; EMNIST, KMNIST, CIFAR-10, SVHN,
    # Omniglot their own; random/sum 0/1; other datasets have none) | example | none
    normalize: str = "dataset"
    resize: tuple[int, ...] = ()  # [HEIGHT, WIDTH]: antialiased bilinear resize of images
    # Antialias when resize shrinks. The official code resizes with tf.image.resize's default
    # bilinear, which does not (paper configs that resize: false).
    antialias: bool = True
    pad_to: tuple[int, ...] = ()  # zero-pad every example to this shape (a common input shape)
    classes: tuple[int, ...] = ()  # keep only these classes, relabelled 0..k-1 in this order
    shuffle: str = "none"  # none | fresh | pool: random permutation of the input features
    shuffle_fraction: float = 1.0  # share of episodes that are shuffled
    shuffle_pool: int = 16  # size of the fixed pool ('pool')
    projection: str = "none"  # none | fresh | pool: Glorot-uniform random linear projection
    projection_fraction: float = 1.0  # share of episodes that are projected
    projection_pool: int = 16  # size of the fixed pool ('pool')
    pool_seed: int = 0  # the fixed pools are the same on every worker and after resume
    # Linearly resample 1-D examples (signals such as mnist1d) to this length; 0: off. With
    # 'resize' it lets 1-D datasets join image datasets of HEIGHT*WIDTH pixels in a mixture
    # (resize then applies to the images only).
    signal_length: int = 0


@dataclass(frozen=True)
class TaskConfig:
    """Meta-training episodes: which data and how each episode is formed."""

    dataset: str = "digits"
    split: str = "train"
    num_classes: int = 10  # output size of the network; datasets with fewer classes are padded
    episode_length: int = 100  # T: online examples per meta-training episode
    # A fresh label permutation per episode, in meta-training and meta-test alike. The
    # official code does not permute (paper configs: false). Ours defaults to true: with
    # fixed labels a small CPU run can memorise the class->output map of its few datasets
    # instead of learning to learn, and a learner that must learn every label in context
    # starts each episode at chance, so its curve measures learning alone.
    permute_labels: bool = True
    fitness: str = "mean_loss"  # mean_loss | last_loss
    # Each episode uses its own dataset's class count as output size (the official runs): the
    # network stays num_classes wide and the outputs beyond the dataset's classes are masked
    # out of the softmax, the error, the argmax and the loss, for the learners that support it
    # (VSML, SGD/Adam); the others see padded outputs, as the official pad.yaml runs did.
    per_dataset_outputs: bool = False
    data_dir: str | None = None  # TFDS data dir for datasets that need one
    # Meta-train on a mixture: NAME or NAME:SPLIT per entry, one drawn per episode (replaces
    # 'dataset'); weights default to equal. All entries must preprocess to one input size.
    mixture: tuple[str, ...] = ()
    mixture_weights: tuple[float, ...] = ()
    # Each episode keeps one of these class subsets of its dataset (relabelled 0..k-1 in the
    # given order), drawn with equal weights; with per_dataset_outputs the episode has k live
    # outputs. The official configs/invariances.yaml (data.filter_classes split over the
    # workers, one subset each) varies the class count of meta-training this way.
    class_subsets: tuple[tuple[int, ...], ...] = ()
    # Few-shot episodes (official omniglot_fewshot_dataset; 0 = off): each episode draws
    # `ways` classes, shows `shots` examples of each in one shuffled sequence, then one query,
    # a different example of one of them. Labels are the classes' order of first appearance
    # (permuted on top with permute_labels). episode_length and metatest.steps must be
    # ways * shots + 1; with fitness: last_loss only the query is scored, as officially.
    ways: int = 0
    shots: int = 1
    # Meta-train at several image sizes, [HEIGHT, WIDTH] each (empty: one size, the data's own
    # or preprocess.resize's). Episode id i (one per antithetic pair) is resized to entry
    # i mod len, so every generation has equal shares of pairs at each size, as the official
    # invariances.yaml had equal shares of MPI workers at each data.preprocess.resize. Each
    # size is its own compiled evaluation; a size equal to the data's own is no resize (the
    # official null). Needs a size-free learner (VSML) and ES; replaces preprocess.resize.
    input_sizes: tuple[tuple[int, ...], ...] = ()
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)


@dataclass(frozen=True)
class TrainingConfig:
    """The evosax meta-training loop."""

    strategy: str = "Open_ES"
    population_size: int = 64
    generations: int = 300
    sigma: float = 0.05  # antithetic noise std (paper: 0.05)
    learning_rate: float = 0.025  # Adam on the ES gradient (paper: 0.025)
    optimizer: str = "adam"  # adam | sgd
    # auto: raw fitness for Open_ES (as in the paper), else the strategy's own shaping;
    # none | centered_rank | z_score | pair_rank (ranks of antithetic differences)
    fitness_shaping: str = "auto"
    strategy_kwargs: dict[str, Any] = field(default_factory=dict)  # extra constructor args
    eval_chunk: int = 16  # members per jitted call: fixed shapes, results independent of sharding
    seed: int = 0
    # es: evosax as above, every member learning a fresh task.episode_length-step episode.
    # nres | pes: online ES (noise-reuse / persistent): population_size / 2 antithetic pairs,
    # each learning streams of task.episode_length steps, training.window steps of them per
    # generation with the learner states carried over (vsml_es.online); sigma, optimizer and
    # learning_rate as for es. imitation: Adam (learning_rate) on gradients through the
    # unrolled inner loop, making the learner's online logits follow imitation_target's on
    # the same streams (paper section 4.1); population_size episodes per step, generations
    # steps. backprop: the same gradient descent on the learner's own online loss
    # (task.fitness), the ES objective (official configs/backprop.yaml).
    method: str = "es"
    # nres | pes: steps of each stream per generation (divides task.episode_length).
    window: int = 50
    # Global-norm clip of the meta-gradient of imitation/backprop (0: none; official
    # backprop.yaml: 25). BPTT through hundreds of LSTM ticks can spike.
    gradient_clip: float = 1.0
    # sgd | adam: online optimizer on a linear model; sgd_mlp | adam_mlp: on an MLP with one
    # hidden ReLU layer of metatest.mlp_hidden units (the sgd_mlp/adam_mlp baselines), which
    # needs model.hidden_layers: [metatest.mlp_hidden] (VSML imitates backprop on the same
    # network it is, paper section 4.1, deep case).
    imitation_target: str = "sgd"
    # The target's learning rate times the input size: its step moves the logits by the same
    # amount at any input size, as VSML's mean over connections does (lr = this / features).
    # The same for an MLP target: its first layer's step then moves each hidden unit as much
    # at any input size (its output layer's step grows with the hidden width instead).
    imitation_learning_rate: float = 32.0
    # 0: every step imitates on fresh task.episode_length-step episodes. H > 0: episodes of H
    # steps, task.episode_length of them per step with the states carried from the step
    # before (truncated backprop), the batch's episodes staggered over the horizon, so late
    # steps of long streams are imitated too at the cost of a short unroll.
    imitation_horizon: int = 0
    # > 0: the imitated optimizer's learning rate decays as lr / sqrt(1 + t / this) over each
    # stream (t its own step), so the target is fast early and still improving at step 2000
    # (constant-lr SGD fast enough early plateaus late, and the learner inherits the plateau).
    imitation_decay_steps: float = 0.0
    imitation_loss: str = "logits"  # logits (squared, centred) | kl (of the predictions)
    # Adds this times the learner's own online cross-entropy (the ES meta-objective: each
    # prediction made before its label) to the imitation loss at every step: imitation keeps
    # the learner learning like the optimizer, the task term asks it to learn faster.
    imitation_task_weight: float = 0.0
    # Start from these parameters (a .vsml file or a run's params.npz) instead of random ones:
    # e.g. ES refining an imitation-trained learner. "" = random initial parameters. "{seed}"
    # in the path becomes training.seed, so a multi-seed sweep starts each seed from its own.
    init_params: str = ""

    def init_params_path(self) -> str:
        return self.init_params.replace("{seed}", str(self.seed))


@dataclass(frozen=True)
class MetaTestConfig:
    """Held-out evaluation after training (and for ``vsml-es evaluate``)."""

    datasets: tuple[str, ...] = ("digits:test",)  # NAME or NAME:SPLIT
    # Shape preprocessing of the meta-test datasets (e.g. resize to the trained input size);
    # augmentations (shuffle, projection) are normally off here.
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    episodes: int = 32
    steps: int = 200
    seed: int = 12345
    sgd_learning_rates: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
    sgd_tuning_episodes: int = 16  # tuning episodes per learning rate (all gradient baselines)
    # Gradient baselines beside the meta-learned learner, each with its learning rate tuned on
    # meta-training streams: sgd, adam (linear), sgd_mlp, adam_mlp (one hidden layer),
    # sgd_conv, adam_conv (the official 3-conv few-shot baseline net; image data only).
    baselines: tuple[str, ...] = ("sgd",)
    adam_learning_rates: tuple[float, ...] = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)
    mlp_hidden: int = 160  # hidden units of the *_mlp baselines
    report_steps: tuple[int, ...] = (1, 10, 25, 50, 100, 250, 500, 1000, 2000)


@dataclass(frozen=True)
class CompareConfig:
    """``vsml-es compare``: meta-learners trained with the same ES budget, then meta-tested."""

    learners: tuple[str, ...] = ("vsml", "hebbian", "meta_rnn", "fwm")
    # Per-learner ES settings, e.g. {meta_rnn: {sigma: 0.02}}: one noise scale does not suit
    # ~2k VSML parameters and ~100k Meta-RNN weights alike. Only settings that leave the budget
    # (population x generations x episode length) unchanged: see ES_SETTING_KEYS.
    es_settings: dict[str, Any] = field(default_factory=dict)
    # Learners meta-trained elsewhere, meta-tested beside the ones trained here as they are:
    # {label: .vsml file or params.npz}, "{seed}" in a path becomes training.seed. E.g. a VSML
    # trained by imitation (training.method: imitation), whose budget is not ES's; its own
    # training is in its file, not in this comparison's timing.
    pretrained: dict[str, str] = field(default_factory=dict)


# training.method values that meta-train with gradients through the inner loop.
GRADIENT_METHODS = ("imitation", "backprop")

# training.* keys that compare.es_settings may set per learner (none of them changes the budget).
ES_SETTING_KEYS = ("strategy", "sigma", "learning_rate", "optimizer", "fitness_shaping",
                   "strategy_kwargs")


@dataclass(frozen=True)
class LoggingConfig:
    log_every: int = 1  # generations between metric rows
    progress: bool = True  # tqdm progress bar (off automatically without a terminal)
    tensorboard: bool = False  # TensorBoard event files in RUN/tensorboard (tensorboardX)
    # Weights & Biases, e.g. {project: vsml, mode: offline}; {} = off (pip install vsml-es[wandb])
    wandb: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckpointConfig:
    """Resumable checkpoints in RUN_DIR/checkpoints: periodic, at the end, on SIGTERM/SIGINT."""

    every: int = 10  # generations between periodic checkpoints
    keep: int = 3  # newest checkpoints kept on disk (older ones are deleted)
    keep_best: bool = True  # also keep the checkpoint with the lowest mean population fitness


@dataclass(frozen=True)
class DistributedConfig:
    """Where the population is evaluated: in-process, a private local Ray, or a Ray cluster.

    Fitness is identical in all three (vsml_es/distributed/); only speed and fault tolerance
    differ.
    """

    address: str | None = None  # None: private local Ray (loopback only); auto | HOST:PORT
    workers: int | None = None  # Ray actors; None: one per node (per GPU share); 0: in-process
    cpus_per_worker: float = 1.0  # CPUs Ray reserves per actor (XLA uses all of the node's)
    gpus_per_worker: float = 0.0  # GPUs per actor (fractions share a GPU)
    shard_timeout_s: float = 900.0  # a shard running longer is presumed hung and re-sent
    max_retries: int = 3  # re-sends of one shard before the run stops with the worker's error
    startup_timeout_s: float = 600.0  # wait for actors to be placed (cloud nodes take minutes)
    # How members reach the workers: recipe (each worker redraws its members from the ES state
    # and the generation's ask key: O(parameters) bytes whatever the population), members, or
    # auto (recipe where the strategy redraws bit for bit and its state is the smaller).
    transfer: str = "auto"
    # A shard running this many times the median of the generation's finished shards gets a
    # backup copy on an idle worker; the first answer counts (0: no backups).
    backup_after: float = 1.5


@dataclass(frozen=True)
class Config:
    name: str = "experiment"
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    metatest: MetaTestConfig = field(default_factory=MetaTestConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)


# --------------------------------------------------------------------------------------------
# Building from dicts (YAML, overrides) with typed, named errors


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _valid_paths(cls: type, prefix: str = "") -> list[str]:
    paths = []
    for name, tp in _hints(cls).items():
        path = f"{prefix}{name}"
        paths.append(path)
        if _is_section(tp):
            paths.extend(_valid_paths(tp, path + "."))
    return paths


def _section_keys(path: str) -> tuple[str, list[str]]:
    """The deepest existing section on ``path`` and its keys ('' and the top-level sections)."""
    cls, prefix = Config, ""
    for part in path.split(".")[:-1]:
        tp = _hints(cls).get(part)
        if not _is_section(tp):
            break
        cls, prefix = tp, f"{prefix}{part}."
    return prefix, list(_hints(cls))


def _unknown_key(path: str) -> ConfigError:
    prefix, keys = _section_keys(path)
    rest = path[len(prefix):]
    section = prefix.rstrip(".") or "the config"
    if "." in rest:  # e.g. training.foo.bar: 'foo' is no section of training
        head = rest.split(".", 1)[0]
        return ConfigError(
            f"Unknown config key '{path}': {section} has no section '{head}'."
            f"{did_you_mean(head, keys, cutoff=0.5)} Keys of {section}: {', '.join(keys)}."
        )
    valid = _valid_paths(Config)
    same_leaf = [p for p in valid if p.rsplit(".", 1)[-1] == rest and p != path]
    hint = (f" Did you mean '{same_leaf[0]}'?" if same_leaf
            else did_you_mean(f"{prefix}{rest}", [f"{prefix}{k}" for k in keys], cutoff=0.5))
    return ConfigError(
        f"Unknown config key '{path}'.{hint} Run 'vsml-es config' to list every key "
        "with its default."
    )


def _unknown_section(prefix: str, key: str, value: dict, hints: dict[str, Any]) -> ConfigError:
    """'trainng.sigma' → suggest 'training.sigma': name the leaf the user wrote."""
    leaf = next(iter(value))
    full = f"{prefix}{key}.{leaf}"
    sections = [name for name, tp in hints.items() if _is_section(tp)]
    close = closest(key, sections, cutoff=0.5)
    if close:
        return ConfigError(
            f"Unknown config key '{full}'. Did you mean '{prefix}{close}.{leaf}'? Run "
            "'vsml-es config' to list every key with its default."
        )
    return _unknown_key(full)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(path: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation; convert lists to tuples and ints to floats."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        for arg in typing.get_args(tp):
            try:
                return _coerce(path, value, arg)
            except ConfigError:
                continue
        raise _wrong_type(path, value, tp)
    if tp is type(None):
        if value is None:
            return None
        raise _wrong_type(path, value, tp)
    if origin is tuple:
        item_tp = typing.get_args(tp)[0]
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list | tuple):
            raise _wrong_type(path, value, tp)
        if _is_section(item_tp):  # e.g. model.conv_layers: a list of mappings
            keys = ", ".join(_hints(item_tp))
            for i, v in enumerate(value):
                if not isinstance(v, dict):
                    raise ConfigError(f"Config key '{path}[{i}]' must be a mapping with the "
                                      f"keys {keys}, got {v!r}.")
            return tuple(_build(item_tp, v, f"{path}[{i}].") for i, v in enumerate(value))
        return tuple(_coerce(f"{path}[{i}]", v, item_tp) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise _wrong_type(path, value, tp)
        item_tp = typing.get_args(tp)[1]
        if item_tp is Any:
            return dict(value)
        return {key: _coerce(f"{path}.{key}", v, item_tp) for key, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _wrong_type(path, value, tp)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _wrong_type(path, value, tp)
    if tp is float:
        if isinstance(value, str) and _NUMBER.match(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:
                raise ConfigError(f"Config key '{path}' is {value}, beyond the range of a "
                                  "float; give a smaller number.") from None
        raise _wrong_type(path, value, tp)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _wrong_type(path, value, tp)
    if tp is Any:
        return value
    raise ConfigError(f"Config key '{path}' has an unsupported type {tp}.")


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _wrong_type(path: str, value: Any, tp: Any) -> ConfigError:
    return ConfigError(
        f"Config key '{path}' expects {_type_name(tp)}, got {type(value).__name__} "
        f"({value!r}). Fix the value in the YAML file or in --set {path}=..."
    )


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    if not isinstance(data, dict):
        section = prefix.rstrip(".") or "<root>"
        raise ConfigError(
            f"Config section '{section}' must be a mapping of keys to values, got "
            f"{type(data).__name__} ({data!r}). Set one of its keys instead, e.g. "
            f"--set {section}.KEY=VALUE; 'vsml-es config' lists them."
        )
    hints = _hints(cls)
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in hints:
            if prefix.endswith("]."):  # an item of a list of sections, e.g. model.conv_layers[0]
                raise ConfigError(
                    f"Unknown config key '{path}'.{did_you_mean(key, list(hints), cutoff=0.5)} "
                    f"Keys of {prefix.rstrip('.')}: {', '.join(hints)}."
                )
            if isinstance(value, dict) and value:
                raise _unknown_section(prefix, key, value, hints)
            raise _unknown_key(path)
        tp = hints[key]
        if _is_section(tp):
            kwargs[key] = _build(tp, value if value is not None else {}, path + ".")
        else:
            kwargs[key] = _coerce(path, value, tp)
    return cls(**kwargs)


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain dict (lists instead of tuples) for YAML/JSON."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(config)


MAX_FILE_BYTES = 1 << 20  # an experiment file is a page of YAML, not data


class _RefusedYaml(ConfigError):
    """YAML that parses but that we refuse (aliases, duplicate keys, too deep)."""


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML without the traps: no aliases (a few bytes can expand exponentially), no
    duplicate keys (YAML silently keeps the last one)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _RefusedYaml(
                f"YAML alias '*{event.anchor}' at line {event.start_mark.line + 1}: experiment "
                "files may not use anchors and aliases; write the values out."
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, list | dict):
                raise _RefusedYaml(f"A YAML mapping key at line {key_node.start_mark.line + 1} "
                                  "is a list or mapping; keys must be names.")
            if key in seen:
                raise _RefusedYaml(
                    f"Key '{key}' appears twice in one YAML mapping (line "
                    f"{key_node.start_mark.line + 1}); YAML would silently keep the last. Keep "
                    "one."
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, where: str) -> Any:
    """``text`` as YAML with :class:`_StrictLoader`; every failure is a :class:`ConfigError`."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        raise ConfigError(f"{where} is not valid YAML: {' '.join(str(err).split())}") from None
    except RecursionError:
        raise _RefusedYaml(f"{where} nests too deeply to be a config.") from None


def read_yaml_file(path: Path, what: str = "Experiment file") -> Any:
    """A YAML file that must be UTF-8 text of reasonable size; errors say which."""
    if path.is_dir():
        raise ConfigError(f"{what} '{path}' is a directory; give a YAML file.")
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(f"{what} '{path}' has {size} bytes; a config is at most "
                              f"{MAX_FILE_BYTES} bytes of YAML. Is it the right file?")
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{what} '{path}' cannot be read: {err.strerror}.") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what} '{path}' is not UTF-8 text (byte {err.start}); give a "
                          "YAML file.") from None
    return parse_yaml(text, f"{what} '{path}'")


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b.c=VALUE`` with VALUE parsed as YAML (so 128, 0.1, true, [1,2] work)."""
    if "=" not in text:
        raise ConfigError(
            f"Override '{text}' is not of the form KEY=VALUE, e.g. "
            "--set training.population_size=128."
        )
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"Override '{text}' has an empty key part; write KEY=VALUE with KEY "
                          "a dot path such as training.sigma.")
    try:
        value = parse_yaml(raw, f"The value of --set {key}") if raw.strip() else ""
    except _RefusedYaml:
        raise
    except ConfigError:
        value = raw  # not YAML: the plain string (e.g. a name with a colon)
    return key, value


def _set_path(tree: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise _unknown_key(".".join(parts[: i + 2]))
        node = child
    node[parts[-1]] = value


EXTENDS_KEY = "extends"  # an experiment file may build on another: extends: base.yaml


def read_experiment_file(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The YAML mapping of an experiment file, with ``extends: OTHER.yaml`` (a path relative
    to the file) merged underneath it, recursively: a grid of experiments shares one base."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(
            f"Experiment file '{path}' does not exist. The shipped experiments are in "
            "experiments/ (e.g. experiments/quickstart.yaml)."
        )
    if path.resolve() in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path.resolve()))
        raise ConfigError(f"Experiment files extend each other in a loop: {chain}.")
    loaded = read_yaml_file(path)
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"Experiment file '{path}' must hold a mapping at the top level.")
    base_ref = loaded.pop(EXTENDS_KEY, None)
    if base_ref is None:
        return loaded
    if not isinstance(base_ref, str):
        raise ConfigError(f"'{EXTENDS_KEY}' in '{path}' must be a file name, got {base_ref!r}.")
    base = read_experiment_file(path.parent / base_ref, (*_seen, path.resolve()))
    return _merge(base, loaded)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, section by section (a value that is not a mapping replaces)."""
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Defaults <- YAML file (with its ``extends`` chain) <- overrides, parsed and range-checked.

    Domain checks are not made here: use :func:`vsml_es.experiment.load_experiment`.
    """
    tree: dict[str, Any] = read_experiment_file(path) if path is not None else {}
    for text in overrides:
        key, value = parse_override(text)
        _set_path(tree, key, value)
    config = _build(Config, tree)
    check_values(config)
    return config


def config_from_dict(data: dict[str, Any]) -> Config:
    config = _build(Config, _deep_copy(data))
    check_values(config)
    return config


def parse_section(cls: type, data: dict[str, Any], prefix: str) -> Any:
    """One config section (e.g. TrainingConfig) from a mapping, with named errors."""
    return _build(cls, data, prefix)


def _deep_copy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deep_copy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deep_copy(v) for v in d]
    return d


def replace(config: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """A new config with dot-path overrides applied (parsed and range-checked)."""
    tree = config_to_dict(config)
    for text in overrides:
        key, value = parse_override(text)
        _set_path(tree, key, value)
    return config_from_dict(tree)


# --------------------------------------------------------------------------------------------
# Value ranges that need no domain knowledge


def positive(path: str, value: float) -> None:
    if not value > 0:  # NaN compares false with everything: refused here too
        raise ConfigError(f"Config key '{path}' must be positive, got {value}.")


SEED_LIMIT = 2**31  # seeds become int32 JAX scalars (keys are folded from them)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
# Upper bounds that say why: beyond them the run cannot fit in memory or time, and XLA would
# abort the process instead of failing with a message.
LIMITS: dict[str, tuple[float, str]] = {
    "training.population_size": (2**20, "the driver holds population x parameters floats "
                                 "(2^20 members x 2,384 VSML parameters = 10 GB)"),
    "training.generations": (10**7, "ten million generations is centuries of compute"),
    "training.eval_chunk": (2**16, "one chunk's episode states must fit in device memory"),
    "training.sigma": (1e3, "noise this large only explores overflow"),
    "training.learning_rate": (1e3, "ES steps this large only overflow"),
    "training.imitation_learning_rate": (1e6, "the imitated optimizer would only overflow"),
    "training.imitation_horizon": (10**6, "one episode's indices live on the device"),
    "training.imitation_decay_steps": (1e9, "the decay would vanish in rounding"),
    "training.imitation_task_weight": (1e6, "the imitation term would vanish in rounding"),
    "training.gradient_clip": (1e30, "gradients are float32"),
    "task.episode_length": (10**6, "one episode's indices live on the device"),
    "task.ways": (2**16, "a few-shot episode draws its classes on the device"),
    "task.shots": (10**5, "a few-shot episode's examples live on the device"),
    "task.num_classes": (10**5, "VSML keeps a state per connection to every output"),
    "metatest.steps": (10**6, "curves are stored per step and episode"),
    "metatest.episodes": (10**5, "curves are stored per step and episode"),
    "metatest.sgd_tuning_episodes": (10**5, "curves are stored per step and episode"),
    "metatest.mlp_hidden": (2**16, "an MLP this wide does not fit per episode"),
    "model.state_size": (1024, "the LSTM weights grow with its square"),
    "model.message_size": (256, "the LSTM weights grow with it"),
    "model.micro_ticks": (64, "every tick is a full pass over all connections"),
    "model.baseline_hidden": (2**16, "the baselines' weights grow with its square"),
    "model.output_bound": (1e30, "logits are float32"),
    "model.init_scale": (1e30, "states are float32"),
    "logging.log_every": (10**7, "it is a number of generations"),
    "checkpoint.every": (10**7, "it is a number of generations"),
    "checkpoint.keep": (10**4, "each checkpoint is a directory on disk"),
}


def _numbers(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every (path, value) leaf of a config section, lists and mappings included."""
    if dataclasses.is_dataclass(tree):
        return [item for f in dataclasses.fields(tree)
                for item in _numbers(getattr(tree, f.name), f"{prefix}{f.name}.")]
    if isinstance(tree, tuple | list):
        return [item for i, v in enumerate(tree)
                for item in _numbers(v, f"{prefix.rstrip('.')}[{i}].")]
    if isinstance(tree, dict):
        return [item for k, v in tree.items() for item in _numbers(v, f"{prefix}{k}.")]
    return [(prefix.rstrip("."), tree)]


def check_values(config: Config) -> None:
    """Ranges and choices that the schema alone decides (run on every parse)."""
    m, t, tr, mt = config.model, config.task, config.training, config.metatest
    for path, value in _numbers(config):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"Config key '{path}' is {value}; every number must be finite.")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
            raise ConfigError(f"Config key '{path}' is {value}, beyond a 64-bit integer.")
    for path, (limit, why) in LIMITS.items():
        section, key = path.split(".")
        value = getattr(getattr(config, section), key)
        if value > limit:
            most = f"{int(limit):,}" if limit < 1e9 and float(limit).is_integer() else f"{limit:g}"
            raise ConfigError(f"Config key '{path}' is {value}; at most {most}: {why}.")
    for path, seed in (("training.seed", tr.seed), ("metatest.seed", mt.seed),
                       ("task.preprocess.pool_seed", t.preprocess.pool_seed),
                       ("metatest.preprocess.pool_seed", mt.preprocess.pool_seed)):
        if not 0 <= seed < SEED_LIMIT:
            raise ConfigError(f"Config key '{path}' is {seed}; seeds are between 0 and "
                              f"{SEED_LIMIT - 1} (JAX folds them into 32-bit keys).")
    if not NAME.match(config.name):
        raise ConfigError(
            f"Config key 'name' is {config.name!r}; a run name is 1-100 letters, digits, '.', "
            "'_' or '-', starting with a letter or digit (it names the run directory and the "
            "learner file, so no path separators)."
        )
    for path, values, limit in (("model.hidden_layers", m.hidden_layers, 2**16),
                                ("metatest.report_steps", mt.report_steps, 10**6)):
        for i, value in enumerate(values):
            if value > limit:
                raise ConfigError(f"Config key '{path}[{i}]' is {value}; at most {limit:,}.")
    if m.init_scale < 0:
        raise ConfigError(f"Config key 'model.init_scale' must be >= 0, got {m.init_scale}.")
    for i, tau in enumerate(m.clock_timescales):
        if not 0 < tau < 1e9:
            raise ConfigError(f"Config key 'model.clock_timescales[{i}]' is {tau}; a timescale "
                              "is a number of steps > 0 and < 1e9, e.g. [10, 100, 1000].")
    for path, value in [
        ("model.state_size", m.state_size),
        ("model.message_size", m.message_size),
        ("model.micro_ticks", m.micro_ticks),
        ("model.output_bound", m.output_bound),
        ("task.num_classes", t.num_classes),
        ("task.episode_length", t.episode_length),
        ("training.population_size", tr.population_size),
        ("training.generations", tr.generations),
        ("training.sigma", tr.sigma),
        ("training.learning_rate", tr.learning_rate),
        ("training.imitation_learning_rate", tr.imitation_learning_rate),
        ("training.eval_chunk", tr.eval_chunk),
        ("metatest.episodes", mt.episodes),
        ("metatest.steps", mt.steps),
        ("metatest.mlp_hidden", mt.mlp_hidden),
        ("model.baseline_hidden", m.baseline_hidden),
        ("logging.log_every", config.logging.log_every),
        ("checkpoint.every", config.checkpoint.every),
        ("checkpoint.keep", config.checkpoint.keep),
    ]:
        positive(path, value)
    for i, size in enumerate(m.hidden_layers):
        positive(f"model.hidden_layers[{i}]", size)
    _check_conv_layers(m)
    if m.message_size < 2:
        raise ConfigError(
            "Config key 'model.message_size' must be at least 2: slot 0 carries the input or "
            "error, slot 1 the prediction."
        )
    if m.state_size % 2:
        raise ConfigError(
            f"Config key 'model.state_size' must be even (half of the cell state holds the "
            f"random initial 'weight'), got {m.state_size}."
        )
    if m.separate_backward_lstm and not m.backward_pass:
        raise ConfigError(
            "Config key 'model.separate_backward_lstm' is true but model.backward_pass is "
            "false: the separate LSTM runs the backward pass. Set model.backward_pass: true, "
            "or drop separate_backward_lstm."
        )
    if tr.gradient_clip < 0:
        raise ConfigError(f"Config key 'training.gradient_clip' must be >= 0 (0 = no clipping), "
                          f"got {tr.gradient_clip}.")
    if tr.imitation_task_weight < 0:
        raise ConfigError(
            f"Config key 'training.imitation_task_weight' must be >= 0 (0 = imitation only), "
            f"got {tr.imitation_task_weight}."
        )
    if tr.imitation_decay_steps < 0:
        raise ConfigError(
            f"Config key 'training.imitation_decay_steps' must be >= 0 (0 = a constant learning "
            f"rate), got {tr.imitation_decay_steps}."
        )
    if tr.imitation_horizon < 0 or tr.imitation_horizon % t.episode_length:
        raise ConfigError(
            f"Config key 'training.imitation_horizon' ({tr.imitation_horizon}) must be 0 or a "
            f"positive multiple of task.episode_length ({t.episode_length}), the unroll per step."
        )
    if (tr.method == "imitation" and tr.imitation_target in ("sgd_mlp", "adam_mlp")
            and m.hidden_layers != (mt.mlp_hidden,)):
        raise ConfigError(
            f"Config key 'training.imitation_target' is '{tr.imitation_target}': online "
            f"{'SGD' if tr.imitation_target == 'sgd_mlp' else 'Adam'} on an MLP with one "
            f"hidden layer of metatest.mlp_hidden ({mt.mlp_hidden}) units, so VSML needs that "
            f"same hidden layer "
            f"(model.hidden_layers: [{mt.mlp_hidden}]), got model.hidden_layers: "
            f"{list(m.hidden_layers)}. Set both to the same single width."
        )
    if t.num_classes < 2:
        raise ConfigError(f"Config key 'task.num_classes' must be at least 2, got {t.num_classes}.")
    for i, subset in enumerate(t.class_subsets):
        if len(subset) < 2 or len(set(subset)) != len(subset) or min(subset) < 0:
            raise ConfigError(
                f"Config key 'task.class_subsets[{i}]' is {list(subset)}; each subset lists at "
                "least 2 distinct class ids >= 0, e.g. task.class_subsets: [[6, 2, 3], [1, 5, "
                "4, 9]] (a list of lists)."
            )
    if t.class_subsets and t.preprocess.classes:
        raise ConfigError(
            "task.class_subsets and task.preprocess.classes both filter classes; give one: a "
            "single subset in class_subsets is the same as preprocess.classes."
        )
    _check_fewshot(config)
    _check_input_sizes(config)
    choices = {
        "task.fitness": (t.fitness, ("mean_loss", "last_loss")),
        "training.optimizer": (tr.optimizer, ("adam", "sgd")),
        "training.imitation_target": (tr.imitation_target,
                                       ("sgd", "adam", "sgd_mlp", "adam_mlp")),
        "training.imitation_loss": (tr.imitation_loss, ("logits", "kl")),
    }
    for path, (value, valid) in choices.items():
        if value not in valid:
            raise ConfigError(
                f"Config key '{path}' is '{value}'; valid values: {', '.join(valid)}."
            )
    for i, step in enumerate(mt.report_steps):
        positive(f"metatest.report_steps[{i}]", step)
    for path, rates in (("metatest.sgd_learning_rates", mt.sgd_learning_rates),
                        ("metatest.adam_learning_rates", mt.adam_learning_rates)):
        if not rates:
            raise ConfigError(f"Config key '{path}' needs at least one learning rate.")
        for i, rate in enumerate(rates):
            positive(f"{path}[{i}]", rate)
    _validate_distributed(config.distributed)


def _check_fewshot(config: Config) -> None:
    """task.ways/task.shots: sizes that fit each other, the network and the episode lengths;
    the options that draw episodes another way are refused with it."""
    t, mt, tr = config.task, config.metatest, config.training
    if t.ways == 0:
        return
    if t.ways < 2:
        raise ConfigError(f"Config key 'task.ways' is {t.ways}; a few-shot episode needs at "
                          "least 2 classes (0 turns few-shot episodes off).")
    positive("task.shots", t.shots)
    if t.ways > t.num_classes:
        raise ConfigError(f"Config key 'task.ways' is {t.ways} but the network has "
                          f"task.num_classes = {t.num_classes} outputs. Set task.num_classes to "
                          f"at least {t.ways} (official omniglot.yaml: both 5).")
    steps = t.ways * t.shots + 1
    for path, value in (("task.episode_length", t.episode_length),
                        ("metatest.steps", mt.steps)):
        if value != steps:
            raise ConfigError(
                f"Config key '{path}' is {value}, but a few-shot episode of task.ways {t.ways} "
                f"and task.shots {t.shots} has {t.ways} x {t.shots} support steps and one "
                f"query: set it to {steps} (official omniglot.yaml: 6 for 5 ways, 1 shot)."
            )
    for path, value in (("task.mixture", t.mixture), ("task.class_subsets", t.class_subsets),
                        ("training.imitation_horizon", tr.imitation_horizon)):
        if value:
            raise ConfigError(
                f"Config keys 'task.ways' and '{path}' do not go together: few-shot episodes "
                f"draw their own classes from one dataset, in episodes of {steps} steps. Drop "
                f"{path} or set task.ways: 0."
            )


def _check_input_sizes(config: Config) -> None:
    """task.input_sizes: [HEIGHT, WIDTH] pairs, distinct, and none of the options that fix
    the input shape or the way the population is evaluated another way."""
    t = config.task
    for i, size in enumerate(t.input_sizes):
        if len(size) != 2 or not all(1 <= s <= 4096 for s in size):
            raise ConfigError(
                f"Config key 'task.input_sizes[{i}]' is {list(size)}; each entry is an image "
                "size [HEIGHT, WIDTH] of 1-4096 pixels each, e.g. task.input_sizes: [[28, 28], "
                "[14, 14], [32, 32]] (a list of lists)."
            )
    if len(set(t.input_sizes)) != len(t.input_sizes):
        raise ConfigError(f"Config key 'task.input_sizes' lists a size twice: "
                          f"{[list(s) for s in t.input_sizes]}. Give each size once.")
    if not t.input_sizes:
        return
    for key, value in (("resize", t.preprocess.resize), ("pad_to", t.preprocess.pad_to)):
        if value:
            raise ConfigError(
                f"Config keys 'task.input_sizes' and 'task.preprocess.{key}' do not go "
                f"together: input_sizes sets each episode's image size. Drop "
                f"task.preprocess.{key}, or list the one size in task.input_sizes."
            )
    if config.training.method != "es":
        raise ConfigError(
            f"Config key 'task.input_sizes' needs training.method: es (got "
            f"'{config.training.method}'): the other methods learn streams of one input size."
        )


def _check_conv_layers(m: ModelConfig) -> None:
    """Conv layer shapes that need no data: positive sizes, odd kernels, a VSML learner."""
    for i, conv in enumerate(m.conv_layers):
        path = f"model.conv_layers[{i}]"
        for key, limit in (("channels", 2**12), ("kernel", 64), ("stride", 64)):
            value = getattr(conv, key)
            positive(f"{path}.{key}", value)
            if value > limit:
                raise ConfigError(f"Config key '{path}.{key}' is {value}; at most {limit}: "
                                  "VSML keeps a state per kernel connection.")
        if conv.kernel % 2 == 0:
            raise ConfigError(
                f"Config key '{path}.kernel' is {conv.kernel}; a conv VSML layer needs an odd "
                "kernel (SAME padding of kernel // 2 on each side keeps the output at "
                "ceil(size / stride), as in the official code). Use 1, 3, 5, ..."
            )
    if m.conv_backward not in ("official", "full"):
        raise ConfigError(f"Config key 'model.conv_backward' is '{m.conv_backward}'; valid "
                          "values: official, full.")
    if m.conv_layers and m.learner != "vsml":
        raise ConfigError(
            f"Config key 'model.conv_layers' is set but model.learner is '{m.learner}'; conv "
            "layers are VSML layers. Set model.learner: vsml or drop model.conv_layers."
        )


def _validate_distributed(d: DistributedConfig) -> None:
    """Catch a bad address or resource request here, not minutes later inside Ray."""
    if d.address is not None and d.address != "auto":
        host, _, port = d.address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"Config key 'distributed.address' is '{d.address}'; use 'auto' (the cluster "
                "started on this machine with 'ray start') or HOST:PORT of the head node, e.g. "
                "10.0.0.5:6379 (--ray-address). Leave it unset for a private local Ray."
            )
    if d.workers is not None and d.workers < 0:
        raise ConfigError(
            f"Config key 'distributed.workers' must be 0 (in-process, no Ray) or a positive "
            f"number of Ray workers, got {d.workers}."
        )
    if d.workers == 0 and d.address is not None:
        raise ConfigError(
            f"distributed.workers is 0 (in-process evaluation) but distributed.address is "
            f"'{d.address}'. Drop --workers 0 to evaluate on that cluster, or drop the address."
        )
    if d.transfer not in ("auto", "recipe", "members"):
        raise ConfigError(f"Config key 'distributed.transfer' is '{d.transfer}'; valid values: "
                          "auto, recipe, members.")
    if d.backup_after < 0:
        raise ConfigError(f"Config key 'distributed.backup_after' must be >= 0 (0: no backup "
                          f"copies of slow shards), got {d.backup_after}.")
    positive("distributed.cpus_per_worker", d.cpus_per_worker)
    if d.gpus_per_worker < 0:
        raise ConfigError(
            f"Config key 'distributed.gpus_per_worker' must be >= 0, got {d.gpus_per_worker}."
        )
    positive("distributed.shard_timeout_s", d.shard_timeout_s)
    positive("distributed.startup_timeout_s", d.startup_timeout_s)
    if d.max_retries < 0:
        raise ConfigError(
            f"Config key 'distributed.max_retries' must be >= 0, got {d.max_retries}."
        )
