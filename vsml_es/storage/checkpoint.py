"""Checkpoints of a meta-training run: atomic, verified by SHA-256, restorable bit for bit.

Layout, one directory per checkpoint::

    RUN_DIR/checkpoints/gen-000040/
        state.npz      ES state and ES params (leaves by position), ES root key data, mean params
        meta.json      generation, resolved config, metrics log position, fitness, task sizes,
                       input preprocessing, leaf paths/dtypes/shapes, versions
        MANIFEST.json  SHA-256 and size of every other file; written last

Format: npz read with ``allow_pickle=False`` plus JSON, never pickle. orbax-checkpoint would also
be atomic, but the manifest check and the "skip a bad checkpoint, use the previous one" rule are
ours either way, and plain npz + JSON keeps every byte verifiable and readable with numpy alone.

Writing: files go into a hidden temporary directory, each fsynced, the manifest last, then the
directory is renamed into place and its parent fsynced. A kill at any moment leaves either the
previous set of checkpoints or the new one; leftovers (``.tmp-*``, ``.trash-*``) are ignored and
cleaned by the next save. Reading verifies the manifest before anything is parsed.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vsml_es.errors import CheckpointError, DivergedError, Report
from vsml_es.errors import report as report_to_stderr
from vsml_es.storage.atomic import atomic_write_directory, write_synced
from vsml_es.version import __version__

FORMAT = "vsml-es-checkpoint"
FORMAT_VERSION = 1
CHECKPOINTS = "checkpoints"
MANIFEST = "MANIFEST.json"
STATE_FILE = "state.npz"
META_FILE = "meta.json"
_NAME = re.compile(r"^gen-(\d{6,})$")

def versions() -> dict[str, str]:
    """Versions that decide whether a resume reproduces the same floats."""
    import evosax

    return {
        "vsml_es": __version__,
        "jax": jax.__version__,
        "jaxlib": _version_of("jaxlib"),
        "evosax": getattr(evosax, "__version__", _version_of("evosax")),
        "numpy": np.__version__,
    }


def _version_of(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


# --------------------------------------------------------------------------------------------
# Pytrees <-> named arrays (evosax State/Params are flax struct pytrees)


def _is_key(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def tree_to_arrays(tree: Any, prefix: str) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Leaves as ``{prefix}NNNN`` arrays plus a JSON description (path, dtype, shape, weak type).

    Typed PRNG keys are stored as their key data with the implementation's name.
    """
    arrays: dict[str, np.ndarray] = {}
    specs: list[dict[str, Any]] = []
    for i, (path, leaf) in enumerate(jax.tree_util.tree_flatten_with_path(tree)[0]):
        key_impl = None
        if _is_key(leaf):
            key_impl = str(jax.random.key_impl(leaf))
            leaf = jax.random.key_data(leaf)
        value = np.asarray(leaf)
        name = f"{prefix}{i:04d}"
        arrays[name] = value
        specs.append({
            "name": name,
            "path": jax.tree_util.keystr(path),
            "dtype": str(value.dtype),
            "shape": list(value.shape),
            # jit caches on weak types: restoring them avoids one recompile after a resume.
            "weak_type": bool(getattr(leaf, "weak_type", False)),
            "key_impl": key_impl,
        })
    return arrays, specs


