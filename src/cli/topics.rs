//! `safetel topics create`.

use anyhow::Context;
use clap::Subcommand;

use crate::config::Config;

#[derive(Subcommand)]
pub enum Action {
    /// Create the events, DLQ and regressions topics (existing ones are left as they are).
    Create,
}

pub fn execute(config: &Config, action: Action) -> anyhow::Result<()> {
    match action {
        Action::Create => {
            crate::kafka::check_broker(config, crate::kafka::BROKER_ANSWER_WITHIN)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let outcome = runtime
                .block_on(crate::kafka::create_topics(config))
                .with_context(|| {
                    format!(
                        "creating topics on {}: is the broker reachable, and do [kafka.properties] \
                         (security.protocol, sasl.*, ssl.*) match its listener?",
                        config.kafka.bootstrap_servers
                    )
                })?;
            for (topic, created) in outcome {
                println!("{topic}: {}", if created { "created" } else { "exists" });
            }
            Ok(())
        }
    }
}
