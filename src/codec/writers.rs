//! Which writer schema each schema id of the telemetry topic stands for, and which id safetel's
//! own records are framed with.
//!
//! Without a schema registry the ids are the project's ([`SchemaId`]). With one, the table starts
//! empty: an id is looked up through the [`SchemaSource`] the Kafka edge installs (the registry),
//! once, and classified by what the schema is: the current TelemetryEvent or ReviewResult (the
//! fast paths, by parsing canonical form), another TelemetryEvent that safetel's reader schema can
//! read (Avro schema resolution), or something safetel cannot read (the record goes to the DLQ,
//! saying why). An id the registry does not know is remembered as unknown for a minute, so that a
//! stream of them does not ask again for every record. The ids safetel's own records are framed
//! with are those the registry gave when the edge registered the schemas.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;

use super::{DecodeError, SchemaId, parse_schema};

/// How long an id the registry did not know stays unknown before it is asked again.
const UNKNOWN_FOR: Duration = Duration::from_secs(60);

/// Where writer schemas come from when a registry is configured: the schema's JSON text for an
/// id, `Ok(None)` if it has none, `Err` if it could not be asked (the registry is unreachable).
pub trait SchemaSource: Send + Sync {
    fn schema(&self, id: u32) -> Result<Option<String>, String>;
}

/// What a writer schema is to safetel.
#[derive(Clone)]
pub enum Writer {
    /// The current TelemetryEvent schema: the zero-copy path.
    CurrentTelemetry,
    /// The current ReviewResult schema.
    CurrentReview,
    /// A TelemetryEvent schema the reader schema can read: resolved datum by datum.
    ResolvedTelemetry(Arc<Schema>),
    /// Not a record safetel reads from this topic, with why.
    Unreadable(String),
}

struct Table {
    /// Ids are the project's fixed ones (no registry).
    fixed: bool,
    known: HashMap<u32, Writer>,
    unknown: HashMap<u32, Instant>,
    source: Option<Arc<dyn SchemaSource>>,
    /// The id each of safetel's own schemas is framed with.
    output: HashMap<SchemaId, u32>,
}

/// Whether a registry is in use: without one (the usual case) a record's id is judged without
/// taking the table's lock.
static REGISTRY_IN_USE: AtomicBool = AtomicBool::new(false);

fn table() -> &'static RwLock<Table> {
    static TABLE: OnceLock<RwLock<Table>> = OnceLock::new();
    TABLE.get_or_init(|| {
        RwLock::new(Table {
            fixed: true,
            known: HashMap::new(),
            unknown: HashMap::new(),
            source: None,
            output: HashMap::new(),
        })
    })
}

/// From now on, ids mean what `source` says (the project's fixed ids no longer count).
pub fn use_registry(source: Arc<dyn SchemaSource>) {
    let mut table = table().write().unwrap_or_else(|p| p.into_inner());
    table.fixed = false;
    table.known.clear();
    table.unknown.clear();
    table.source = Some(source);
    REGISTRY_IN_USE.store(true, Ordering::Release);
}

/// Frames safetel's records of `schema` with `id` (the registry's) from now on.
pub fn set_output_id(schema: SchemaId, id: u32) {
    let mut table = table().write().unwrap_or_else(|p| p.into_inner());
    table.output.insert(schema, id);
}

/// The id safetel frames its records of `schema` with.
pub fn output_id(schema: SchemaId) -> u32 {
    let table = table().read().unwrap_or_else(|p| p.into_inner());
    table.output.get(&schema).copied().unwrap_or(schema as u32)
}

/// What the writer schema with `id` is; asks the registry (once) where there is one.
pub fn writer(id: u32) -> Result<Writer, DecodeError> {
    if !REGISTRY_IN_USE.load(Ordering::Acquire) {
        return fixed(id);
    }
    let source = {
        let table = table().read().unwrap_or_else(|p| p.into_inner());
        if table.fixed {
            return fixed(id);
        }
        if let Some(writer) = table.known.get(&id) {
            return Ok(writer.clone());
        }
        if table
            .unknown
            .get(&id)
            .is_some_and(|since| since.elapsed() < UNKNOWN_FOR)
        {
            return Err(DecodeError::UnknownSchemaId(id));
        }
        table.source.clone()
    };
    let Some(source) = source else {
        return Err(DecodeError::UnknownSchemaId(id));
    };
    let text = source
        .schema(id)
        .map_err(|e| DecodeError::RegistryUnavailable(id, e))?;
    let mut table = table().write().unwrap_or_else(|p| p.into_inner());
    match text {
        None => {
            table.unknown.insert(id, Instant::now());
            Err(DecodeError::UnknownSchemaId(id))
        }
        Some(text) => {
            let writer = classify(&text);
            table.known.insert(id, writer.clone());
            Ok(writer)
        }
    }
}

/// Whether `id` is known already (no registry call needed to decode its records).
pub fn is_known(id: u32) -> bool {
    if !REGISTRY_IN_USE.load(Ordering::Acquire) {
        return true;
    }
    let table = table().read().unwrap_or_else(|p| p.into_inner());
    table.fixed || table.known.contains_key(&id)
}

