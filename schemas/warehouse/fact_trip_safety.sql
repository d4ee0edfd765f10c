-- One row per trip: exposure and event counts by class.
CREATE TABLE IF NOT EXISTS `safetel.fact_trip_safety` (
  trip_id STRING NOT NULL,
  vehicle_id STRING NOT NULL,
  driver_id STRING,
  date DATE NOT NULL,
  start_time TIMESTAMP,
  end_time TIMESTAMP,
  exposure_hours FLOAT64,
  distance_km FLOAT64,
  mode STRING,
  road_type STRING,
  weather STRING,
  night BOOL,
  firmware_version STRING,
  vehicle_model STRING,
  safety_events INT64,
  critical_events INT64,
  disengagements INT64
)
PARTITION BY date
CLUSTER BY vehicle_id;
