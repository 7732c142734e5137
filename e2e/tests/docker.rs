//! The scenarios against the real image in Docker containers (e2e/run-docker.sh builds the
//! images for amd64, arm64 and arm/v7 and sets MIDGE_E2E_IMAGES / MIDGE_E2E_UNAME).

use midge_e2e::docker::{self, DockerConfig, DockerDriver};
use midge_e2e::driver::ClusterDriver;
use midge_e2e::scenarios::{self, Layout};

const SAMPLE: &str = include_str!("../../config/samples/natscluster-edge.yaml");

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scenarios_on_docker() -> anyhow::Result<()> {
    if !docker::available().await {
        eprintln!("SKIPPED: no Docker engine reachable (`docker info` fails); the docker e2e suite needs one");
        return Ok(());
    }
    let config = DockerConfig::from_env()?;
    let mut driver = DockerDriver::new(config)?;
    let report = scenarios::run_all(&mut driver, SAMPLE, &Layout::default()).await;
    if !report.passed() {
        for server in driver.servers() {
            let logs = driver.logs(&server.name).await.unwrap_or_default();
            let tail: Vec<&str> = logs.lines().rev().take(30).collect();
            eprintln!("---- {} (last {} lines)", server.name, tail.len());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
    driver.teardown().await?;
    // The scripts print the report last, after cargo's output.
    match std::env::var("MIDGE_E2E_REPORT") {
        Ok(path) => std::fs::write(&path, report.to_string())?,
        Err(_) => println!("{report}"),
    }
    anyhow::ensure!(report.passed(), "e2e scenarios failed (see the report)");
    let machines: Vec<&str> = report.machines.iter().map(|(_, m)| m.as_str()).collect();
    for expected in ["x86_64", "aarch64", "armv7l"] {
        anyhow::ensure!(
            machines.contains(&expected),
            "no server reported {expected}: {machines:?}"
        );
    }
    Ok(())
}
