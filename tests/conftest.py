"""Shared fixtures: tiny configs so that every test compiles and runs in seconds."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

# Tests never touch the network and never pick up a user's running Ray cluster.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Tests never read a user's prepared datasets: each session gets an empty data dir, and tests
# that need a TFDS dataset prepare it themselves (offline, from Debian's files).
os.environ["VSML_ES_DATA_DIR"] = tempfile.mkdtemp(prefix="vsml-es-test-data-")
# One XLA compilation cache for the session (its own, empty at the start): the many tiny runs
# build their jitted functions anew, but the same computation compiles once, in this process,
# its subprocesses and Ray workers alike (the same executables either way).
os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE = tempfile.mkdtemp(prefix="vsml-es-test-xla-")
atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

TINY = [
    "training.population_size=8",
    "training.generations=3",
    "training.eval_chunk=4",
    "task.episode_length=8",
    "metatest.episodes=4",
    "metatest.steps=12",
    "metatest.sgd_tuning_episodes=2",
    "logging.progress=false",
    "metatest.datasets=[digits:test]",
    "distributed.workers=0",  # in-process; tests/test_distributed.py covers the Ray paths
]


# The slow tier (pytest -m slow; README "Development"): long end-to-end runs and the fuzz
# target that trains in most of its cases. The fast tier (plain pytest) keeps every kind of
# check: the oracle and the fused kernel, resume (test_checkpoint, test_imitation's resume at
# horizon 0), robustness and fuzzing (test_robustness, the other fuzz targets), Ray on loopback
# (test_distributed's embedded run, worker SIGKILL and retries), scikit-learn conventions
# (test_classifier). .ci/run runs both tiers. Whole modules marked slow in the module itself:
# test_scale. Entries: a test's name, or its name with one parameter set.
SLOW = {
    # Ray: a two-node cluster, a whole compare on Ray, Ctrl-C to a Ray run
    "test_distributed.py::test_two_node_cluster_through_cli_gives_in_process_params",
    "test_distributed.py::test_compare_runs_on_ray_embedded_or_cluster_with_in_process_results",
    "test_distributed.py::test_ctrl_c_checkpoints_and_stops_every_ray_process",
    # Fuzzing: a resume (most cases train) per case
    "test_fuzz.py::test_fuzz_checkpoint_metadata_with_a_matching_manifest",
    # Meta-gradients through 47-wide episodes (test_ten_class_episode_* checks the masking in
    # the fast tier, in float64 and float32), and the deep exported classifier (single: fast)
    "test_output_sizes.py::test_imitation_of_a_ten_class_dataset_in_47_wide_network",
    "test_output_sizes.py::test_exported_classifier_of_47_outputs_learns_ten_classes_as_10_wide"
    "[deep-ln-label]",
    # The fused kernel: ES's vmapped evaluation, and the wide episode on the lower variants
    # (the CPU's own variant stays fast; test_fused_layer_call_* runs every variant fast)
    "test_fused.py::test_fused_population_fitness_matches_jax",
    "test_fused.py::test_fused_wide_deep_episode_matches_oracle[avx2]",
    "test_fused.py::test_fused_wide_deep_episode_matches_oracle[generic]",
    # End-to-end runs of whole commands and recipes
    "test_recipe.py::test_run_sh_chains_the_phases_and_continues_where_it_stopped",
    "test_fewshot.py::test_train_metatest_evaluate_and_backprop_run",
    "test_sweep.py::test_sweep_runs_every_trial_then_continues_a_stopped_sweep",
    "test_compare.py::test_short_compare_run_writes_table_csvs_and_plots",
    "test_paper_configs.py::test_one_generation_at_toy_size[invariances]",
    "test_paper_configs.py::test_one_generation_at_toy_size[sec41_backprop_imitation]",
    "test_paper_configs.py::test_one_generation_at_toy_size[fig8_leave_out_emnist"
    "+fig8_leave_out_fashion_mnist+fig8_leave_out_kmnist+fig8_leave_out_mnist"
    "+fig8_leave_out_random+fig8_train_all]",
    "test_paper_configs.py::test_one_generation_at_toy_size[fig8_train_emnist"
    "+fig8_train_fashion_mnist+fig8_train_kmnist+fig8_train_mnist+fig8_train_random]",
    "test_paper_configs.py::test_one_generation_at_toy_size[fig6_mnist_projections_backprop]",
    "test_paper_configs.py::test_one_generation_at_toy_size[deep_vsml]",
    # Meta-training until a learned number crosses a threshold, and training at other sizes
    # (test_imitation_training_lowers_the_imitation_loss and test_core_training stay fast)
    "test_imitation.py::test_deep_imitation_training_lowers_the_imitation_loss",
    "test_imitation.py::test_backprop_training_lowers_the_online_loss",
    "test_imitation.py::test_compare_skips_size_bound_learners_at_another_size",
    "test_imitation.py::test_metatest_at_a_datasets_own_size",
    "test_learners_meta_rnn.py::test_meta_rnn_learns_after_meta_training_through_the_trainer",
    "test_conv_baseline.py::test_adam_conv_learns_digits_online_as_a_metatest_baseline",
    "test_conv_learner.py::test_conv_learner_trains_exports_and_reproduces_its_metatest",
    "test_input_sizes.py::test_each_member_is_scored_at_the_size_of_its_episode_id",
    "test_fewshot.py::test_only_the_query_is_scored_and_memorising_beats_chance",
    # More whole compare runs and paper configs (test_core_training's end-to-end run and the
    # other paper configs stay fast)
    "test_compare.py::test_pretrained_learner_is_meta_tested_as_its_file_says",
    "test_compare.py::test_seeds_are_compared_apart_and_pooled_across",
    "test_paper_configs.py::test_one_generation_at_toy_size[conv_vsml]",
    # Resume: one SIGKILL moment stays fast, and imitation's resume at horizon 0
    "test_checkpoint.py::test_sigkill_at_random_moment_then_resume_is_bit_identical[1]",
    "test_checkpoint.py::test_sigkill_at_random_moment_then_resume_is_bit_identical[2]",
    "test_imitation.py::test_imitation_resumes_bit_exactly[48-target1]",
    "test_imitation.py::test_carried_episodes_are_staggered_and_restart_at_the_horizon",
    "test_speed.py::test_fitness_same_bits_whatever_the_host_device_count",
    "test_speed.py::test_fitness_same_bits_on_one_or_several_devices",
    "test_ecosystem.py::test_tensorboard_and_wandb_resume_without_duplicate_steps",
}


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        name = item.nodeid.split("/")[-1]
        if name in SLOW or name.split("[")[0] in SLOW:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)


@pytest.fixture
def dataset_loads(monkeypatch) -> list[tuple[str, str]]:
    """Every (name, split) that tasks load from now on, in order."""
    from vsml_es import tasks

    seen: list[tuple[str, str]] = []
    real = tasks.load_dataset

    def spy(name, split="train", data_dir=None):
        seen.append((name, split))
        return real(name, split, data_dir)

    monkeypatch.setattr(tasks, "load_dataset", spy)
    return seen
