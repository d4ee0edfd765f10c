//! Which writer schema each schema id of the telemetry topic stands for, and which id safetel's
//! own records are framed with.
//!
//! Without a schema registry the ids are the project's ([`SchemaId`]). With one, the table starts
//! empty: an id is looked up through the [`SchemaSource`] the Kafka edge installs (the registry),
//! once, and classified by what the schema is: the current TelemetryEvent or ReviewResult (the
//! fast paths, by parsing canonical form), another TelemetryEvent or ReviewResult that safetel's
//! reader schema can read (Avro schema resolution), or something safetel cannot read (the record goes to the DLQ,
//! saying why). An id the registry does not know is remembered as unknown for a minute, so that a
//! stream of them does not ask again for every record. The ids safetel's own records are framed
//! with are those the registry gave when the edge registered the schemas.

use std::collections::{HashMap, VecDeque};
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
    /// A ReviewResult schema safetel's can read (a review tool's evolution): resolved.
    ResolvedReview(Arc<Schema>),
    /// A TelemetryEvent schema the reader schema can read: resolved datum by datum.
    ResolvedTelemetry(Arc<Schema>),
    /// Not a record safetel reads from this topic, with why.
    Unreadable(String),
}

struct Table {
    /// Ids are the project's fixed ones (no registry).
    fixed: bool,
    cache: WriterCache,
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
            cache: WriterCache::new(1),
            source: None,
            output: HashMap::new(),
        })
    })
}

/// From now on, ids mean what `source` says (the project's fixed ids no longer count); at most
/// `capacity` writer schemas, and as many unknown ids, are kept.
pub fn use_registry(source: Arc<dyn SchemaSource>, capacity: usize) {
    let mut table = table().write().unwrap_or_else(|p| p.into_inner());
    table.fixed = false;
    table.cache = WriterCache::new(capacity);
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
        match table.cache.get(id, Instant::now()) {
            Cached::Known(writer) => return Ok(writer),
            Cached::Unknown => return Err(DecodeError::UnknownSchemaId(id)),
            Cached::Ask => table.source.clone(),
        }
    };
    let Some(source) = source else {
        return Err(DecodeError::UnknownSchemaId(id));
    };
    let text = source
        .schema(id)
        .map_err(|e| DecodeError::RegistryUnavailable(id, e))?;
    let writer = text.as_deref().map(classify);
    let mut table = table().write().unwrap_or_else(|p| p.into_inner());
    table.cache.remember(id, writer.clone(), Instant::now());
    writer.ok_or(DecodeError::UnknownSchemaId(id))
}

/// What the cache holds for an id.
#[derive(Clone)]
pub enum Cached {
    Known(Writer),
    /// The registry did not know it, less than [`UNKNOWN_FOR`] ago.
    Unknown,
    /// Not held (or no longer): ask the registry.
    Ask,
}

/// Writer schemas by id, and ids the registry did not know, each at most `capacity`; the
/// longest-kept leaves first.
pub struct WriterCache {
    capacity: usize,
    known: HashMap<u32, Writer>,
    known_order: VecDeque<u32>,
    unknown: HashMap<u32, Instant>,
    unknown_order: VecDeque<u32>,
}

impl WriterCache {
    pub fn new(capacity: usize) -> WriterCache {
        WriterCache {
            capacity: capacity.max(1),
            known: HashMap::new(),
            known_order: VecDeque::new(),
            unknown: HashMap::new(),
            unknown_order: VecDeque::new(),
        }
    }

    pub fn get(&self, id: u32, now: Instant) -> Cached {
        if let Some(writer) = self.known.get(&id) {
            return Cached::Known(writer.clone());
        }
        match self.unknown.get(&id) {
            Some(since) if now.saturating_duration_since(*since) < UNKNOWN_FOR => Cached::Unknown,
            _ => Cached::Ask,
        }
    }

    /// What the registry said of `id` at `now`: its writer schema, or that it has none.
    pub fn remember(&mut self, id: u32, writer: Option<Writer>, now: Instant) {
        match writer {
            Some(writer) => {
                if self.unknown.remove(&id).is_some() {
                    self.unknown_order.retain(|&other| other != id);
                }
                if !self.known.contains_key(&id) {
                    evict_oldest(&mut self.known, &mut self.known_order, self.capacity);
                    self.known_order.push_back(id);
                }
                self.known.insert(id, writer);
            }
            None => {
                if !self.unknown.contains_key(&id) {
                    evict_oldest(&mut self.unknown, &mut self.unknown_order, self.capacity);
                    self.unknown_order.push_back(id);
                }
                self.unknown.insert(id, now);
            }
        }
    }

    /// (writer schemas, unknown ids) held.
    pub fn len(&self) -> (usize, usize) {
        (self.known.len(), self.unknown.len())
    }
}