/// The project's fixed ids: the two telemetry versions and review results (alerts and review
/// requests do not belong on the telemetry topic).
fn fixed(id: u32) -> Result<Writer, DecodeError> {
    static V1: OnceLock<Arc<Schema>> = OnceLock::new();
    match SchemaId::from_u32(id) {
        Some(SchemaId::TelemetryEventV2) => Ok(Writer::CurrentTelemetry),
        Some(SchemaId::ReviewResultV1) => Ok(Writer::CurrentReview),
        Some(SchemaId::TelemetryEventV1) => Ok(Writer::ResolvedTelemetry(Arc::clone(
            V1.get_or_init(|| Arc::new(parse_schema(SchemaId::TelemetryEventV1))),
        ))),
        _ => Err(DecodeError::UnknownSchemaId(id)),
    }
}

/// What a writer schema's JSON text is to safetel.
pub fn classify(text: &str) -> Writer {
    let schema = match Schema::parse_str(text) {
        Ok(schema) => schema,
        Err(e) => return Writer::Unreadable(format!("the schema does not parse: {e}")),
    };
    let form = schema.canonical_form();
    let current = parse_schema(SchemaId::CURRENT_TELEMETRY);
    if form == current.canonical_form() {
        return Writer::CurrentTelemetry;
    }
    let review = parse_schema(SchemaId::ReviewResultV1);
    if form == review.canonical_form() {
        return Writer::CurrentReview;
    }
    let name = match &schema {
        Schema::Record(record) => record.name.name.clone(),
        other => return Writer::Unreadable(format!("a {other:?} schema, not a record")),
    };
    match name.as_str() {
        "TelemetryEvent" => match SchemaCompatibility::can_read(&schema, &current) {
            Ok(()) => Writer::ResolvedTelemetry(Arc::new(schema)),
            Err(e) => Writer::Unreadable(format!(
                "a TelemetryEvent schema safetel's cannot read: {e}"
            )),
        },
        "ReviewResult" => Writer::Unreadable(
            "a ReviewResult schema other than safetel's (review results are read with safetel's own schema only)".into(),
        ),
        other => Writer::Unreadable(format!(
            "record `{other}` is neither a TelemetryEvent nor a ReviewResult"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{encode_to_vec, split_header};

    fn with_top_level_field(base: SchemaId, field: serde_json::Value) -> String {
        let mut schema: serde_json::Value = serde_json::from_str(base.schema_json()).unwrap();
        schema["fields"].as_array_mut().unwrap().push(field);
        schema.to_string()
    }

    fn unreadable(writer: Writer) -> Option<String> {
        match writer {
            Writer::Unreadable(why) => Some(why),
            _ => None,
        }
    }

    #[test]
    fn writer_schemas_are_told_apart_by_what_they_are() {
        // The committed schemas, however their JSON is laid out.
        let reformatted: serde_json::Value =
            serde_json::from_str(SchemaId::TelemetryEventV2.schema_json()).unwrap();
        assert!(matches!(
            classify(&serde_json::to_string_pretty(&reformatted).unwrap()),
            Writer::CurrentTelemetry
        ));
        assert!(matches!(
            classify(SchemaId::ReviewResultV1.schema_json()),
            Writer::CurrentReview
        ));
        assert!(matches!(
            classify(SchemaId::TelemetryEventV1.schema_json()),
            Writer::ResolvedTelemetry(_)
        ));
        // A producer team's evolution: a field added with a default.
        let evolved = with_top_level_field(
            SchemaId::TelemetryEventV2,
            serde_json::json!({"name": "fleet_channel", "type": ["null", "string"], "default": null}),
        );
        assert!(matches!(classify(&evolved), Writer::ResolvedTelemetry(_)));
        // What safetel cannot read, each saying why.
        let mut retyped: serde_json::Value =
            serde_json::from_str(SchemaId::TelemetryEventV2.schema_json()).unwrap();
        retyped["fields"][0]["type"] = serde_json::json!("long");
        let why = unreadable(classify(&retyped.to_string())).unwrap();
        assert!(why.contains("cannot read"), "{why}");
        let why = unreadable(classify(SchemaId::RegressionAlertV1.schema_json())).unwrap();
        assert!(why.contains("RegressionAlert"), "{why}");
        let why = unreadable(classify(r#"{"type":"string"}"#)).unwrap();
        assert!(why.contains("not a record"), "{why}");
        let why = unreadable(classify("{not json")).unwrap();
        assert!(why.contains("does not parse"), "{why}");
    }

    #[test]
    fn a_record_of_an_evolved_schema_reads_as_the_current_one() {
        let event = crate::model::TelemetryEvent {
            vehicle_id: "veh-7".into(),
            event_time_ms: 1_767_571_200_000,
            payload: crate::model::Payload::Safety(crate::model::SafetyEvent {
                event_id: "e1".into(),
                trip_id: "t1".into(),
                event_type: crate::model::EventType::NearMiss,
                severity: crate::model::Severity::High,
                speed_kph: 42.5,
            }),
        };
        let framed = encode_to_vec(&event);
        let (_, datum) = split_header(&framed).unwrap();
        // The evolved writer added a last field: its datum is the current one and that field
        // (union branch 1, the string "beta").
        let evolved = with_top_level_field(
            SchemaId::TelemetryEventV2,
            serde_json::json!({"name": "fleet_channel", "type": ["null", "string"], "default": null}),
        );
        let Writer::ResolvedTelemetry(schema) = classify(&evolved) else {
            panic!("evolved schema not readable");
        };
        let mut written = datum.to_vec();
        written.extend([2, 8, b'b', b'e', b't', b'a']);
        let read = crate::codec::resolve::decode_older(&schema, &written).unwrap();
        assert_eq!(read, event.into_owned());
    }
}
