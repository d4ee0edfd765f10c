//! A column-oriented table written as one Parquet file (one row group, Snappy), with logical
//! types that BI tools read directly: strings, timestamps (ms, UTC), dates, doubles, booleans.
//! A column is `REQUIRED` where the table's BigQuery DDL (`schemas/warehouse/<table>.sql`) says
//! `NOT NULL`, else `OPTIONAL`, so that a `bq load` into the DDL's table takes the files as they
//! are; a null in a required column is refused.

use std::path::Path;
use std::sync::Arc;

use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int32Type, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

/// One column's values; `None` is null.
#[derive(Debug, Clone)]
pub enum Values {
    Text(Vec<Option<String>>),
    Long(Vec<Option<i64>>),
    Double(Vec<Option<f64>>),
    Bool(Vec<Option<bool>>),
    /// Milliseconds since the epoch, UTC.
    Timestamp(Vec<Option<i64>>),
    /// Days since the epoch.
    Date(Vec<Option<i32>>),
}

impl Values {
    fn len(&self) -> usize {
        match self {
            Values::Text(v) => v.len(),
            Values::Long(v) | Values::Timestamp(v) => v.len(),
            Values::Double(v) => v.len(),
            Values::Bool(v) => v.len(),
            Values::Date(v) => v.len(),
        }
    }

    /// The row of the first null, if any.
    fn first_null(&self) -> Option<usize> {
        match self {
            Values::Text(v) => v.iter().position(Option::is_none),
            Values::Long(v) | Values::Timestamp(v) => v.iter().position(Option::is_none),
            Values::Double(v) => v.iter().position(Option::is_none),
            Values::Bool(v) => v.iter().position(Option::is_none),
            Values::Date(v) => v.iter().position(Option::is_none),
        }
    }

    fn parquet_type(&self) -> &'static str {
        match self {
            Values::Text(_) => "binary",
            Values::Long(_) => "int64",
            Values::Double(_) => "double",
            Values::Bool(_) => "boolean",
            Values::Timestamp(_) => "int64",
            Values::Date(_) => "int32",
        }
    }

    fn logical(&self) -> &'static str {
        match self {
            Values::Text(_) => " (STRING)",
            Values::Timestamp(_) => " (TIMESTAMP(MILLIS,true))",
            Values::Date(_) => " (DATE)",
            _ => "",
        }
    }
}

/// A table: named columns of equal length.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub columns: Vec<(&'static str, Values)>,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("column `{column}` has {got} rows, the table {expected}")]
    Ragged {
        column: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("column `{column}` is NOT NULL in the DDL, but row {row} is null")]
    NullInRequired { column: &'static str, row: usize },
    #[error(transparent)]
    Parquet(#[from] ParquetError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// The BigQuery DDL of each warehouse table, as committed.
pub fn ddl(table: &str) -> Option<&'static str> {
    Some(match table {
        "dim_date" => include_str!("../../schemas/warehouse/dim_date.sql"),
        "dim_driver" => include_str!("../../schemas/warehouse/dim_driver.sql"),
        "dim_event_type" => include_str!("../../schemas/warehouse/dim_event_type.sql"),
        "dim_vehicle" => include_str!("../../schemas/warehouse/dim_vehicle.sql"),
        "fact_model_run" => include_str!("../../schemas/warehouse/fact_model_run.sql"),
        "fact_regression" => include_str!("../../schemas/warehouse/fact_regression.sql"),
        "fact_safety_event" => include_str!("../../schemas/warehouse/fact_safety_event.sql"),
        "fact_trip_safety" => include_str!("../../schemas/warehouse/fact_trip_safety.sql"),
        _ => return None,
    })
}

/// A DDL's columns in order: (name, BigQuery type, NOT NULL).
pub fn ddl_columns(ddl: &str) -> Vec<(String, String, bool)> {
    // Comments out first (they may hold parentheses), then what the parentheses enclose.
    let code: String = ddl
        .lines()
        .map(|line| line.split("--").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    // The column list: from the first `(` to the `)` that closes it (a `PARTITION BY
    // DATE(...)` may follow).
    let Some(open) = code.find('(') else {
        return Vec::new();
    };
    let mut depth = 0;
    let Some(close) = code[open..].char_indices().find_map(|(i, c)| {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        (depth == 0).then_some(open + i)
    }) else {
        return Vec::new();
    };
    code[open + 1..close]
        .lines()
        .map(|line| line.trim().trim_end_matches(','))
        .filter(|line| !line.is_empty())
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next()?.to_string();
            let ty = words.next()?.to_string();
            let rest: Vec<&str> = words.collect();
            Some((name, ty, rest.join(" ").eq_ignore_ascii_case("NOT NULL")))
        })
        .collect()
}

