//! Writes an upgrade fixture: a small stream through this release's engine into its RocksDB
//! store, with every changelog record the commits made and the store's logical dump, into
//! `tests/fixtures/upgrade/<name>/` (see `tests/upgrade/files.rs`). A release that changes a
//! stored format commits one, so that the next proves it restores this one's store and
//! changelog to the same state (`tests/upgrade.rs`).
//!
//!     cargo run --release --example upgrade_fixture -- tests/fixtures/upgrade/<name>

#[path = "../tests/upgrade/files.rs"]
mod files;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use safetel::engine::StateDelta;
use safetel::generator::Generator;
use safetel::store::Store;
use safetel::stream::runner::{CommitError, CommitTarget};

/// Writes each commit to the store and keeps the changelog records it makes.
struct Recording {
    store: Arc<Store>,
    changelog: Arc<Mutex<Vec<files::ChangelogRecord>>>,
}

impl CommitTarget for Recording {
    fn commit(&mut self, mut delta: StateDelta) -> Result<(), CommitError> {
        let ops = self.store.ops(&mut delta)?;
        let mut changelog = self.changelog.lock().unwrap();
        for op in &ops {
            if let Some((partition, key, value)) = op.changelog_record() {
                let value = value.map(<[u8]>::to_vec);
                changelog.push((
                    safetel::store::codec::FORMAT,
                    partition.stored(),
                    key,
                    value,
                ));
            }
        }
        drop(changelog);
        self.store.apply(ops, &[])?;
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let dir: PathBuf = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: upgrade_fixture DIR"))?
        .into();
    anyhow::ensure!(!dir.exists(), "{} exists already", dir.display());
    std::fs::create_dir_all(&dir)?;
    let input: Vec<files::InputRecord> = Generator::new(files::settings::fleet())?
        .map(|r| (r.key, r.produced_ms, r.bytes))
        .collect();
    let mut bytes = Vec::new();
    files::write_input(&mut bytes, &input)?;
    std::fs::write(dir.join("input.bin"), bytes)?;

    let store = Arc::new(Store::open(&dir.join("store"))?);
    let changelog = Arc::new(Mutex::new(Vec::new()));
    let mut target = Recording {
        store: Arc::clone(&store),
        changelog: Arc::clone(&changelog),
    };
    let (dead_letters, alerts) = files::run_stream(input, &store, &mut target);
    let snapshot = store.snapshot()?;
    std::fs::write(
        dir.join("snapshot.json"),
        serde_json::to_vec_pretty(&snapshot)?,
    )?;
    let changelog = std::mem::take(&mut *changelog.lock().unwrap());
    let mut bytes = Vec::new();
    files::write_changelog(&mut bytes, &changelog)?;
    std::fs::write(dir.join("changelog.bin"), bytes)?;
    drop(target);
    let store = Arc::try_unwrap(store).map_err(|_| anyhow::anyhow!("the store is still shared"))?;
    store.flush()?;
    drop(store);
    for entry in std::fs::read_dir(dir.join("store"))? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("LOG") {
            std::fs::remove_file(&path)?;
        }
    }
    println!(
        "{}: {} changelog records, {} dead letters, {} alerts",
        dir.display(),
        changelog.len(),
        dead_letters,
        alerts
    );
    Ok(())
}
