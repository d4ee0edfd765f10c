//! The raw consume rate: reads a topic to its end with the same librdkafka settings as
//! `safetel run`, doing nothing with the records. scripts/bench-e2e puts safetel next to it.
//!
//! cargo run --release --example consume_only -- BOOTSTRAP TOPIC EXPECTED_RECORDS
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, bootstrap, topic, expected] = args.as_slice() else {
        eprintln!("usage: consume_only BOOTSTRAP TOPIC EXPECTED_RECORDS");
        std::process::exit(2);
    };
    let expected: u64 = expected.parse().expect("EXPECTED_RECORDS is a number");
    let group = format!("consume-only-{}", std::process::id());
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.queue.backoff.ms", "10")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let (mut count, mut bytes) = (0u64, 0usize);
    let mut first: Option<Instant> = None;
    while count < expected {
        if let Some(message) = consumer.poll(Duration::from_secs(10)) {
            let message = message.expect("message");
            first.get_or_insert_with(Instant::now);
            bytes += message.payload().map_or(0, <[u8]>::len);
            count += 1;
        } else if first.is_some() {
            eprintln!("consume_only: topic ended early at {count} records");
            break;
        }
    }
    let seconds = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    println!(
        "consume_only records={count} bytes={bytes} seconds={seconds:.3} records_per_s={:.0}",
        count as f64 / seconds
    );
}
