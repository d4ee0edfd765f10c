CREATE TABLE IF NOT EXISTS `safetel.dim_date` (
  date DATE NOT NULL,
  year INT64,
  month INT64,
  day INT64,
  iso_weekday INT64
)
PARTITION BY date;