/// Splits optional values into the present ones and Parquet definition levels.
fn levels<T: Clone>(values: &[Option<T>]) -> (Vec<T>, Vec<i16>) {
    let present = values.iter().flatten().cloned().collect();
    let defined = values.iter().map(|v| i16::from(v.is_some())).collect();
    (present, defined)
}

impl Table {
    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, |(_, v)| v.len())
    }

    pub fn write(&self, path: &Path, name: &str) -> Result<(), WriteError> {
        let rows = self.rows();
        for (column, values) in &self.columns {
            if values.len() != rows {
                return Err(WriteError::Ragged {
                    column,
                    got: values.len(),
                    expected: rows,
                });
            }
        }
        let required: Vec<String> = ddl(name)
            .map(ddl_columns)
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, _, not_null)| *not_null)
            .map(|(column, _, _)| column)
            .collect();
        let is_required = |column: &str| required.iter().any(|r| r == column);
        for (column, values) in &self.columns {
            if is_required(column)
                && let Some(row) = values.first_null()
            {
                return Err(WriteError::NullInRequired { column, row });
            }
        }
        let fields: String = self
            .columns
            .iter()
            .map(|(n, v)| {
                let mode = if is_required(n) {
                    "required"
                } else {
                    "optional"
                };
                format!("{mode} {} {n}{};", v.parquet_type(), v.logical())
            })
            .collect();
        let schema = Arc::new(parse_message_type(&format!(
            "message {name} {{ {fields} }}"
        ))?);
        let props = Arc::new(
            WriterProperties::builder()
                .set_compression(parquet::basic::Compression::SNAPPY)
                .set_created_by("safetel".into())
                .build(),
        );
        let file = std::fs::File::create(path).map_err(|source| WriteError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut writer = SerializedFileWriter::new(file, schema, props)?;
        let mut group = writer.next_row_group()?;
        for (name, values) in &self.columns {
            let mut column = group.next_column()?.expect("one writer per schema column");
            // Required columns have no definition levels (and no nulls: checked above).
            let levels_of = |defined: Vec<i16>| (!is_required(name)).then_some(defined);
            match values {
                Values::Text(v) => {
                    let (present, defined) = levels(v);
                    let bytes: Vec<ByteArray> = present
                        .into_iter()
                        .map(|s| ByteArray::from(s.into_bytes()))
                        .collect();
                    column.typed::<ByteArrayType>().write_batch(
                        &bytes,
                        levels_of(defined).as_deref(),
                        None,
                    )?;
                }
                Values::Long(v) | Values::Timestamp(v) => {
                    let (present, defined) = levels(v);
                    column.typed::<Int64Type>().write_batch(
                        &present,
                        levels_of(defined).as_deref(),
                        None,
                    )?;
                }
                Values::Double(v) => {
                    let (present, defined) = levels(v);
                    column.typed::<DoubleType>().write_batch(
                        &present,
                        levels_of(defined).as_deref(),
                        None,
                    )?;
                }
                Values::Bool(v) => {
                    let (present, defined) = levels(v);
                    column.typed::<BoolType>().write_batch(
                        &present,
                        levels_of(defined).as_deref(),
                        None,
                    )?;
                }
                Values::Date(v) => {
                    let (present, defined) = levels(v);
                    column.typed::<Int32Type>().write_batch(
                        &present,
                        levels_of(defined).as_deref(),
                        None,
                    )?;
                }
            }
            column.close()?;
        }
        group.close()?;
        writer.close()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_columns_are_read_in_order_with_their_modes() {
        let columns = ddl_columns(ddl("fact_model_run").unwrap());
        assert_eq!(columns[0], ("run_id".into(), "INT64".into(), true));
        assert_eq!(columns[1], ("run_time".into(), "TIMESTAMP".into(), false));
        assert_eq!(
            columns.last().unwrap().0,
            "sampling_s",
            "not PARTITION BY DATE(...)"
        );
        // A comment with parentheses before the table does not confuse it.
        let columns = ddl_columns(ddl("dim_vehicle").unwrap());
        assert_eq!(columns[0], ("snapshot_date".into(), "DATE".into(), true));
        assert_eq!(columns.len(), 12);
    }

    #[test]
    fn a_null_in_a_not_null_column_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let table = Table {
            columns: vec![
                ("event_type", Values::Text(vec![Some("a".into()), None])),
                (
                    "critical_regardless_of_severity",
                    Values::Bool(vec![Some(true), None]),
                ),
            ],
        };
        let err = table.write(&path, "dim_event_type").unwrap_err();
        assert!(
            matches!(
                err,
                WriteError::NullInRequired {
                    column: "event_type",
                    row: 1
                }
            ),
            "{err}"
        );
        assert!(!path.exists());
    }
}
