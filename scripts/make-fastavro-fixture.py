#!/usr/bin/env python3
"""Writes tests/fixtures/fastavro_records.jsonl: telemetry records encoded by fastavro, an Avro
implementation independent of safetel's, framed the Confluent way (magic 0, schema id, datum).

Each line: {"schema_id": N, "framed_hex": "...", "record": <the datum as fastavro was given it>}.
The Rust test tests/codec_interop.rs decodes the bytes and compares with "record".
Regenerate with: pip install fastavro && python3 scripts/make-fastavro-fixture.py
"""
import io
import json
import pathlib
import struct

import fastavro

root = pathlib.Path(__file__).resolve().parent.parent
current = fastavro.parse_schema(json.loads((root / "schemas/telemetry_event.avsc").read_text()))
v1 = fastavro.parse_schema(json.loads((root / "schemas/telemetry_event.v1.avsc").read_text()))

trip = {
    "trip_id": "trip-000042", "driver_id": "driver-7", "start_time": 1767225600000,
    "end_time": 1767229200000, "distance_km": 61.25, "duration_s": 3600.0, "mode": "AUTONOMOUS",
    "road_type": "HIGHWAY", "weather": "RAIN", "night": True, "firmware_version": "fw-2.3.1",
    "vehicle_model": "model-x\u00e9",
}
records = [
    (2, current, {"vehicle_id": "veh-0001", "event_time": 1767229200000,
                  "payload": ("safetel.v1.TripSummary", trip)}),
    (2, current, {"vehicle_id": "veh-0002", "event_time": 1767229100000,
                  "payload": ("safetel.v1.SafetyEvent", {"event_id": "ev-9", "trip_id": "trip-000042",
                              "event_type": "NEAR_MISS", "severity": "HIGH", "speed_kph": 88.5})}),
    (2, current, {"vehicle_id": "veh-0003", "event_time": -1,
                  "payload": ("safetel.v1.ModeTransition", {"transition_id": "mt-1", "trip_id": "t",
                              "from_mode": "AUTONOMOUS", "to_mode": "MANUAL", "reason": "SYSTEM_FAULT"})}),
    (1, v1, {"vehicle_id": "veh-legacy", "event_time": 1600000000000,
             "payload": ("safetel.v1.TripSummary", {k: v for k, v in trip.items() if k != "vehicle_model"})}),
]

with open(root / "tests/fixtures/fastavro_records.jsonl", "w") as out:
    for schema_id, schema, record in records:
        buf = io.BytesIO()
        buf.write(b"\x00" + struct.pack(">I", schema_id))
        fastavro.schemaless_writer(buf, schema, record)
        branch, fields = record["payload"]
        plain = dict(record, payload={"branch": branch.split(".")[-1], **fields})
        out.write(json.dumps({"schema_id": schema_id, "framed_hex": buf.getvalue().hex(), "record": plain}) + "\n")
print("wrote", len(records), "records")
