//! midge-bench: a load generator speaking the core NATS protocol over plain TCP, TLS or
//! WebSocket, so the same command measures midge and nats-server. See `midge-bench --help`.
//!
//! `scan` is the wire scanner (no IO), `conn` a blocking client connection and its
//! transports, `ws` the WebSocket framing, `scenario` the core workloads, `js` the
//! JetStream API requests and reply checks, `jetstream` the JetStream workloads, `args` the
//! command line.

mod args;
mod conn;
mod jetstream;
mod js;
mod scan;
mod scenario;
mod ws;

use anyhow::Result;

fn main() -> Result<()> {
    let Some(args) = args::parse(std::env::args().skip(1))? else {
        print!("{}", args::USAGE);
        return Ok(());
    };
    let report = scenario::run(&args)?;
    if args.json {
        let object: serde_json::Map<String, serde_json::Value> = report
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        println!("{}", serde_json::Value::Object(object));
    } else {
        for (key, value) in report {
            let shown = match value.as_f64() {
                Some(f) if value.is_f64() => format!("{f:.2}"),
                _ => value.to_string(),
            };
            println!("{key:>26}  {shown}");
        }
    }
    Ok(())
}
