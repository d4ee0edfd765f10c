-- One row per nightly refit, with its convergence diagnostics.
CREATE TABLE IF NOT EXISTS `safetel.fact_model_run` (
  run_id INT64 NOT NULL,
  run_time TIMESTAMP,
  converged BOOL,
  vehicles INT64,
  intervals INT64,
  events INT64,
  max_rhat FLOAT64,
  min_ess_bulk FLOAT64,
  divergences INT64,
  ebfmi FLOAT64,
  alpha_mean FLOAT64,
  mu_mean FLOAT64,
  sigma_mean FLOAT64,
  ppc_p_value FLOAT64,
  sampling_s FLOAT64
)
PARTITION BY DATE(run_time);
