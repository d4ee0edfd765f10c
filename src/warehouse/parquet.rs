//! A column-oriented table written as one Parquet file (one row group, Snappy), with logical
//! types that BI tools read directly: strings, timestamps (ms, UTC), dates, doubles, booleans.

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
    #[error(transparent)]
    Parquet(#[from] ParquetError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
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
        let fields: String = self
            .columns
            .iter()
            .map(|(n, v)| format!("optional {} {n}{};", v.parquet_type(), v.logical()))
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
        for (_, values) in &self.columns {
            let mut column = group.next_column()?.expect("one writer per schema column");
            match values {
                Values::Text(v) => {
                    let (present, defined) = levels(v);
                    let bytes: Vec<ByteArray> = present
                        .into_iter()
                        .map(|s| ByteArray::from(s.into_bytes()))
                        .collect();
                    column
                        .typed::<ByteArrayType>()
                        .write_batch(&bytes, Some(&defined), None)?;
                }
                Values::Long(v) | Values::Timestamp(v) => {
                    let (present, defined) = levels(v);
                    column
                        .typed::<Int64Type>()
                        .write_batch(&present, Some(&defined), None)?;
                }
                Values::Double(v) => {
                    let (present, defined) = levels(v);
                    column
                        .typed::<DoubleType>()
                        .write_batch(&present, Some(&defined), None)?;
                }
                Values::Bool(v) => {
                    let (present, defined) = levels(v);
                    column
                        .typed::<BoolType>()
                        .write_batch(&present, Some(&defined), None)?;
                }
                Values::Date(v) => {
                    let (present, defined) = levels(v);
                    column
                        .typed::<Int32Type>()
                        .write_batch(&present, Some(&defined), None)?;
                }
            }
            column.close()?;
        }
        group.close()?;
        writer.close()?;
        Ok(())
    }
}
