CREATE TABLE IF NOT EXISTS `safetel.dim_event_type` (
  event_type STRING NOT NULL,
  critical_regardless_of_severity BOOL
);
