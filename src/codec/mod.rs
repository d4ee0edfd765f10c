//! Avro encoding of telemetry records with the Confluent wire framing.
//!
//! Owns the bytes on the topics: `[0x00][schema id: u32 BE][Avro binary datum]`. Without a schema
//! registry the ids are fixed by the project ([`SchemaId`]); with one, [`writers`] learns what
//! each id stands for from it, and frames safetel's own records with the ids it gave. Records written with the current
//! schema take a hand-written zero-copy fast path; records written with an older schema are
//! resolved against the current reader schema by the `apache-avro` crate. Decoding never panics:
//! every malformed input is a [`DecodeError`]. No IO here.

mod alert;
mod binary;
mod resolve;
mod review;
mod telemetry;
pub mod writers;

use crate::model::TelemetryEvent;

pub use alert::encode_alert;
pub use binary::{Reader, write_bool, write_double, write_long, write_string};
pub use review::{decode_review_request, encode_review_request};

/// The Confluent wire format's magic byte.
pub const MAGIC: u8 = 0;
/// Bytes before the Avro datum: magic byte and schema id.
pub const HEADER_LEN: usize = 5;

/// Schema ids fixed by the project (what a registry would assign), one per schema version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemaId {
    /// `schemas/telemetry_event.v1.avsc`: the first published TelemetryEvent.
    TelemetryEventV1 = 1,
    /// `schemas/telemetry_event.avsc`: the current TelemetryEvent.
    TelemetryEventV2 = 2,
    /// `schemas/regression_alert.avsc`.
    RegressionAlertV1 = 3,
    /// `schemas/review_request.avsc`.
    ReviewRequestV1 = 4,
    /// `schemas/review_result.avsc`: read from the telemetry topic like a TelemetryEvent.
    ReviewResultV1 = 5,
}

impl SchemaId {
    pub const CURRENT_TELEMETRY: SchemaId = SchemaId::TelemetryEventV2;

    pub fn from_u32(id: u32) -> Option<Self> {
        match id {
            1 => Some(SchemaId::TelemetryEventV1),
            2 => Some(SchemaId::TelemetryEventV2),
            3 => Some(SchemaId::RegressionAlertV1),
            4 => Some(SchemaId::ReviewRequestV1),
            5 => Some(SchemaId::ReviewResultV1),
            _ => None,
        }
    }

    /// The schema's JSON text, as committed under `schemas/`.
    pub fn schema_json(self) -> &'static str {
        match self {
            SchemaId::TelemetryEventV1 => include_str!("../../schemas/telemetry_event.v1.avsc"),
            SchemaId::TelemetryEventV2 => include_str!("../../schemas/telemetry_event.avsc"),
            SchemaId::RegressionAlertV1 => include_str!("../../schemas/regression_alert.avsc"),
            SchemaId::ReviewRequestV1 => include_str!("../../schemas/review_request.avsc"),
            SchemaId::ReviewResultV1 => include_str!("../../schemas/review_result.avsc"),
        }
    }
}

/// Why bytes are not a telemetry record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("record is {0} bytes, shorter than the 5-byte Confluent header")]
    MissingHeader(usize),
    #[error("magic byte is {0:#04x}, expected 0x00 (Confluent framing)")]
    BadMagic(u8),
    #[error("schema id {0} is not a known schema for this topic")]
    UnknownSchemaId(u32),
    #[error("schema id {0}: {1}")]
    UnreadableSchema(u32, String),
    #[error("schema id {0}: the schema registry could not be asked: {1}")]
    RegistryUnavailable(u32, String),
    #[error("datum ends early, at byte {0}")]
    Truncated(usize),
    #[error("variable-length integer at byte {0} is longer than 10 bytes")]
    VarintOverflow(usize),
    #[error("negative length {len} at byte {at}")]
    NegativeLength { len: i64, at: usize },
    #[error("string at byte {0} is not valid UTF-8")]
    InvalidUtf8(usize),
    #[error("{name} index {index} is out of range")]
    BadIndex { name: &'static str, index: i64 },
    #[error("boolean byte {0:#04x} is neither 0 nor 1")]
    BadBool(u8),
    #[error("{0} bytes left over after the datum")]
    TrailingBytes(usize),
    #[error("schema resolution failed: {0}")]
    Resolution(String),
}

impl DecodeError {
    /// The DLQ reason: `schema` for framing and unknown schema ids, `incompatible_schema` for a
    /// writer schema safetel cannot read, `schema_registry` where the registry could not be
    /// asked, `decode` for a bad datum.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::MissingHeader(_)
            | DecodeError::BadMagic(_)
            | DecodeError::UnknownSchemaId(_) => "schema",
            DecodeError::UnreadableSchema(..) => "incompatible_schema",
            DecodeError::RegistryUnavailable(..) => "schema_registry",
            _ => "decode",
        }
    }
}

/// Decodes one framed record. The result borrows strings from `bytes` when the writer schema is
/// the current one.
pub fn decode(bytes: &[u8]) -> Result<TelemetryEvent<'_>, DecodeError> {
    let (id, datum) = split_header(bytes)?;
    match writers::writer(id)? {
        writers::Writer::CurrentTelemetry => telemetry::decode_current(datum),
        writers::Writer::ResolvedTelemetry(schema) => resolve::decode_older(&schema, datum),
        writers::Writer::CurrentReview => review::decode_result(datum),
        writers::Writer::ResolvedReview(schema) => resolve::decode_older_review(&schema, datum),
        writers::Writer::Unreadable(why) => Err(DecodeError::UnreadableSchema(id, why)),
    }
}

/// Splits the Confluent header from the datum: (schema id, datum).
pub fn split_header(bytes: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::MissingHeader(bytes.len()));
    }
    if bytes[0] != MAGIC {
        return Err(DecodeError::BadMagic(bytes[0]));
    }
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    Ok((id, &bytes[HEADER_LEN..]))
}

/// Appends the Confluent header for `schema`: its fixed id, or the registry's
/// ([`writers::output_id`]).
pub fn write_header(schema: SchemaId, out: &mut Vec<u8>) {
    out.push(MAGIC);
    out.extend_from_slice(&writers::output_id(schema).to_be_bytes());
}

/// Encodes an event with the current schema (a review result with its own), framed, appending
/// to `out`.
pub fn encode(event: &TelemetryEvent<'_>, out: &mut Vec<u8>) {
    if let crate::model::Payload::Review(result) = &event.payload {
        write_header(SchemaId::ReviewResultV1, out);
        review::encode_result(&event.vehicle_id, event.event_time_ms, result, out);
        return;
    }
    write_header(SchemaId::CURRENT_TELEMETRY, out);
    telemetry::encode_current(event, out);
}

/// Encodes an event into a new buffer.
pub fn encode_to_vec(event: &TelemetryEvent<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    encode(event, &mut out);
    out
}

/// Parses a committed schema; they are compile-time constants, so failure is a bug.
pub fn parse_schema(schema: SchemaId) -> apache_avro::Schema {
    apache_avro::Schema::parse_str(schema.schema_json())
        .unwrap_or_else(|e| panic!("committed schema {schema:?} does not parse: {e}"))
}

#[cfg(test)]
mod tests;
