//! Finding and removing what runs left behind.

use std::collections::BTreeMap;
use std::collections::HashMap;

use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;
use futures_util::future::join_all;

use crate::{
    Docker, Error, LABEL_OWNER, LABEL_PID, LABEL_RUN, Leftover, Result, is_not_found, label_filter,
    status_of, volume_name,
};

impl Docker {
    /// Force-removes every container, network and volume labelled with `run_id`.
    /// Removing what is already gone is not an error.
    pub async fn remove_run(&self, run_id: &str) -> Result<()> {
        self.forget_pending_fill(&volume_name(run_id));
        let (containers, networks, volumes) =
            self.labelled(LABEL_RUN, run_id, "the run's ").await?;

        let removals = containers
            .iter()
            .filter_map(|container| container.id.as_deref())
            .map(|id| self.remove_container(id));
        let mut first_error = first_error(join_all(removals).await);

        // Networks and volumes can go once no container uses them.
        let network_removals = networks
            .iter()
            .filter_map(|network| network.id.as_deref())
            .map(|id| async move {
                match self.client.remove_network(id).await {
                    Err(err) if !is_not_found(&err) => {
                        Err(self.error(format_args!("could not remove network {id}"), err))
                    }
                    _ => Ok(()),
                }
            });
        let volume_removals = volumes.iter().map(|volume| async move {
            let options = RemoveVolumeOptionsBuilder::new().force(true).build();
            match self.client.remove_volume(&volume.name, Some(options)).await {
                Err(err) if !is_not_found(&err) => {
                    Err(self.error(format_args!("could not remove volume {}", volume.name), err))
                }
                _ => Ok(()),
            }
        });
        let (networks, volumes) =
            tokio::join!(join_all(network_removals), join_all(volume_removals));
        first_error = first_error
            .or_else(|| self::first_error(networks))
            .or_else(|| self::first_error(volumes));
        match first_error {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.client.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(err) if is_not_found(&err) => Ok(()),
            // Someone else is removing it ("removal already in progress"): wait for that.
            Err(err) if status_of(&err) == Some(409) => {
                let options = WaitContainerOptionsBuilder::new()
                    .condition("removed")
                    .build();
                let mut wait = self.client.wait_container(id, Some(options));
                while let Some(_event) = wait.next().await {}
                Ok(())
            }
            Err(err) => Err(self.error(format_args!("could not remove container {id}"), err)),
        }
    }

    /// The containers (running or not), networks and volumes labelled `label=value`; `whose`
    /// goes before "containers" etc. in errors.
    async fn labelled(
        &self,
        label: &str,
        value: &str,
        whose: &str,
    ) -> Result<(
        Vec<bollard::models::ContainerSummary>,
        Vec<bollard::models::Network>,
        Vec<bollard::models::Volume>,
    )> {
        let filters = label_filter(label, value);
        let (containers, networks, volumes) = tokio::join!(
            self.client.list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&filters)
                    .build()
            )),
            self.client.list_networks(Some(
                ListNetworksOptionsBuilder::new().filters(&filters).build()
            )),
            self.client.list_volumes(Some(
                ListVolumesOptionsBuilder::new().filters(&filters).build()
            )),
        );
        let listing = |what: &str| format!("could not list {whose}{what}");
        Ok((
            containers.map_err(|err| self.error(listing("containers"), err))?,
            networks.map_err(|err| self.error(listing("networks"), err))?,
            volumes
                .map_err(|err| self.error(listing("volumes"), err))?
                .volumes
                .unwrap_or_default(),
        ))
    }

    /// The runs that `owner` has containers, networks or volumes of, one entry per run.
    pub async fn leftovers(&self, owner: &str) -> Result<Vec<Leftover>> {
        let (containers, networks, volumes) = self.labelled(LABEL_OWNER, owner, "").await?;

        let mut runs: BTreeMap<String, Option<u32>> = BTreeMap::new();
        let mut add = |labels: Option<&HashMap<String, String>>| {
            let Some(labels) = labels else { return };
            let Some(run_id) = labels.get(LABEL_RUN) else {
                return;
            };
            let pid = labels.get(LABEL_PID).and_then(|pid| pid.parse().ok());
            let entry = runs.entry(run_id.clone()).or_default();
            if entry.is_none() {
                *entry = pid;
            }
        };
        containers.iter().for_each(|c| add(c.labels.as_ref()));
        networks.iter().for_each(|n| add(n.labels.as_ref()));
        volumes.iter().for_each(|v| add(Some(&v.labels)));
        Ok(runs
            .into_iter()
            .map(|(run_id, pid)| Leftover { run_id, pid })
            .collect())
    }
}

fn first_error(results: Vec<Result<()>>) -> Option<Error> {
    results.into_iter().find_map(Result::err)
}
