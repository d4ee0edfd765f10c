-- Regression episodes, from the alerts: onset, detection, HR with its 95% CrI, MTTD, status.
CREATE TABLE IF NOT EXISTS `safetel.fact_regression` (
  episode_id STRING NOT NULL,
  key_kind STRING,
  key STRING,
  hazard_class STRING,
  status STRING,
  onset TIMESTAMP,
  detected_at TIMESTAMP,
  resolved_at TIMESTAMP,
  mttd_days FLOAT64,
  hr_median FLOAT64,
  hr_low FLOAT64,
  hr_high FLOAT64,
  p_regression FLOAT64,
  prior_source STRING
)
PARTITION BY DATE(detected_at)
CLUSTER BY key;
