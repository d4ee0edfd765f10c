//! A schema registry client: Confluent's REST API (which Confluent Schema Registry, Apicurio's
//! `ccompat` API and Karapace serve), the two calls safetel needs. An edge module: HTTP.
//!
//! - `GET /schemas/ids/{id}`: the writer schema of records framed with `id` (for
//!   [`crate::codec::writers`], through [`SchemaSource`]).
//! - `POST /subjects/{subject}/versions`: registers one of safetel's schemas under its subject
//!   (or finds it registered) and returns its id, which safetel's records are then framed with.
//!
//! Built on `ureq` (blocking, small; TLS through the system's OpenSSL, which librdkafka links
//! already): a registry call is rare (once per schema id per process), so nothing async is
//! needed, and a full client crate would bring an async runtime and its HTTP stack for two calls.

use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use crate::codec::SchemaId;
use crate::codec::writers::{self, SchemaSource};
use crate::config::{Config, SchemaRegistryConfig, SubjectNameStrategy};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("schema registry {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("schema registry {url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("schema registry {url} answered something that is not its JSON: {detail}")]
    Unreadable { url: String, detail: String },
}

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// A registry at one base URL.
pub struct RegistryClient {
    base: String,
    authorization: Option<String>,
    agent: ureq::Agent,
}

impl RegistryClient {
    pub fn new(config: &SchemaRegistryConfig) -> RegistryClient {
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::NativeTls)
            .build();
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(config.timeout_ms)))
            .http_status_as_error(false)
            .tls_config(tls)
            .build()
            .into();
        RegistryClient {
            base: config.url.trim_end_matches('/').to_string(),
            authorization: config
                .basic_auth_user_info
                .as_deref()
                .map(|user_info| format!("Basic {}", base64(user_info.as_bytes()))),
            agent,
        }
    }

    /// The schema's JSON text for `id`; `None` where the registry has no such id.
    pub fn schema_by_id(&self, id: u32) -> Result<Option<String>, RegistryError> {
        let url = format!("{}/schemas/ids/{id}", self.base);
        let mut request = self.agent.get(&url).header("Accept", CONTENT_TYPE);
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        let response = request.call().map_err(|e| http(&url, e))?;
        let (status, body) = read(&url, response)?;
        match status {
            200 => match json_field(&url, &body, "schema")? {
                serde_json::Value::String(schema) => Ok(Some(schema)),
                other => Err(RegistryError::Unreadable {
                    url,
                    detail: format!("`schema` is not a string: {other}"),
                }),
            },
            404 => Ok(None),
            _ => Err(RegistryError::Status { url, status, body }),
        }
    }

    /// Registers `schema` (Avro JSON) under `subject`, or finds it registered there: its id.
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let url = format!("{}/subjects/{}/versions", self.base, path_segment(subject));
        let body = serde_json::json!({"schema": schema, "schemaType": "AVRO"}).to_string();
        let mut request = self
            .agent
            .post(&url)
            .header("Content-Type", CONTENT_TYPE)
            .header("Accept", CONTENT_TYPE);
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        let response = request.send(body.as_str()).map_err(|e| http(&url, e))?;
        let (status, text) = read(&url, response)?;
        if status != 200 {
            return Err(RegistryError::Status {
                url,
                status,
                body: text,
            });
        }
        let id = json_field(&url, &text, "id")?;
        id.as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| RegistryError::Unreadable {
                url,
                detail: format!("id {id}"),
            })
    }
}

impl SchemaSource for RegistryClient {
    fn schema(&self, id: u32) -> Result<Option<String>, String> {
        self.schema_by_id(id).map_err(|e| e.to_string())
    }
}

/// With `[schema_registry]`: registers `own` (the schemas this command writes or reads as its
/// own) under their subjects, frames safetel's records with the ids the registry gives, and
/// reads every incoming schema id from the registry. Without it: nothing (the fixed ids).
pub fn install(config: &Config, own: &[SchemaId]) -> Result<(), RegistryError> {
    let Some(registry) = &config.schema_registry else {
        return Ok(());
    };
    let client = RegistryClient::new(registry);
    for &schema in own {
        let (topic, record) = match schema {
            SchemaId::TelemetryEventV1 | SchemaId::TelemetryEventV2 => {
                (&config.kafka.events_topic, "safetel.v1.TelemetryEvent")
            }
            SchemaId::ReviewResultV1 => (&config.kafka.events_topic, "safetel.v1.ReviewResult"),
            SchemaId::RegressionAlertV1 => (
                &config.kafka.regressions_topic,
                "safetel.v1.RegressionAlert",
            ),
            SchemaId::ReviewRequestV1 => (
                &config.kafka.review_requests_topic,
                "safetel.v1.ReviewRequest",
            ),
        };
        // Review results share the events topic with telemetry: one subject per record type.
        let strategy = match (schema, registry.subject_name_strategy) {
            (SchemaId::ReviewResultV1, SubjectNameStrategy::TopicName) => {
                SubjectNameStrategy::TopicRecordName
            }
            (_, strategy) => strategy,
        };
        let subject = subject(strategy, topic, record);
        let id = client.register(&subject, schema.schema_json())?;
        info!(%subject, id, "schema registered");
        writers::set_output_id(schema, id);
    }
    writers::use_registry(Arc::new(client), registry.cache_capacity);
    info!(url = %registry.url, "schema ids are read from the registry");
    Ok(())
}

/// The subject safetel's schema `record_name` (full name) is registered under for `topic`.
pub fn subject(strategy: SubjectNameStrategy, topic: &str, record_name: &str) -> String {
    match strategy {
        SubjectNameStrategy::TopicName => format!("{topic}-value"),
        SubjectNameStrategy::RecordName => record_name.to_string(),
        SubjectNameStrategy::TopicRecordName => format!("{topic}-{record_name}"),
    }
}

fn http(url: &str, source: ureq::Error) -> RegistryError {
    RegistryError::Http {
        url: url.to_string(),
        source: Box::new(source),
    }
}

fn read(
    url: &str,
    mut response: ureq::http::Response<ureq::Body>,
) -> Result<(u16, String), RegistryError> {
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| http(url, e))?;
    Ok((status, body))
}

fn json_field(url: &str, body: &str, field: &str) -> Result<serde_json::Value, RegistryError> {
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|e| RegistryError::Unreadable {
            url: url.to_string(),
            detail: e.to_string(),
        })?;
    value
        .get(field)
        .cloned()
        .ok_or_else(|| RegistryError::Unreadable {
            url: url.to_string(),
            detail: format!("no `{field}` in {body}"),
        })
}

/// A subject as one URL path segment (topic names may hold `.`, `_`, `-`; anything else is
/// percent-encoded).
fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Standard base64 with padding (for HTTP basic authentication).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_is_standard_base64() {
        // RFC 4648's test vectors.
        for (text, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(text.as_bytes()), encoded, "{text}");
        }
    }

    #[test]
    fn subjects_follow_the_naming_strategies() {
        let name = "safetel.RegressionAlert";
        assert_eq!(
            subject(SubjectNameStrategy::TopicName, "safety.regressions", name),
            "safety.regressions-value"
        );
        assert_eq!(subject(SubjectNameStrategy::RecordName, "t", name), name);
        assert_eq!(
            subject(SubjectNameStrategy::TopicRecordName, "t", name),
            "t-safetel.RegressionAlert"
        );
        assert_eq!(path_segment("a b/c-d.e"), "a%20b%2Fc-d.e");
    }
}