/// Makes room for one more entry in `map`, whose keys `order` holds oldest first.
fn evict_oldest<V>(map: &mut HashMap<u32, V>, order: &mut VecDeque<u32>, capacity: usize) {
    while map.len() >= capacity {
        match order.pop_front() {
            Some(id) => {
                map.remove(&id);
            }
            None => break,
        }
    }
}

/// Whether `id` is known already (no registry call needed to decode its records).
pub fn is_known(id: u32) -> bool {
    if !REGISTRY_IN_USE.load(Ordering::Acquire) {
        return true;
    }
    let table = table().read().unwrap_or_else(|p| p.into_inner());
    table.fixed || matches!(table.cache.get(id, Instant::now()), Cached::Known(_))
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
        "ReviewResult" => match SchemaCompatibility::can_read(&schema, &review) {
            Ok(()) => Writer::ResolvedReview(Arc::new(schema)),
            Err(e) => {
                Writer::Unreadable(format!("a ReviewResult schema safetel's cannot read: {e}"))
            }
        },
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

    #[test]
    fn an_evolved_review_result_reads_as_safetel_s_and_an_incompatible_one_is_refused() {
        let event = crate::model::TelemetryEvent {
            vehicle_id: "veh-3".into(),
            event_time_ms: 1_767_571_200_000,
            payload: crate::model::Payload::Review(crate::model::ReviewResult {
                trip_id: "t9".into(),
                events: vec![(
                    1_767_571_100_000,
                    crate::model::SafetyEvent {
                        event_id: "e4".into(),
                        trip_id: "t9".into(),
                        event_type: crate::model::EventType::Collision,
                        severity: crate::model::Severity::Critical,
                        speed_kph: 61.0,
                    },
                )],
            }),
        };
        let framed = encode_to_vec(&event);
        let (_, datum) = split_header(&framed).unwrap();
        // A review tool added who reviewed the trip (a string field with a default).
        let evolved = with_top_level_field(
            SchemaId::ReviewResultV1,
            serde_json::json!({"name": "reviewer", "type": "string", "default": ""}),
        );
        let Writer::ResolvedReview(schema) = classify(&evolved) else {
            panic!("an evolved ReviewResult is readable");
        };
        let mut written = datum.to_vec();
        written.extend([6, b'a', b'm', b'y']);
        let read = crate::codec::resolve::decode_older_review(&schema, &written).unwrap();
        assert_eq!(read, event.into_owned());
        // Bytes left over are refused, as on the fast path.
        written.push(0);
        assert!(matches!(
            crate::codec::resolve::decode_older_review(&schema, &written),
            Err(DecodeError::TrailingBytes(1))
        ));
        let mut retyped: serde_json::Value =
            serde_json::from_str(SchemaId::ReviewResultV1.schema_json()).unwrap();
        retyped["fields"][2]["type"] = serde_json::json!("long");
        let why = unreadable(classify(&retyped.to_string())).unwrap();
        assert!(
            why.contains("ReviewResult") && why.contains("cannot read"),
            "{why}"
        );
    }

    #[test]
    fn the_writer_cache_keeps_at_most_its_capacity_and_forgets_unknown_ids_after_a_minute() {
        let now = Instant::now();
        let mut cache = WriterCache::new(3);
        for id in 10..20 {
            cache.remember(id, Some(Writer::CurrentTelemetry), now);
        }
        assert_eq!(cache.len(), (3, 0));
        // The longest-kept left first: 17, 18, 19 remain.
        assert!(matches!(cache.get(16, now), Cached::Ask));
        for id in 17..20 {
            assert!(matches!(cache.get(id, now), Cached::Known(_)), "{id}");
        }
        // Remembering a held id again takes no room.
        cache.remember(19, Some(Writer::CurrentReview), now);
        assert!(matches!(cache.get(17, now), Cached::Known(_)));
        assert!(matches!(
            cache.get(19, now),
            Cached::Known(Writer::CurrentReview)
        ));
        // Unknown ids: bounded the same way, and asked again after UNKNOWN_FOR.
        for id in 100..110 {
            cache.remember(id, None, now);
        }
        assert_eq!(cache.len(), (3, 3));
        assert!(matches!(cache.get(109, now), Cached::Unknown));
        assert!(matches!(cache.get(106, now), Cached::Ask));
        let later = now + UNKNOWN_FOR;
        assert!(matches!(cache.get(109, later), Cached::Ask));
        // An id registered since: known, no longer unknown.
        cache.remember(109, Some(Writer::CurrentTelemetry), later);
        assert_eq!(cache.len(), (3, 2));
        assert!(matches!(cache.get(109, later), Cached::Known(_)));
        assert!(matches!(cache.get(17, later), Cached::Ask), "17 made room");
    }
}
