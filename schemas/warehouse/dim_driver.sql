CREATE TABLE IF NOT EXISTS `safetel.dim_driver` (
  snapshot_date DATE NOT NULL,
  driver_id STRING NOT NULL,
  first_vehicle_id STRING,
  trips INT64,
  exposure_hours FLOAT64
)
PARTITION BY snapshot_date
CLUSTER BY first_vehicle_id;
