fn main() -> anyhow::Result<()> {
    safetel::cli_main()
}
