"""Test-wide settings: float64 available, hypothesis reproducible and jit-friendly,
and which tests are ``slow`` (``pytest -m "not slow"`` runs the rest in under
a minute on two cores)."""

import hypothesis
import jax
import pytest

# Tests pass explicit dtypes; x64 only makes float64 available to them.
jax.config.update("jax_enable_x64", True)
# Eight CPU devices for the sharded-sweep tests (before any JAX op); code that
# does not shard uses the first, as on a one-device machine.
jax.config.update("jax_num_cpu_devices", 8)

hypothesis.settings.register_profile(
  "vae_jax",
  max_examples=40,
  deadline=None,
  derandomize=True,
  suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
hypothesis.settings.load_profile("vae_jax")


# Unit tests that take seconds each on CI's 2 cores (measured with
# --durations=0; the seconds are their total over all parameters), besides
# the end-to-end modules that mark themselves. A name matches the test and
# its parameterised cases.
SLOW = (
  "tests/test_training.py::test_an_epoch_checked_once_equals_one_checked_every_step",
  "tests/test_transforms.py::TransformTest::test_gradients_match_finite_differences_in_float",  # 32.9 s
  "tests/test_transforms.py::ExtremeLogitTest::test_finite_values_and_gradients_at_1e",  # 16.2 s
  "tests/test_training.py::test_train_step_is_an_adam_step",  # 11.9 s
  "tests/test_transforms.py::TransformTest::test_bfloat16_values_and_gradients_are_finite_and_close",  # 8.8 s
  "tests/test_training.py::test_epoch_stops_updating_at_the_first_non_finite_step",  # 8.7 s
  "tests/test_objectives.py::ELBOTest::test_iwae_bound_tightens_with_k_below_log_marginal",  # 8.0 s
  "tests/test_training.py::test_shapes",  # 7.5 s
  "tests/test_training.py::test_scanned_epoch_equals_the_stepwise_loop",  # 6.4 s
  "tests/test_likelihoods.py::BernoulliTest::test_second_derivatives_match_finite_differences",  # 5.2 s
  "tests/test_training.py::test_loss_against_a_numpy_reference",  # 5.0 s
  "tests/test_transforms.py::TransformTest::test_jit_equals_eager_and_keeps_dtype",  # 4.9 s
  "tests/test_equivalences.py::SigmaBetaTradeTest::test_gradients_are_parallel_with_factor_one_over_two_sigma",  # 4.8 s
  "tests/test_prng.py::SameAsJaxRandomTest::test_uniform",  # 4.5 s
  "tests/test_likelihoods.py::BernoulliTest::test_extreme_logits_match_mpmath",  # 4.4 s
  "tests/test_divergences.py::KLTest::test_non_negative_and_zero_only_at_prior",  # 4.4 s
  "tests/test_evaluation.py::WrongPosteriorTest::test_bounds_tighten_with_k_towards_log_marginal",  # 4.3 s
  "tests/test_package.py::test_installed_wheel_works_without_the_repository",  # 4.1 s
  "tests/test_readme.py::test_usage_snippets_run_and_are_right",  # 3.4 s
  "tests/test_evaluation.py::EvaluateTest::test_equals_the_per_batch_functions_for_any_batch_size",  # 3.3 s
  "tests/test_transforms.py::TransformTest::test_vmap_equals_python_loop",  # 3.2 s
  "tests/test_training.py::test_log_likelihood_matches_scipy",  # 3.1 s
  "tests/test_validation.py::ValueErrorTest::test_checked_valid_extreme_input_has_no_error_and_no_internal_nan",  # 3.1 s
  "tests/test_decoders.py::test_vmapped_entries_match_a_loop",  # 2.9 s
  "tests/test_likelihoods.py::ContinuousBernoulliTest::test_finite_at_extreme_logits",  # 2.8 s
  "tests/test_likelihoods.py::BernoulliTest::test_gradients_match_the_two_log_sigmoids",  # 2.8 s
  "tests/test_divergences.py::KLTest::test_matches_numerical_integration",  # 2.7 s
  "tests/test_likelihoods.py::ContinuousBernoulliTest::test_log_normalizer_gradient",  # 2.6 s
  "tests/test_evaluation.py::WrongPosteriorTest::test_chunk_size_does_not_change_the_estimate",  # 2.5 s
  "tests/test_objectives.py::BatchingAndUnitsTest::test_batched_equals_a_python_loop",  # 2.5 s
  "tests/test_likelihoods.py::BernoulliTest::test_from_probs_matches_torch_formula",  # 2.4 s
  "tests/test_training.py::test_learned_sigma2_never_falls_below_its_floor",  # 2.3 s
  "tests/test_divergences.py::DensityTest::test_monte_carlo_kl_is_the_log_ratio_and_converges",  # 2.3 s
  "tests/test_training.py::test_overfits_a_handful_of_digits",  # 2.3 s
  "tests/test_prng.py::SplitTest::test_split",  # 2.1 s
  "tests/test_data.py::test_static_load_binarizes_once_with_a_fixed_seed",  # 1.9 s
  "tests/test_objectives.py::ELBOTest::test_every_importance_weight_equals_log_marginal_at_exact_posterior",  # 1.8 s
  "tests/test_package.py::test_wheel_ships_the_library_and_only_the_library",  # 1.7 s
  "tests/test_prng.py::SameAsJaxRandomTest::test_bits",  # 1.7 s
  "tests/test_likelihoods.py::ContinuousBernoulliTest::test_density_matches_quadrature_normaliser",  # 1.6 s
  "tests/test_data.py::test_deterministic_given_key_same_under_jit_and_raw_keys",  # 1.5 s
  "tests/test_equivalences.py::NotesEquivalenceTest::test_bce_sum_over_batch_is_mean_negative_log_likelihood",  # 1.4 s
  "tests/test_likelihoods.py::OptimalSigma2Test::test_batch_value_maximises_the_batch_likelihood",  # 1.4 s
  "tests/test_evaluation.py::WrongPosteriorTest::test_against_a_loop_over_explicit_weights",  # 1.4 s
  "tests/test_likelihoods.py::BernoulliTest::test_from_probs_gradient_finite_at_zero_and_one",  # 1.3 s
  "tests/test_likelihoods.py::ContinuousBernoulliTest::test_log_normalizer_asymptote",  # 1.2 s
  "tests/test_prng.py::SameAsJaxRandomTest::test_under_vmap_over_keys",  # 1.2 s
  "tests/test_evaluation.py::EvaluateTest::test_bernoulli_decoder_under_jit_with_a_dead_unit",  # 1.1 s
  "tests/test_likelihoods.py::BernoulliTest::test_matches_scipy_logpmf_on_binary_data",  # 1.1 s
  "tests/test_objectives.py::ELBOTest::test_by_name_equals_by_function_and_hand_sum",  # 0.9 s
  "tests/test_divergences.py::KLTest::test_accurate_for_nearly_unit_variance",  # 0.9 s
  "tests/test_likelihoods.py::GaussianTest::test_matches_scipy_norm_logpdf",  # 0.9 s
  "tests/test_likelihoods.py::GaussianTest::test_maximised_at_x_equals_mean",  # 0.9 s
  "tests/test_training.py::test_optimal_sigma2_gets_no_gradient",  # 0.9 s
  "tests/test_evaluation.py::ExactPosteriorTest::test_iwae_equals_log_marginal_for_any_k",  # 0.9 s
  "tests/test_likelihoods.py::GaussianTest::test_per_pixel_sigma2_broadcasts",  # 0.8 s
  "tests/test_evaluation.py::EvaluateTest::test_exact_posterior_one_compilation_and_bits_per_dim",  # 0.8 s
  "tests/test_objectives.py::IWAEBoundTest::test_stable_where_naive_underflows",  # 0.7 s
  "tests/test_objectives.py::BatchingAndUnitsTest::test_batched_keyword_arguments_are_shared",  # 0.7 s
  "tests/test_divergences.py::KLTest::test_per_dim_sums_to_total",  # 0.7 s
  "tests/test_data.py::test_mnist5k_split_is_a_fixed_shuffled_partition_of_the_csv",  # 0.7 s
  "tests/test_likelihoods.py::OptimalSigma2Test::test_maximises_the_likelihood_over_sigma",  # 0.7 s
  "tests/test_decoders.py::test_continuous_bernoulli_entry_is_a_normalised_density",  # 0.7 s
  "tests/test_divergences.py::DensityTest::test_diagonal_gaussian_matches_scipy",  # 0.6 s
  "tests/test_data.py::test_continuous_dequantizes_inside_each_level_bin",  # 0.6 s
  "tests/test_prng.py::SameAsJaxRandomTest::test_other_keys_and_settings_fall_back_to_jax_random",  # 0.5 s
  "tests/test_likelihoods.py::ContinuousBernoulliTest::test_integrates_to_one",  # 0.5 s
  "tests/test_evaluation.py::ExactPosteriorTest::test_elbo_equals_log_marginal_in_expectation",  # 0.5 s
  "tests/test_equivalences.py::SigmaBetaTradeTest::test_same_minimiser_by_gradient_descent",  # 0.5 s
  "tests/test_objectives.py::IWAEBoundTest::test_k_equals_one_is_the_weight_and_bound_lies_between_mean_and_max",  # 0.5 s
  "tests/test_evaluation.py::IWAEEdgeCasesTest::test_all_zero_weights_give_minus_infinity_not_nan",  # 0.5 s
  "tests/test_prng.py::SameAsJaxRandomTest::test_bernoulli_frequencies",  # 0.5 s
  "tests/test_likelihoods.py::BernoulliTest::test_from_probs_equals_logit_form_inside_the_clamp",  # 0.5 s
  "tests/test_data.py::test_continuous_top_level_never_rounds_to_one",  # 0.4 s
  "tests/test_data.py::test_dynamic_is_bernoulli_of_raw_over_max_level",  # 0.4 s
  "tests/test_data.py::test_evaluation_images_are_one_fixed_draw",  # 0.4 s
  "tests/test_prng.py::SameAsJaxRandomTest::test_bernoulli",  # 0.4 s
  "tests/test_decoders.py::test_gaussian_entry_uses_the_sigmoid_mean",  # 0.4 s
  "tests/test_likelihoods.py::BernoulliTest::test_from_probs_small_p_is_exact",  # 0.4 s
  "tests/test_training.py::test_learning_rate_schedules",  # 0.3 s
  "tests/test_equivalences.py::NotesEquivalenceTest::test_mse_sum_over_batch_is_gaussian_nll_at_half_minus_constant",  # 0.3 s
)


def pytest_collection_modifyitems(config, items):
  del config
  for item in items:
    for name in SLOW:
      rest = item.nodeid[len(name) :]
      if item.nodeid.startswith(name) and not rest[:1].isalpha():
        item.add_marker(pytest.mark.slow)
