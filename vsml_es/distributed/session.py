"""Starting or joining Ray (loopback only when private), and how many workers fit on it."""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from vsml_es.config import DistributedConfig
from vsml_es.errors import ClusterError

CONNECT_TIMEOUT_S = 5.0  # TCP check of a HOST:PORT address before Ray is asked to join it
LOOPBACK = ("127.0.0.1", "::1", "localhost")



def _is_loopback(address: str | None) -> bool:
    return address is None or address.rpartition(":")[0].strip("[]") in LOOPBACK


def _prepare_environment(address: str | None) -> None:
    """Environment that Ray reads when it is imported and when it starts its processes."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # never phone home
    if _is_loopback(address):
        # Ray's switch for "this machine only": localhost stays 127.0.0.1 (Ray would rewrite it
        # to the machine's network address), so every listener of an embedded Ray binds to
        # loopback instead of all interfaces. Read when Ray is imported.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


def _check_reachable(address: str) -> None:
    """A dead host or closed port makes ``ray.init`` retry for minutes; fail in seconds."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise ClusterError(
            f"Cannot reach the Ray head at {address} ({err}). Check that 'ray start --head "
            f"--port {port}' is running on {host}, that this machine can reach that port "
            "(firewall, security group, VPN), and that the address is the one 'ray status' "
            "prints on the head node."
        ) from None


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


class _DropTokenNotice(logging.Filter):
    """Ray 2.60 announces on every start that token authentication is on. For the private Ray
    it tells the user nothing they need (it is loopback-only and has its token): dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Token authentication is enabled for this Ray cluster" not in record.getMessage()


_TOKEN_LOGGER = "ray._private.authentication.authentication_token_setup"


def _init_ray(dist: DistributedConfig, log_to_driver: bool = True) -> None:
    import ray

    common = {"logging_level": logging.WARNING, "namespace": "vsml-es",
              "log_to_driver": log_to_driver}
    if dist.address is None:
        if ray.util.get_node_ip_address() not in ("127.0.0.1", "::1"):
            raise ClusterError(
                "The private local Ray would listen on all network interfaces: Ray was "
                "imported in this process before vsml-es could keep it on loopback. Set the "
                "environment variable RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before Python "
                "starts, or join a cluster you started with --ray-address."
            )
        want = (dist.workers or 0) * dist.cpus_per_worker
        ray.init(address="local", num_cpus=max(_cpu_count(), math.ceil(want)),
                 include_dashboard=False, **common)
        return
    if dist.address != "auto":
        _check_reachable(dist.address)
    try:
        ray.init(address=dist.address, **common)
    except ray.exceptions.AuthenticationError as err:
        raise ClusterError(
            f"The Ray cluster at '{dist.address}' refused this driver's token ({err}). Use "
            "the cluster's token: RAY_AUTH_MODE=token and ~/.ray/auth_token or RAY_AUTH_TOKEN "
            "as on its nodes (see cluster/README.md)."
        ) from None
    except (ConnectionError, RuntimeError) as err:  # no cluster, or a Ray version mismatch
        raise ClusterError(
            f"Cannot join a Ray cluster at '{dist.address}': {err} Start one with 'ray start "
            "--head' (see cluster/README.md), or leave --ray-address out for a private local "
            "Ray."
        ) from None


@contextmanager
def ray_session(dist: DistributedConfig, log_to_driver: bool = True) -> Iterator[None]:
    """Start (embedded) or join (address) Ray; always shut down, on errors and Ctrl-C too.

    Start it before heavy JAX work: Ray forks its helper processes, and a fork after JAX's
    threads are busy can deadlock. ``load_config`` has only touched JAX lightly by then; the
    warning JAX prints for that is filtered here. ``log_to_driver=False`` keeps what the Ray
    workers print (in Ray's session logs) off this terminal.
    """
    _prepare_environment(dist.address)  # before the first ``import ray``
    import ray

    if ray.is_initialized():
        raise RuntimeError("Ray is already initialized in this process; shut it down first.")
    notice = _DropTokenNotice()
    logging.getLogger(_TOKEN_LOGGER).addFilter(notice)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called",
                                    category=RuntimeWarning)
            _init_ray(dist, log_to_driver)
        yield
    finally:
        ray.shutdown()
        logging.getLogger(_TOKEN_LOGGER).removeFilter(notice)


def resolve_workers(dist: DistributedConfig) -> int:
    """``workers`` or, when unset, one per live node (one per GPU share with GPUs).

    A CPU worker's XLA already uses every core of its node, so more workers per node add no
    throughput; one per node is the default.
    """
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    fits = [_fits_on(r, dist) for r in nodes]
    if max(fits, default=0) == 0:
        largest = max(nodes, key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)), default={})
        message = (
            f"Each Ray worker asks for {dist.cpus_per_worker:g} CPU(s) and "
            f"{dist.gpus_per_worker:g} GPU(s) (distributed.cpus_per_worker, "
            f"distributed.gpus_per_worker), but the largest node has "
            f"{largest.get('CPU', 0):g} CPU(s) and {largest.get('GPU', 0):g} GPU(s)."
        )
        if dist.address is None:
            raise ClusterError(message + " Lower the request, or join a cluster with bigger "
                               "nodes through --ray-address.")
        print(f"warning: {message} Waiting up to {dist.startup_timeout_s:g} s for the "
              "autoscaler to add such a node.", file=sys.stderr)
    if dist.workers is not None:
        return dist.workers
    return max(1, sum(fits))


def cores_per_worker(dist: DistributedConfig, workers: int) -> int | None:
    """Cores (XLA host devices and threads) each worker takes when several share this machine
    (the private local Ray, CPU only): its cores split between them, so N workers do not each
    run a thread per core. None: all of its node's cores (one worker per node, or a cluster)."""
    if dist.address is not None or dist.gpus_per_worker > 0 or workers <= 1:
        return None
    return max(1, _cpu_count() // workers)


def _fits_on(resources: dict[str, float], dist: DistributedConfig) -> int:
    """Default workers on one node: one per GPU share, else one (XLA uses all its cores)."""
    count = int(resources.get("CPU", 0) // dist.cpus_per_worker)
    if dist.gpus_per_worker > 0:
        return min(count, int(resources.get("GPU", 0) // dist.gpus_per_worker))
    return min(count, 1)



def _summary(err: BaseException, limit: int = 600) -> str:
    """The remote error without Ray's traceback banner."""
    cause = getattr(err, "cause", None)
    text = f"{type(cause).__name__}: {cause}" if cause is not None else str(err)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _resources() -> str:
    import ray

    total = ray.cluster_resources()
    return f"{total.get('CPU', 0):g} CPU(s) and {total.get('GPU', 0):g} GPU(s) in all"
