import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: reproductions, distributed runs, benchmarks, Hugging Face models and "
        "tests over ~1.5 s; `pytest -m 'not slow'` leaves them out, CI runs everything")


# Tests over ~1.5 s (measured with --durations on a shared 2-core machine, about 2x slower than
# an idle one) and whole files of reproductions, distributed runs, benchmarks and Hugging Face
# models: `python -m pytest -m "not slow"` leaves them out (about a minute), CI runs them all.
# A new slow test may carry @pytest.mark.slow itself instead of a line here.
SLOW_FILES = {"test_bench_script.py", "test_bench_token_models.py", "test_distributed.py",
              "test_distributed_structured.py", "test_hf.py", "test_reproductions.py"}
SLOW_TESTS = {
    "test_attention.py::test_the_math_kernel_computes_the_users_function[mha-causal-batch-first]",
    "test_block_eigs.py::test_cross_entropy_ggn_bottom_three_are_zero",
    "test_bounds.py::test_every_stated_error_holds_against_the_dense_truth[clusters at both ends-1]",
    "test_bounds.py::test_every_stated_error_holds_against_the_dense_truth[clusters at both ends-None]",
    "test_bounds.py::test_every_stated_error_holds_against_the_dense_truth[indefinite with a deep outlier-None]",
    "test_bounds.py::test_every_stated_error_holds_against_the_dense_truth[linreg bottom-3-None]",
    "test_bounds.py::test_ok_means_the_listed_values_are_right[clusters at both ends]",
    "test_bounds.py::test_ok_means_the_listed_values_are_right[indefinite with a deep outlier]",
    "test_bounds.py::test_ok_means_the_listed_values_are_right[linreg bottom-3]",
    "test_cli.py::test_ggn_is_positive_semidefinite",
    "test_cli.py::test_spectrum_run_leaves_lazy_modules_unimported",
    "test_compare.py::test_interrupted_then_resumed_csv_is_identical[23]",
    "test_trace.py::test_stated_error_is_honest_across_seeds[rademacher-hutchinson]",
    "test_trace.py::test_stated_error_is_honest_across_seeds[rademacher-hutchpp]",
    "test_track.py::test_sgd_rows_compare_lambda_max_with_2_over_lr",
    "test_track_fast.py::test_lambda_max_sweep_reproduces_the_hook_and_warm_starts_save_products",
    "test_attention.py::test_hessian_through_attention_matches_double_backward[sdpa-causal-dtype1-cpu]",
    "test_bounds.py::test_linreg_kappa_is_within_its_error_or_a_flagged_lower_bound",
    "test_bounds.py::test_a_deep_outlier_under_a_loose_tolerance_is_not_ok",
    "test_bounds.py::test_ok_means_the_listed_values_are_right[linreg cluster at the bottom]",
    "test_bounds.py::test_every_stated_error_holds_against_the_dense_truth[linreg cluster at the bottom-None]",
    "test_bounds.py::test_every_stated_error_holds_against_the_dense_truth[linreg cluster at the bottom-1]",
    "test_bounds.py::test_every_stated_error_holds_against_the_dense_truth[linreg bottom-3-1]",
    "test_bounds.py::test_every_stated_error_holds_against_the_dense_truth[indefinite with a deep outlier-1]",
    "test_trust_consistency.py::test_softmax_regression_hessian_at_one_vector_ends_is_not_positive_definite",
    "test_trust_consistency.py::test_weight_decay_removes_the_proven_null_space",
    "test_attention.py::test_hessian_through_attention_matches_double_backward[sdpa-causal-dtype0-cpu]",
    "test_trust_consistency.py::test_the_input_normalized_linear_model_counts_its_92_null_directions",
    "test_track_fast.py::test_a_stale_warm_file_is_not_used_on_resume",
    "test_attention.py::test_hessian_through_attention_matches_double_backward[mha-causal-batch-first-dtype1-cpu]",
    "test_attention.py::test_hessian_through_attention_matches_double_backward[mha-eval-fast-path-dtype0-cpu]",
    "test_attention.py::test_hessian_through_attention_matches_double_backward[mha-eval-fast-path-dtype1-cpu]",
    "test_attention.py::test_hessian_through_attention_matches_double_backward[mha-sequence-first-dtype0-cpu]",
    "test_attention.py::test_hessian_through_attention_matches_double_backward[mha-sequence-first-dtype1-cpu]",
    "test_bad_input.py::test_a_zero_diagonal_is_refused_before_any_eigenvalue[gn-sqrt]",
    "test_bad_input.py::test_a_zero_diagonal_is_refused_before_any_eigenvalue[gn]",
    "test_compare.py::test_interrupted_then_resumed_csv_is_identical[11]",
    "test_eigs.py::test_hessian_like_matvec_budget",
    "test_eigs.py::test_prescribed_spectra[bottom only-1]",
    "test_operators.py::test_operator_matches_dense_reference[cnn-ce-hessian-direct]",
    "test_options.py::test_every_command_takes_its_options_from_the_schema",
    "test_same_bytes.py::test_the_kernels_differ_in_blas_itself",
    "test_settings.py::test_one_feature_closed_form",
    "test_stability.py::test_gd_and_heavy_ball_thresholds_match_torch_sgd[gd-0.0]",
    "test_stability.py::test_gd_and_heavy_ball_thresholds_match_torch_sgd[momentum-0.5]",
    "test_style.py::test_no_import_circles",
    "test_trust_consistency.py::test_gn_in_its_eigenbasis_is_exactly_lambda_over_lambda_plus_eps",
    "test_trust_inputs.py::test_labels_equal_to_the_input_ids_are_shifted_to_the_next_token",
    "test_trust_notes.py::test_a_batchnorm_on_batch_statistics_says_the_operator_depends_on_the_batching",
    "test_user_models.py::test_builtin_label_smoothing_equals_torch",
    "test_user_models.py::test_token_model_from_a_dataset_factory[hessian]",
    "test_trust_consistency.py::test_a_ggn_under_exact_is_never_indefinite_whatever_the_band",
    "test_trust_consistency.py::test_a_preconditioned_hessian_in_the_eigenbasis_keeps_the_baselines_inertia",
    "test_attention.py::test_ggn_through_attention_matches_jacobian_truth[dtype0-cpu]",
    "test_attention.py::test_ggn_through_attention_matches_jacobian_truth[dtype1-cpu]",
    "test_attention.py::test_hessian_through_attention_matches_double_backward[mha-causal-batch-first-dtype0-cpu]",
    "test_check.py::test_example_baseline_passes_on_a_fresh_checkpoint_and_fails_on_a_degraded_one",
    "test_check.py::test_same_seed_same_numbers_bitwise",
    "test_cli.py::test_demo_runs_on_its_embedded_default",
    "test_cli.py::test_density_plot",
    "test_cli.py::test_unseen_model_matches_dense_eigendecomposition[ggn]",
    "test_compare.py::test_cli_compare_writes_csv_plot_and_resumes",
    "test_compare.py::test_interrupted_then_resumed_csv_is_identical[1]",
    "test_compare.py::test_interrupted_then_resumed_csv_is_identical[50]",
    "test_compare.py::test_plot_marks_a_kappa_the_dtype_cannot_resolve_by_its_bound",
    "test_compare.py::test_plot_draws_no_unconverged_kappa_and_converged_runs_have_no_hollow_markers",
    "test_compare.py::test_runs_rows_divergence_and_lr_choice",
    "test_compare.py::test_tables_render_as_text",
    "test_data.py::test_a_long_synthetic_spec_is_not_taken_for_a_file_name",
    "test_findings.py::test_adam_beats_gn_fails_where_gn_is_newton",
    "test_inertia.py::test_slq_counts_the_negatives_of_a_separated_spectrum",
    "test_operators.py::test_cached_and_direct_products_agree_and_cache_is_used",
    "test_operators.py::test_kept_graphs_beyond_the_memory_budget_fall_back_to_direct_products",
    "test_operators.py::test_operator_matches_dense_reference[batchnorm-batch-ce-ggn-linearized]",
    "test_operators.py::test_operator_matches_dense_reference[batchnorm-eval-ce-ggn-linearized]",
    "test_operators.py::test_operator_matches_dense_reference[cnn-ce-ggn-direct]",
    "test_operators.py::test_operator_matches_dense_reference[cnn-ce-ggn-linearized]",
    "test_operators.py::test_operator_matches_dense_reference[linear-mse-ggn-linearized]",
    "test_operators.py::test_operator_matches_dense_reference[mlp-ce-ggn-linearized]",
    "test_operators.py::test_operator_matches_dense_reference[mlp-mse-ggn-linearized]",
    "test_operators.py::test_operator_matches_dense_reference[residual-layernorm-ce-ggn-linearized]",
    "test_operators.py::test_operator_matches_dense_reference[residual-layernorm-ce-hessian-direct]",
    "test_pipeline.py::test_demo_prints_at_most_15_lines",
    "test_preconditioners.py::test_gn_and_hessian_diagonals",
    "test_readme.py::test_python_examples_run",
    "test_readme_own_model.py::test_the_recipes_run_as_written",
    "test_settings.py::test_batchnorm_model_nullity_predicted_and_measured",
    "test_stability.py::test_gd_and_heavy_ball_thresholds_match_torch_sgd[momentum-0.9]",
    "test_track.py::test_a_csv_inside_the_checkpoint_folder_is_not_taken_for_a_checkpoint",
    "test_track.py::test_track_needs_a_model_for_plain_checkpoints",  # its fixture trains (7 s)
    "test_track.py::test_an_interrupted_sweep_resumes_to_the_same_bytes",
    "test_track.py::test_bad_input_is_one_line_with_exit_codes",
    "test_track.py::test_track_reproduces_the_hook_at_the_same_steps",
    "test_track.py::test_warm_starts_match_cold_starts_and_save_products",
    "test_user_models.py::test_builtin_token_transformer_on_a_token_file[ggn]",
    "test_user_models.py::test_builtin_token_transformer_on_a_token_file[hessian]",
    "test_user_models.py::test_custom_loss_function[ggn]",
    "test_user_models.py::test_custom_loss_function[hessian]",
    "test_user_models.py::test_dataloader_batches_are_weighted_by_tokens",
    "test_user_models.py::test_done_when_command_with_training_checkpoint",
    "test_user_models.py::test_token_model_from_a_dataset_factory[ggn]",
}


def pytest_ignore_collect(collection_path, config):
    """Under ``-m "not slow"`` the wholly slow files are not even imported (test_hf would
    import transformers just to deselect its tests)."""
    if collection_path.name in SLOW_FILES and config.getoption("markexpr", "") == "not slow":
        return True
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = f"{item.path.name}::{item.nodeid.split('::', 1)[1]}"  # as listed: file::test
        if item.path.name in SLOW_FILES or name in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _one_thread_and_seed():
    """Tests run single-threaded (CI has 2 cores) and from a fixed global seed."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _grad_mode_is_restored(request):
    """A test (or the code under it) must not leave autograd disabled for the next one."""
    yield
    if not torch.is_grad_enabled():
        torch.set_grad_enabled(True)
        pytest.fail(f"{request.node.nodeid} left torch grad mode disabled")
