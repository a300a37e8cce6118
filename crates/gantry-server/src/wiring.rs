//! From the configuration to what the engine needs: registry credentials and
//! the clusters `deploy` stages roll out to. Shared by `gantry serve` and
//! `gantry run`.

use gantry_config::Config;
use gantry_engine::{KubeDeployer, RegistryAuth};

/// Credentials of every `[[registry]]`, by name.
pub fn registry_auths(config: &Config) -> Vec<RegistryAuth> {
    config
        .registries
        .iter()
        .map(|r| RegistryAuth {
            name: r.name.clone(),
            address: r.address.clone(),
            username: r.username.clone(),
            password: r.password.expose().to_string(),
        })
        .collect()
}

/// Every `[[cluster]]`, with the default rollout thresholds.
pub fn kube_deployer(config: &Config) -> KubeDeployer {
    KubeDeployer {
        clusters: config.clusters.iter().map(kube_cluster).collect(),
        thresholds: gantry_kube::Thresholds::default(),
    }
}

/// Where gantry-kube finds a `[[cluster]]`.
pub fn kube_cluster(cluster: &gantry_config::Cluster) -> gantry_kube::ClusterConfig {
    gantry_kube::ClusterConfig {
        name: cluster.name.clone(),
        kubeconfig: cluster.kubeconfig.clone(),
        context: cluster.context.clone(),
        in_cluster: cluster.in_cluster,
    }
}
