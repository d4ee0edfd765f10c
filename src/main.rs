/// mimalloc: it gives freed memory back to the system as a long stream runs where the system
/// allocator keeps it (BENCHMARKS.md, "Fleet scale").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    safetel::cli_main()
}
