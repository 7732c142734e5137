//! `midge`: the broker binary. Flags and config files follow nats-server's.
fn main() -> anyhow::Result<()> {
    midge::logging::init(midge::logging::LogTarget::stderr(), false, false, true);
    let mut opts = midge::Options::default();
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "-p") {
        let p: i32 = args
            .get(i + 1)
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(4222);
        opts.port = if p < 0 { 0 } else { p as u16 };
    }
    if let Some(i) = args.iter().position(|a| a == "-a") {
        if let Some(a) = args.get(i + 1) {
            opts.host = a.parse()?;
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let server = midge::Server::start(opts).await?;
        tokio::signal::ctrl_c().await?;
        server.shutdown().await;
        anyhow::Ok(())
    })
}