def arrays_to_tree(
    template: Any, arrays: dict[str, np.ndarray], specs: list[dict[str, Any]], what: str
) -> Any:
    """Rebuild a pytree shaped like ``template`` from :func:`tree_to_arrays` output, checked."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    if len(leaves) != len(specs):
        raise CheckpointError(
            f"the saved {what} has {len(specs)} arrays but this config and evosax version "
            f"expect {len(leaves)}"
        )
    restored = []
    for (path, leaf), spec in zip(leaves, specs, strict=True):
        where = jax.tree_util.keystr(path)
        value = arrays.get(spec["name"])
        if value is None:
            raise CheckpointError(f"{what} array {spec['name']} ({where}) is missing")
        expected = jax.random.key_data(leaf) if _is_key(leaf) else np.asarray(leaf)
        if spec["path"] != where or value.shape != expected.shape or (
            value.dtype != expected.dtype
        ):
            raise CheckpointError(
                f"the saved {what} leaf {spec['path']} {value.dtype}{list(value.shape)} does not "
                f"match {where} {expected.dtype}{list(expected.shape)} of this config and "
                "evosax version"
            )
        try:
            restored.append(_restore_leaf(value, spec))
        except Exception as err:  # noqa: BLE001 (a key implementation JAX does not know)
            raise CheckpointError(f"{what} leaf {where} cannot be rebuilt: {err}") from None
    return jax.tree_util.tree_unflatten(treedef, restored)


def _restore_leaf(value: np.ndarray, spec: dict[str, Any]) -> jax.Array:
    if spec.get("key_impl"):
        return jax.random.wrap_key_data(jnp.asarray(value), impl=spec["key_impl"])
    if spec.get("weak_type") and value.ndim == 0:
        weak = jnp.asarray(value.item())  # a Python scalar gives a weakly typed array
        if weak.dtype == value.dtype:
            return weak
    return jnp.asarray(value)


# --------------------------------------------------------------------------------------------
# Writing


@dataclass
class Snapshot:
    """Everything a resume needs, as produced by the trainer at the end of a generation."""

    generation: int
    es_state: Any
    es_params: Any
    rng_key: jax.Array  # the run's ES root key (typed)
    mean_params: dict[str, Any]
    info: dict[str, Any]  # JSON: config, metrics_position, fitness, num_features, ...


def checkpoint_name(generation: int) -> str:
    return f"gen-{generation:06d}"


def save_checkpoint(run_dir: Path, snapshot: Snapshot) -> Path:
    """Write one checkpoint atomically; returns its directory. Non-finite meta-parameters are
    never written (a resume would have to skip them): :class:`DivergedError`."""
    for name, value in snapshot.mean_params.items():
        if not np.all(np.isfinite(np.asarray(value))):
            raise DivergedError(
                f"Meta-training diverged by generation {snapshot.generation}: the mean "
                f"parameter {name} holds NaN or infinity, so no checkpoint of it is written. "
                "Lower training.learning_rate (or training.sigma) and start a new run; export "
                "what was learned before with 'vsml-es export RUN_DIR --checkpoint best'.")
    state_arrays, state_specs = tree_to_arrays(snapshot.es_state, "state_")
    param_arrays, param_specs = tree_to_arrays(snapshot.es_params, "es_params_")
    arrays = {**state_arrays, **param_arrays}
    arrays["rng_key_data"] = np.asarray(jax.random.key_data(snapshot.rng_key))
    for name, value in snapshot.mean_params.items():
        arrays[f"mean/{name}"] = np.asarray(value)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "generation": snapshot.generation,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": versions(),
        "rng_key_impl": str(jax.random.key_impl(snapshot.rng_key)),
        "es_state": state_specs,
        "es_params": param_specs,
        "mean_params": sorted(snapshot.mean_params),
        **snapshot.info,
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    files = {
        STATE_FILE: buffer.getvalue(),
        META_FILE: json.dumps(meta, indent=1, sort_keys=True).encode(),
    }
    return _write_directory(Path(run_dir) / CHECKPOINTS / checkpoint_name(snapshot.generation),
                            files)


def _write_directory(final: Path, files: dict[str, bytes]) -> Path:
    def fill(tmp: Path) -> None:
        for name, payload in files.items():
            write_synced(tmp / name, payload)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "files": {
                name: {"sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload)}
                for name, payload in files.items()
            },
        }
        write_synced(tmp / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())

    return atomic_write_directory(final, fill)


# --------------------------------------------------------------------------------------------
# Reading and verifying


@dataclass
class Checkpoint:
    """A verified checkpoint: its arrays and metadata, not yet turned back into pytrees."""

    path: Path
    generation: int
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]

    def es_state(self, template: Any) -> Any:
        return arrays_to_tree(template, self.arrays, self.meta["es_state"], "ES state")

    def es_params(self, template: Any) -> Any:
        return arrays_to_tree(template, self.arrays, self.meta["es_params"], "ES params")

    def rng_key(self) -> jax.Array:
        try:
            return jax.random.wrap_key_data(jnp.asarray(self.arrays["rng_key_data"]),
                                            impl=self.meta["rng_key_impl"])
        except Exception as err:  # noqa: BLE001 (an unknown implementation name, bad shape)
            raise CheckpointError(f"its ES key cannot be rebuilt: {err}") from None

    def mean_params(self) -> dict[str, np.ndarray]:
        return {name: self.arrays[f"mean/{name}"] for name in self.meta["mean_params"]}


def checkpoint_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """(generation, directory) of every named checkpoint directory, oldest first (unverified)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _NAME.match(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_manifest(path: Path) -> None:
    """Raise :class:`CheckpointError` unless every file matches the manifest."""
    manifest_path = Path(path) / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError("it has no MANIFEST.json (it was not completely written)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (ValueError, OSError):  # UnicodeDecodeError is a ValueError
        raise CheckpointError("its MANIFEST.json is unreadable") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"MANIFEST.json is not a {FORMAT} manifest")
    if not isinstance(files, dict) or not all(
            isinstance(name, str) and "/" not in name and name not in ("", ".", "..")
            and isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
            and isinstance(entry.get("size"), int) for name, entry in files.items()):
        raise CheckpointError("its MANIFEST.json does not list files as name: {sha256, size}")
    for name in (STATE_FILE, META_FILE):
        if name not in files:
            raise CheckpointError(f"its manifest does not list {name}")
    for name, expected in files.items():
        file = Path(path) / name
        if not file.is_file():
            raise CheckpointError(f"{name} is missing")
        size = file.stat().st_size
        if size != expected["size"]:
            raise CheckpointError(f"{name} has {size} bytes, the manifest says {expected['size']}")
        if _sha256(file) != expected["sha256"]:
            raise CheckpointError(f"{name} does not match its SHA-256 in the manifest")


_LEAF_SPEC_KEYS = {"name": str, "path": str, "dtype": str, "shape": list}


def _check_meta(meta: Any) -> None:
    """The structure a resume relies on, so a well-formed but wrong meta.json is skipped like
    a corrupt one instead of failing later."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"meta.json is not a {FORMAT} file")
    version = meta.get("format_version", 0)
    if not isinstance(version, int):
        raise CheckpointError(f"meta.json has format version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"it has format version {version}, newer than this vsml-es reads "
            f"({FORMAT_VERSION}); upgrade vsml-es"
        )
    missing = [k for k in ("config", "es_state", "es_params", "mean_params", "rng_key_impl")
               if k not in meta]
    if missing:
        raise CheckpointError(f"meta.json lacks {', '.join(missing)}")
    if not isinstance(meta["config"], dict) or not isinstance(meta["rng_key_impl"], str):
        raise CheckpointError("meta.json has a malformed config or key implementation")
    for section in ("es_state", "es_params"):
        specs = meta[section]
        if not isinstance(specs, list) or not all(
                isinstance(spec, dict) and all(isinstance(spec.get(k), t)
                                               for k, t in _LEAF_SPEC_KEYS.items())
                for spec in specs):
            raise CheckpointError(f"meta.json's {section} is not a list of array descriptions")
    if not isinstance(meta["mean_params"], list) or not all(
            isinstance(name, str) for name in meta["mean_params"]):
        raise CheckpointError("meta.json's mean_params is not a list of names")
    position = meta.get("metrics_position", {})
    if not isinstance(position, dict) or not all(
            isinstance(v, int) and v >= 0 for v in position.values()):
        raise CheckpointError("meta.json's metrics_position is malformed")


def read_checkpoint(path: Path) -> Checkpoint:
    """Verify, then parse one checkpoint directory (no pickle anywhere)."""
    path = Path(path)
    verify_manifest(path)
    try:
        meta = json.loads((path / META_FILE).read_text())
        with np.load(path / STATE_FILE, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except Exception as err:  # noqa: BLE001 (numpy's zip/npy parsers raise many kinds)
        raise CheckpointError(f"it cannot be parsed: {err}") from None
    _check_meta(meta)
    generation = meta.get("generation")
    match = _NAME.match(path.name)
    if not isinstance(generation, int) or (match and int(match.group(1)) != generation):
        raise CheckpointError(f"it holds generation {generation!r}, not its name's")
    wanted = [spec["name"] for section in ("es_state", "es_params") for spec in meta[section]]
    wanted += ["rng_key_data", *(f"mean/{name}" for name in meta["mean_params"])]
    absent = [name for name in wanted if name not in arrays]
    if absent:
        raise CheckpointError(f"state.npz lacks {', '.join(absent[:3])}")
    check_finite_mean(arrays, meta["mean_params"])
    return Checkpoint(path, generation, meta, arrays)


DIVERGED = "its mean parameters are not finite (NaN or infinity): the run had diverged"


def check_finite_mean(arrays: dict[str, np.ndarray], names: list[str]) -> None:
    """The meta-parameters of a checkpoint are numbers: a diverged run's NaN/inf checkpoint
    is skipped on resume like a corrupt one (for the newest finite one)."""
    for name in names:
        value = arrays[f"mean/{name}"]
        if value.dtype.kind not in "fiub":
            raise CheckpointError(f"its mean parameter {name} has dtype {value.dtype}")
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise CheckpointError(DIVERGED)


def latest_checkpoint(run_dir: Path, report: Report = report_to_stderr) -> Checkpoint | None:
    """The newest checkpoint that verifies; each one skipped on the way is reported."""
    skipped = []
    for _, path in reversed(checkpoint_dirs(run_dir)):
        try:
            ckpt = read_checkpoint(path)
        except CheckpointError as err:
            report(f"warning: checkpoint {path} is unusable: {err}.")
            skipped.append(path)
            continue
        if skipped:
            report(f"using the previous valid checkpoint {path} (generation {ckpt.generation}).")
        return ckpt
    if skipped:
        report(f"warning: no valid checkpoint in {Path(run_dir) / CHECKPOINTS}.")
    return None


def best_checkpoint(run_dir: Path, report: Report = report_to_stderr) -> Checkpoint | None:
    """The valid checkpoint with the lowest recorded fitness (newest on ties)."""
    best: Checkpoint | None = None
    for _, path in checkpoint_dirs(run_dir):
        try:
            ckpt = read_checkpoint(path)
        except CheckpointError as err:
            report(f"warning: checkpoint {path} is unusable: {err}.")
            continue
        if best is None or _fitness(ckpt.meta) <= _fitness(best.meta):
            best = ckpt
    return best


def _fitness(meta: dict[str, Any]) -> float:
    value = meta.get("fitness")
    return float(value) if isinstance(value, int | float) and np.isfinite(value) else np.inf


# --------------------------------------------------------------------------------------------
# Retention


def prune(run_dir: Path, keep: int, keep_best: bool) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints (and the best one); returns the deleted.

    Deletion renames first, so a kill never leaves a half-deleted checkpoint under its name.
    Only metadata is read here; full verification happens when a checkpoint is loaded.
    """
    root = Path(run_dir) / CHECKPOINTS
    found = checkpoint_dirs(run_dir)
    keepers = {path for _, path in found[-keep:]}
    if keep_best and found:
        scored = [(_fitness(_read_meta(path)), -generation, path) for generation, path in found]
        keepers.add(min(scored, key=lambda s: (s[0], s[1]))[2])
    deleted = []
    for _, path in found:
        if path not in keepers:
            trash = root / f".trash-{path.name}-{uuid.uuid4().hex[:8]}"
            path.rename(trash)
            deleted.append(path)
    for leftover in root.glob(".trash-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in root.glob(".tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    return deleted


def set_aside_after(run_dir: Path, generation: int) -> list[Path]:
    """Rename checkpoints newer than ``generation`` (the unusable ones a resume skipped) to
    ``.corrupt-*``, so retention never prefers them to the new ones; kept for inspection."""
    moved = []
    for g, path in checkpoint_dirs(run_dir):
        if g > generation:
            target = path.parent / f".corrupt-{path.name}-{uuid.uuid4().hex[:8]}"
            path.rename(target)
            moved.append(target)
    return moved


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads((path / META_FILE).read_text())
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
