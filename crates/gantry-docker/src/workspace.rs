//! The run's workspace: a named volume, filled from a tar of the working tree by the run's
//! first stage container before it starts.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use bollard::models::{Mount, MountType, MountVolumeOptions, VolumeCreateRequest};
use bollard::query_parameters::UploadToContainerOptionsBuilder;
use bytes::Bytes;

use crate::{Docker, Result, RunLabels, run_labels, volume_name};

/// Where the workspace is mounted in every stage; also the stage's working directory.
pub(crate) const WORKSPACE_PATH: &str = "/workspace";

/// A run's workspace volume, shared by all its stages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workspace {
    pub volume: String,
}

/// A working tree waiting for the first stage of its run; `None` once it is in the volume.
type PendingArchive = Arc<tokio::sync::Mutex<Option<Bytes>>>;

/// Pending archives by (endpoint, volume). Process-wide rather than per [`Docker`], so that a
/// stage finds its run's archive even through another connection to the same engine.
fn pending() -> &'static Mutex<HashMap<(String, String), PendingArchive>> {
    static PENDING: OnceLock<Mutex<HashMap<(String, String), PendingArchive>>> = OnceLock::new();
    PENDING.get_or_init(Mutex::default)
}

impl Docker {
    /// Creates the run's workspace volume; `archive` (see [`tar_directory`]) is unpacked into
    /// it by the first stage that runs, before that stage starts.
    pub async fn create_workspace(&self, run: &RunLabels, archive: Vec<u8>) -> Result<Workspace> {
        let volume = volume_name(&run.run_id);
        let request = VolumeCreateRequest {
            name: Some(volume.clone()),
            labels: Some(run_labels(run)),
            ..Default::default()
        };
        self.client
            .create_volume(request)
            .await
            .map_err(|err| self.error(format_args!("could not create volume {volume}"), err))?;
        if !archive.is_empty() {
            let archive = Arc::new(tokio::sync::Mutex::new(Some(Bytes::from(archive))));
            if let Ok(mut pending) = pending().lock() {
                pending.insert(self.pending_key(&volume), archive);
            }
        }
        Ok(Workspace { volume })
    }

    fn pending_key(&self, volume: &str) -> (String, String) {
        (self.endpoint.to_string(), volume.to_owned())
    }

    /// Unpacks the workspace's pending archive into it through `container`, a created but not
    /// yet started container that mounts the workspace. Stages that come while this runs wait
    /// for it, so none starts on a half-filled workspace.
    pub(crate) async fn fill_workspace(
        &self,
        workspace: &Workspace,
        container: &str,
    ) -> Result<()> {
        let key = self.pending_key(&workspace.volume);
        let Some(archive) = pending()
            .lock()
            .ok()
            .and_then(|pending| pending.get(&key).cloned())
        else {
            return Ok(());
        };
        let mut archive = archive.lock().await;
        let Some(bytes) = archive.clone() else {
            return Ok(());
        };
        let options = UploadToContainerOptionsBuilder::new()
            .path(WORKSPACE_PATH)
            .build();
        self.client
            .upload_to_container(container, Some(options), bollard::body_full(bytes))
            .await
            .map_err(|err| self.error("could not copy the working tree into the workspace", err))?;
        *archive = None;
        self.forget_pending_archive(&workspace.volume);
        Ok(())
    }

    /// Drops the archive of a workspace no stage will fill any more.
    pub(crate) fn forget_pending_archive(&self, volume: &str) {
        if let Ok(mut pending) = pending().lock() {
            pending.remove(&self.pending_key(volume));
        }
    }
}

/// The workspace volume mounted at `/workspace`. `nocopy` keeps an image's own `/workspace`
/// content out of the volume; the labels apply if the mount is what creates the volume.
pub(crate) fn workspace_mount(volume: &str, run: &RunLabels) -> Mount {
    Mount {
        typ: Some(MountType::VOLUME),
        source: Some(volume.to_owned()),
        target: Some(WORKSPACE_PATH.to_owned()),
        volume_options: Some(MountVolumeOptions {
            no_copy: Some(true),
            labels: Some(run_labels(run)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Tars the contents of `dir` (not `dir` itself) for [`Docker::create_workspace`].
///
/// Everything goes in, dotfiles and `.git` included; modes and modification times are kept;
/// symbolic links are stored as links, never followed. Entries are owned by root (uid and gid 0),
/// as `docker cp` does, because host user ids mean nothing inside the stage's image. Sockets,
/// FIFOs and device files are skipped.
pub fn tar_directory(dir: &Path) -> io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    append_children(&mut builder, dir, Path::new(""))?;
    builder.into_inner()
}

fn append_children(builder: &mut tar::Builder<Vec<u8>>, root: &Path, rel: &Path) -> io::Result<()> {
    let mut entries = fs::read_dir(root.join(rel))?.collect::<io::Result<Vec<_>>>()?;
    // A stable order makes the archive reproducible.
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = rel.join(entry.file_name());
        let metadata = fs::symlink_metadata(entry.path())?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&metadata, tar::HeaderMode::Complete);
        header.set_uid(0);
        header.set_gid(0);
        let file_type = metadata.file_type();
        if file_type.is_dir() {
            header.set_size(0);
            builder.append_data(&mut header, &path, io::empty())?;
            append_children(builder, root, &path)?;
        } else if file_type.is_file() {
            builder.append_data(&mut header, &path, fs::File::open(entry.path())?)?;
        } else if file_type.is_symlink() {
            header.set_size(0);
            builder.append_link(&mut header, &path, fs::read_link(entry.path())?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn tars_dotfiles_modes_and_links() {
        let dir = std::env::temp_dir().join(format!("gantry-tar-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join(".git/objects")).unwrap();
        fs::write(dir.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
        fs::write(dir.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(dir.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd")).unwrap();
        // Independent of the umask.
        for (path, mode) in [
            (".git", 0o755),
            (".git/objects", 0o700),
            (".git/HEAD", 0o600),
        ] {
            fs::set_permissions(dir.join(path), fs::Permissions::from_mode(mode)).unwrap();
        }

        let archive = tar_directory(&dir).unwrap();
        fs::remove_dir_all(&dir).unwrap();

        let mut listing = Vec::new();
        for entry in tar::Archive::new(archive.as_slice()).entries().unwrap() {
            let entry = entry.unwrap();
            let header = entry.header();
            listing.push(format!(
                "{} {:?} {:o} {}:{} {}",
                entry.path().unwrap().display(),
                header.entry_type(),
                header.mode().unwrap() & 0o777,
                header.uid().unwrap(),
                header.gid().unwrap(),
                header
                    .link_name()
                    .unwrap()
                    .map(|l| l.display().to_string())
                    .unwrap_or_default(),
            ));
        }
        let listing = listing.join("\n");
        let expected = [
            ".git Directory 755 0:0 ",
            ".git/HEAD Regular 600 0:0 ",
            ".git/objects Directory 700 0:0 ",
            "passwd Symlink 777 0:0 /etc/passwd",
            "run.sh Regular 755 0:0 ",
        ]
        .join("\n");
        assert_eq!(listing, expected);
    }
}
