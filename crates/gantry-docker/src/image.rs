//! Images: pull policies and pulling.

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptionsBuilder, CreateImageOptionsBuilder};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    Docker, Error, Output, PullPolicy, Result, Stream, cancellable, cause_of, is_not_found,
};

impl Docker {
    /// Makes sure `image` is available locally, pulling it as `policy` says. Pull progress goes
    /// to `log` as stderr lines.
    pub async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        log: &mpsc::Sender<Output>,
    ) -> Result<()> {
        if policy != PullPolicy::Always && self.is_known(image) {
            return Ok(());
        }
        let present = match policy {
            PullPolicy::Always => false,
            PullPolicy::IfNotPresent | PullPolicy::Never => self.image_present(image).await?,
        };
        if !present {
            self.pull_or_refuse(image, policy, log).await?;
        }
        self.remember(image);
        Ok(())
    }

    /// Called once the image is known to be missing (or must be pulled anyway).
    async fn pull_or_refuse(
        &self,
        image: &str,
        policy: PullPolicy,
        log: &mpsc::Sender<Output>,
    ) -> Result<()> {
        match policy {
            PullPolicy::Never => Err(Error::ImageMissing {
                image: image.to_owned(),
            }),
            PullPolicy::Always | PullPolicy::IfNotPresent => self.pull(image, log).await,
        }
    }

    async fn image_present(&self, image: &str) -> Result<bool> {
        match self.client.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(err) if is_not_found(&err) => Ok(false),
            Err(err) => Err(self.error(format_args!("could not inspect image '{image}'"), err)),
        }
    }

    async fn pull(&self, image: &str, log: &mpsc::Sender<Output>) -> Result<()> {
        let mut options = CreateImageOptionsBuilder::new().from_image(image);
        // Without a tag the engine would pull every tag of the repository.
        if !has_tag_or_digest(image) {
            options = options.tag("latest");
        }
        send_line(log, format!("Pulling image '{image}'")).await;
        let mut progress = self.client.create_image(Some(options.build()), None, None);
        while let Some(event) = progress.next().await {
            let event = event.map_err(|err| self.pull_error(image, err))?;
            // Layer progress ("Downloading", "Extracting") is noise in a stage log; keep the
            // lines that say something happened.
            if event.progress_detail.is_some_and(|d| d.total.is_some()) {
                continue;
            }
            if let Some(status) = event.status {
                let line = match event.id {
                    Some(id) => format!("{id}: {status}"),
                    None => status,
                };
                send_line(log, line).await;
            }
        }
        self.remember(image);
        Ok(())
    }

    fn pull_error(&self, image: &str, err: bollard::errors::Error) -> Error {
        let message = cause_of(&err);
        match self.error("", err) {
            unreachable @ Error::Unreachable { .. } => unreachable,
            _ => Error::Pull {
                image: image.to_owned(),
                message,
            },
        }
    }

    fn is_known(&self, image: &str) -> bool {
        self.known_images
            .lock()
            .is_ok_and(|known| known.contains(image))
    }

    fn remember(&self, image: &str) {
        if let Ok(mut known) = self.known_images.lock() {
            known.insert(image.to_owned());
        }
    }

    /// Creates a container, dealing with a missing image only when the engine reports one:
    /// pulls per `policy` and tries again. Returns the container id, or `None` when `cancel`
    /// fired during a pull. The create request itself always runs to its end, so a container
    /// the engine made is never lost track of.
    pub(crate) async fn create_container(
        &self,
        name: Option<&str>,
        body: ContainerCreateBody,
        policy: PullPolicy,
        log: &mpsc::Sender<Output>,
        cancel: &CancellationToken,
    ) -> Result<Option<String>> {
        let image = body.image.clone().unwrap_or_default();
        if policy == PullPolicy::Always
            && cancellable(cancel, self.pull(&image, log))
                .await
                .transpose()?
                .is_none()
        {
            return Ok(None);
        }
        let options = name.map(|name| CreateContainerOptionsBuilder::new().name(name).build());
        match self
            .client
            .create_container(options.clone(), body.clone())
            .await
        {
            Ok(created) => {
                self.remember(&image);
                return Ok(Some(created.id));
            }
            Err(err) if is_no_such_image(&err) => {
                self.forget(&image);
                let pulled = self.pull_or_refuse(&image, policy, log);
                if cancellable(cancel, pulled).await.transpose()?.is_none() {
                    return Ok(None);
                }
            }
            Err(err) => return Err(self.error("could not create container", err)),
        }
        self.client
            .create_container(options, body)
            .await
            .map(|created| Some(created.id))
            .map_err(|err| self.error("could not create container", err))
    }

    fn forget(&self, image: &str) {
        if let Ok(mut known) = self.known_images.lock() {
            known.remove(image);
        }
    }
}

pub(crate) fn is_no_such_image(err: &bollard::errors::Error) -> bool {
    is_not_found(err) && cause_of(err).contains("No such image")
}

/// Whether a reference names a tag or digest (`name:tag`, `name@sha256:…`); a `:` before the
/// last `/` belongs to a registry port.
fn has_tag_or_digest(image: &str) -> bool {
    if image.contains('@') {
        return true;
    }
    let last_component = image.rsplit('/').next().unwrap_or(image);
    last_component.contains(':')
}

pub(crate) async fn send_line(log: &mpsc::Sender<Output>, line: String) {
    let mut bytes = line.into_bytes();
    bytes.push(b'\n');
    // The log is best effort: a closed receiver must not fail the pull.
    let _ = log
        .send(Output {
            stream: Stream::Stderr,
            bytes,
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_digests() {
        assert!(!has_tag_or_digest("busybox"));
        assert!(!has_tag_or_digest("registry:5000/team/app"));
        assert!(has_tag_or_digest("local/python:3.11"));
        assert!(has_tag_or_digest("registry:5000/app:1"));
        assert!(has_tag_or_digest("app@sha256:abc"));
    }
}
