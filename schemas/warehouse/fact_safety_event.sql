CREATE TABLE IF NOT EXISTS `safetel.fact_safety_event` (
  event_id STRING NOT NULL,
  trip_id STRING,
  vehicle_id STRING NOT NULL,
  event_time TIMESTAMP,
  date DATE NOT NULL,
  event_type STRING,
  severity STRING,
  speed_kph FLOAT64,
  critical BOOL
)
PARTITION BY date
CLUSTER BY vehicle_id;
