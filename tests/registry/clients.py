"""Registry clients nobody at safetel wrote, for tests/kafka_registry.rs: confluent-kafka's
AvroSerializer producing telemetry and its AvroDeserializer reading safetel's alerts.

  produce BOOTSTRAP TOPIC REGISTRY USER_INFO FILE EVOLVE_FROM INCOMPATIBLE UNKNOWN
      sends the records of the Avro container FILE (safetel generate --output) keyed by vehicle:
      with the current TelemetryEvent schema, from record EVOLVE_FROM on with an evolved one (an
      optional field added: what a producer team may do), then INCOMPATIBLE records written with
      a schema safetel cannot read (vehicle_id a long), registered under another subject, and
      UNKNOWN records framed with an id the registry never gave. Prints what it sent, as JSON.
  consume BOOTSTRAP TOPIC REGISTRY USER_INFO COUNT
      reads COUNT alerts from TOPIC with AvroDeserializer; prints them as JSON lines.
USER_INFO is the registry's user:password (basic.auth.user.info).
"""
import io
import json
import struct
import sys

import fastavro
from confluent_kafka import DeserializingConsumer, SerializingProducer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import StringDeserializer, StringSerializer


def evolved(schema):
    schema = json.loads(json.dumps(schema))
    schema["fields"].append({"name": "fleet_channel", "type": ["null", "string"], "default": None})
    return schema


def incompatible(schema):
    schema = json.loads(json.dumps(schema))
    for field in schema["fields"]:
        if field["name"] == "vehicle_id":
            field["type"] = "long"
    return schema


def registry(url, user_info):
    return SchemaRegistryClient({"url": url, "basic.auth.user.info": user_info})


def produce(bootstrap, topic, client, path, evolve_from, bad, unknown):
    with open(path, "rb") as f:
        reader = fastavro.reader(f, return_record_name=True)
        schema = json.loads(reader.metadata["avro.schema"])
        records = list(reader)
    current = json.dumps(schema)
    newer = json.dumps(evolved(schema))
    serializers = [AvroSerializer(client, current), AvroSerializer(client, newer)]
    producer = SerializingProducer({
        "bootstrap.servers": bootstrap,
        "key.serializer": StringSerializer("utf_8"),
        "linger.ms": 20,
    })
    sent = 0
    for i, record in enumerate(records):
        serializer = serializers[1] if i >= evolve_from else serializers[0]
        if i >= evolve_from:
            record = dict(record, fleet_channel="stable")
        value = serializer(record, ctx(topic))
        producer.produce(topic, key=record["vehicle_id"], value=value)
        sent += 1
        if sent % 10000 == 0:
            producer.poll(0)
    # Records written with a schema safetel cannot read, under another team's subject.
    bad_schema = incompatible(schema)
    bad_id = client.register_schema("other-team-telemetry", Schema(json.dumps(bad_schema), "AVRO"))
    parsed = fastavro.parse_schema(bad_schema)
    for i in range(bad):
        record = dict(records[i], vehicle_id=1000 + i)
        out = io.BytesIO()
        out.write(b"\x00" + struct.pack(">I", bad_id))
        fastavro.schemaless_writer(out, parsed, record)
        producer.produce(topic, key=str(1000 + i), value=out.getvalue())
    # Records framed with an id nobody registered.
    for i in range(unknown):
        producer.produce(topic, key=f"unknown-{i}", value=b"\x00" + struct.pack(">I", 987654) + b"\x02ab")
    producer.flush(60)
    print(json.dumps({
        "sent": sent,
        "incompatible": bad,
        "incompatible_id": bad_id,
        "unknown": unknown,
        "ids": sorted({serializer_id(client, topic, s) for s in (current, newer)}),
        "subject_versions": client.get_versions(f"{topic}-value"),
    }))


def serializer_id(client, topic, schema):
    return client.lookup_schema(f"{topic}-value", Schema(schema, "AVRO")).schema_id


def ctx(topic):
    from confluent_kafka.serialization import MessageField, SerializationContext
    return SerializationContext(topic, MessageField.VALUE)


def consume(bootstrap, topic, client, count):
    consumer = DeserializingConsumer({
        "bootstrap.servers": bootstrap,
        "group.id": "registry-test-reader",
        "auto.offset.reset": "earliest",
        "key.deserializer": StringDeserializer("utf_8"),
        "value.deserializer": AvroDeserializer(client),
    })
    consumer.subscribe([topic])
    seen = 0
    idle = 0
    while seen < count and idle < 60:
        message = consumer.poll(1.0)
        if message is None:
            idle += 1
            continue
        if message.error():
            raise RuntimeError(message.error())
        idle = 0
        print(json.dumps(message.value(), sort_keys=True, default=str))
        seen += 1
    consumer.close()


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "produce":
        produce(sys.argv[2], sys.argv[3], registry(sys.argv[4], sys.argv[5]), sys.argv[6], int(sys.argv[7]),
                int(sys.argv[8]), int(sys.argv[9]))
    elif command == "consume":
        consume(sys.argv[2], sys.argv[3], registry(sys.argv[4], sys.argv[5]), int(sys.argv[6]))
    else:
        sys.exit(f"unknown command {command}")
