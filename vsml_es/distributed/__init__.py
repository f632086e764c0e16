"""Population evaluation on Ray actors: a private local Ray by default, or a cluster.

The Ray adapter package (with ``trials``, sweep trials on Ray Tune): the only code that imports
Ray; deleting it removes the choice of evaluator and the sweeps, nothing else.

- ``session``: starting (loopback only) or joining Ray, and how many workers fit;
- ``shards``: splitting a population into shards of whole antithetic pairs;
- ``transfer``: members or the ES recipe they were drawn from, whichever the strategy allows;
- ``worker``: the actor, which holds the dataset and calls the same ``evaluate_members`` as
  the in-process evaluator;
- ``evaluator``: the driver's side: dispatch, re-sends of dead or hung workers' shards, backup
  copies of stragglers.

``evaluate_members`` runs every member in fixed-size chunks and episodes are rebuilt from
(seed, generation, episode id), so fitness is bit-identical whatever the worker count, the
sharding, the retries, the backups or the transfer.
"""

from vsml_es.distributed.evaluator import POLL_S, RayEvaluator, _Generation
from vsml_es.distributed.session import (
    _prepare_environment,
    _summary,
    ray_session,
    resolve_workers,
)
from vsml_es.distributed.shards import plan_shards
from vsml_es.distributed.transfer import nbytes
from vsml_es.distributed.worker import ShardWorker
from vsml_es.errors import ClusterError, WorkerError

__all__ = ["POLL_S", "ClusterError", "RayEvaluator", "ShardWorker", "WorkerError",
           "_Generation", "_prepare_environment", "_summary", "nbytes", "plan_shards",
           "ray_session", "resolve_workers"]
