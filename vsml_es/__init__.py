"""vsml-es: meta-learn learning algorithms with VSML and evolution strategies."""

from vsml_es import host_devices as _host_devices
from vsml_es.version import __version__

# One XLA host device per core, before JAX starts (VSML_ES_CPU_DEVICES=1 opts out).
_host_devices.configure()

__all__ = ["__version__", "load_learner"]


def __getattr__(name: str):
    """``vsml_es.load_learner`` without importing JAX until it is used."""
    if name == "load_learner":
        from vsml_es.classifier import load_learner

        return load_learner
    raise AttributeError(f"module 'vsml_es' has no attribute '{name}'")
