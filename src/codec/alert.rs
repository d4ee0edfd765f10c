//! `RegressionAlert` in Avro binary (schema id 3), field by field in schema order.

use super::{SchemaId, write_double, write_header, write_long, write_string};
use crate::model::{AlertStatus, KeyKind, RegressionAlert};

/// Encodes an alert with its Confluent header, appending to `out`.
pub fn encode_alert(alert: &RegressionAlert, out: &mut Vec<u8>) {
    write_header(SchemaId::RegressionAlertV1, out);
    write_string(&alert.alert_id, out);
    let status = match alert.status {
        AlertStatus::Opened => 0,
        AlertStatus::Updated => 1,
        AlertStatus::Resolved => 2,
    };
    write_long(status, out);
    write_long(
        match alert.key_kind {
            KeyKind::Vehicle => 0,
            KeyKind::Cohort => 1,
        },
        out,
    );
    write_string(&alert.key, out);
    write_string(alert.hazard_class.name(), out);
    write_long(alert.onset_estimate, out);
    write_long(alert.detected_at, out);
    for value in [
        alert.p_regression,
        alert.hr_median,
        alert.hr_low,
        alert.hr_high,
        alert.rate_before,
        alert.rate_after,
    ] {
        write_double(value, out);
    }
    write_long(alert.events_before, out);
    write_long(alert.events_after, out);
    write_double(alert.exposure_before, out);
    write_double(alert.exposure_after, out);
    write_string(&alert.prior_source, out);
    write_string(&alert.sampling_policy, out);
}

#[cfg(test)]
mod tests {
    use apache_avro::types::Value;

    use super::*;
    use crate::codec::{parse_schema, split_header};
    use crate::model::HazardClass;

    #[test]
    fn alerts_read_back_with_the_committed_schema() {
        let alert = RegressionAlert {
            alert_id: "COHORT/firmware:fw-3.0.0/critical/2026-02-02/OPENED".into(),
            status: AlertStatus::Updated,
            key_kind: KeyKind::Cohort,
            key: "firmware:fw-3.0.0".into(),
            hazard_class: HazardClass::Disengagement,
            onset_estimate: 1_769_990_400_000,
            detected_at: 1_770_444_000_000,
            p_regression: 0.987,
            hr_median: 2.4,
            hr_low: 1.7,
            hr_high: 3.5,
            rate_before: 0.004,
            rate_after: 0.0096,
            events_before: 41,
            events_after: 57,
            exposure_before: 10_250.5,
            exposure_after: 5_937.25,
            prior_source: "config".into(),
            sampling_policy: "full".into(),
        };
        let mut bytes = Vec::new();
        encode_alert(&alert, &mut bytes);
        let (schema_id, mut datum) = split_header(&bytes).unwrap();
        assert_eq!(schema_id, SchemaId::RegressionAlertV1 as u32);
        let schema = parse_schema(SchemaId::RegressionAlertV1);
        let value = apache_avro::from_avro_datum(&schema, &mut datum, None).unwrap();
        assert!(datum.is_empty(), "the whole datum is read");
        let Value::Record(fields) = value else {
            panic!("not a record: {value:?}")
        };
        let get = |name: &str| fields.iter().find(|(n, _)| n == name).unwrap().1.clone();
        assert_eq!(get("alert_id"), Value::String(alert.alert_id.clone()));
        assert_eq!(get("status"), Value::Enum(1, "UPDATED".into()));
        assert_eq!(get("key_kind"), Value::Enum(1, "COHORT".into()));
        assert_eq!(get("hazard_class"), Value::String("disengagement".into()));
        assert_eq!(
            get("onset_estimate"),
            Value::TimestampMillis(alert.onset_estimate)
        );
        assert_eq!(get("hr_low"), Value::Double(1.7));
        assert_eq!(get("events_after"), Value::Long(57));
        assert_eq!(get("exposure_after"), Value::Double(5_937.25));
        assert_eq!(get("sampling_policy"), Value::String("full".into()));
    }
}
