//! `safetel topics create`.

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
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            for (topic, created) in runtime.block_on(crate::kafka::create_topics(config))? {
                println!("{topic}: {}", if created { "created" } else { "exists" });
            }
            Ok(())
        }
    }
}
