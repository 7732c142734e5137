//! The scenarios against a kind cluster with the chart installed; e2e/run-kind.sh creates
//! the cluster, loads the image, installs the chart and runs this with `--ignored`.

use midge_e2e::driver::ClusterDriver;
use midge_e2e::kind::KindDriver;
use midge_e2e::scenarios::{self, Layout};

const SAMPLE: &str = include_str!("../../config/samples/natscluster-edge.yaml");

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a kind cluster with the operator installed: e2e/run-kind.sh"]
async fn scenarios_on_kind() -> anyhow::Result<()> {
    let mut driver = KindDriver::new().await?;
    let mut report = scenarios::run_all(&mut driver, SAMPLE, &Layout::default()).await;
    // The rotation cluster, beside the sample's: a NatsCluster of its own.
    let mut rotation_driver = KindDriver::new().await?;
    if report.passed() {
        midge_e2e::rotation::run(&mut rotation_driver, &mut report).await;
    }
    if report.passed() {
        midge_e2e::kind_only::run(&mut driver, &mut report).await;
    }
    // The scripts print the report last, after cargo's output.
    match std::env::var("MIDGE_E2E_REPORT") {
        Ok(path) => std::fs::write(&path, report.to_string())?,
        Err(_) => println!("{report}"),
    }
    // On failure the cluster stays for run-kind.sh to collect logs, events and /varz.
    anyhow::ensure!(report.passed(), "e2e scenarios failed (see the report)");
    rotation_driver.teardown().await?;
    driver.teardown().await?;
    Ok(())
}
