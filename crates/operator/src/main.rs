use std::io::Read as _;

use anyhow::{bail, Context as _};
use kube::CustomResourceExt;

const USAGE: &str = "usage: midge-operator <command>

commands:
  run                  reconcile NatsCluster resources (in a cluster or with a kubeconfig)
  crd                  print the NatsCluster CustomResourceDefinition as YAML
  render -f <file|->   print every object the operator would apply for a manifest
";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("crd") => {
            print!(
                "{}",
                serde_yaml::to_string(&midge_operator::crd::NatsCluster::crd())?
            );
            Ok(())
        }
        Some("render") => {
            let path = match &args[1..] {
                [flag, path] if flag == "-f" || flag == "--filename" => path,
                _ => bail!("render needs -f <file> (or -f - for stdin)\n\n{USAGE}"),
            };
            let yaml = if path == "-" {
                let mut buf = String::new();
                std::io::stdin()
                    .read_to_string(&mut buf)
                    .context("reading stdin")?;
                buf
            } else {
                std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?
            };
            print!("{}", midge_operator::render::render(&yaml)?);
            Ok(())
        }
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            Ok(())
        }
        _ => bail!("{USAGE}"),
    }
}
