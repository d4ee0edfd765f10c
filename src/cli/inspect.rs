//! `safetel inspect`: the state store as canonical JSON.

use std::path::PathBuf;

use crate::store::Store;

#[derive(clap::Args)]
pub struct Args {
    /// The RocksDB directory (`state.dir` of the run).
    #[arg(long)]
    state_dir: PathBuf,
}

pub fn execute(args: Args) -> anyhow::Result<()> {
    let store = Store::open(&args.state_dir)?;
    println!("{}", serde_json::to_string_pretty(&store.snapshot()?)?);
    Ok(())
}
