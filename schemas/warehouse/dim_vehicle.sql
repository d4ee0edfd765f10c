-- Vehicles as of the snapshot, with the refit's priors and hazard rate (per exposure hour).
CREATE TABLE IF NOT EXISTS `safetel.dim_vehicle` (
  snapshot_date DATE NOT NULL,
  vehicle_id STRING NOT NULL,
  vehicle_model STRING,
  firmware_version STRING,
  last_event_time TIMESTAMP,
  exposure_hours FLOAT64,
  critical_events INT64,
  prior_a0 FLOAT64,
  prior_b0 FLOAT64,
  hazard_per_hour_mean FLOAT64,
  hazard_per_hour_q2_5 FLOAT64,
  hazard_per_hour_q97_5 FLOAT64
)
PARTITION BY snapshot_date
CLUSTER BY vehicle_id;
