use kube::CustomResourceExt;

fn main() -> anyhow::Result<()> {
    print!(
        "{}",
        serde_yaml::to_string(&midge_operator::crd::NatsCluster::crd())?
    );
    Ok(())
}
