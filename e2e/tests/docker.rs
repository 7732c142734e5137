//! The scenarios against the real image in Docker containers (e2e/run-docker.sh builds the
//! images for amd64, arm64 and arm/v7 and sets MIDGE_E2E_IMAGES / MIDGE_E2E_UNAME).
//! `MIDGE_E2E_ONLY=rotation` runs only the Secret rotation scenarios (7 and 8).

use midge_e2e::docker::{self, DockerConfig, DockerDriver};
use midge_e2e::driver::ClusterDriver;
use midge_e2e::report::Report;
use midge_e2e::rotation;
use midge_e2e::scenarios::{self, Layout};

const SAMPLE: &str = include_str!("../../config/samples/natscluster-edge.yaml");

/// Prints the end of every server's log when the report failed, then removes the cluster.
async fn finish(driver: &mut DockerDriver, report: &Report) -> anyhow::Result<()> {
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
    driver.teardown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scenarios_on_docker() -> anyhow::Result<()> {
    if !docker::available().await {
        eprintln!("SKIPPED: no Docker engine reachable (`docker info` fails); the docker e2e suite needs one");
        return Ok(());
    }
    let config = DockerConfig::from_env()?;
    let rotation_only = std::env::var("MIDGE_E2E_ONLY").is_ok_and(|v| v == "rotation");
    let mut report = Report::new("docker");
    if !rotation_only {
        let mut driver = DockerDriver::new(config.clone())?;
        report = scenarios::run_all(&mut driver, SAMPLE, &Layout::default()).await;
        finish(&mut driver, &report).await?;
    }
    // The rotation cluster is another NatsCluster: a driver (network, containers) of its own.
    let mut driver = DockerDriver::new(config)?;
    rotation::run(&mut driver, &mut report).await;
    finish(&mut driver, &report).await?;
    // The scripts print the report last, after cargo's output.
    match std::env::var("MIDGE_E2E_REPORT") {
        Ok(path) => std::fs::write(&path, report.to_string())?,
        Err(_) => println!("{report}"),
    }
    anyhow::ensure!(report.passed(), "e2e scenarios failed (see the report)");
    if !rotation_only {
        let machines: Vec<&str> = report.machines.iter().map(|(_, m)| m.as_str()).collect();
        for expected in ["x86_64", "aarch64", "armv7l"] {
            anyhow::ensure!(
                machines.contains(&expected),
                "no server reported {expected}: {machines:?}"
            );
        }
    }
    Ok(())
}
