"""Will it run? What the config alone cannot tell, checked before any work: the datasets are
prepared and fit the network, and one evaluation chunk fits in memory.

Shapes far beyond memory do not fail politely: XLA aborts the process. VSML keeps an LSTM state
(h and c) per connection for every member of a chunk, so its footprint is predictable.
"""

from __future__ import annotations

import os

from vsml_es.config import Config
from vsml_es.errors import ConfigError
from vsml_es.learners import size_free_names
from vsml_es.tasks import check_datasets_ready, check_metatest_fits, training_feature_counts

WORKING_SET = 4  # states, their update and the gate temporaries live at once (measured ~3x)


def vsml_chunk_bytes(config: Config, num_features: int) -> int:
    """Bytes of the per-connection states of one chunk of members (float32 h and c)."""
    sizes = [num_features, *config.model.hidden_layers, config.task.num_classes]
    connections = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    return config.training.eval_chunk * connections * config.model.state_size * 2 * 4


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(config: Config, num_features: int) -> None:
    """Refuse a VSML evaluation chunk whose working set exceeds this machine's memory (on a
    cluster the workers' memory is theirs to judge: the check applies to local runs only)."""
    if config.model.learner != "vsml" or config.distributed.address is not None:
        return
    total = physical_memory()
    need = WORKING_SET * vsml_chunk_bytes(config, num_features)
    if total is not None and need > total:
        raise ConfigError(
            f"One evaluation chunk of {config.training.eval_chunk} members would need about "
            f"{need / 2**30:.1f} GiB ({WORKING_SET}x its LSTM states), more than this "
            f"machine's {total / 2**30:.1f} GiB. Lower training.eval_chunk or the layer sizes "
            "(model.hidden_layers, the input size), or run on a cluster."
        )


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
