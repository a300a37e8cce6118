//! The run's workspace: a named volume, filled from a tar of the working tree through a
//! never-started helper container while the run's first stage container starts.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountType, MountVolumeOptions, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateImageOptionsBuilder, RemoveContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::{
    Docker, Error, LABEL_ROLE, Result, RunLabels, is_no_such_image, run_labels, volume_name,
};

/// Where the workspace is mounted in every stage; also the stage's working directory.
pub(crate) const WORKSPACE_PATH: &str = "/workspace";

/// The image of the helper containers the archive is unpacked through. Bump the tag when its
/// content changes.
const HELPER_IMAGE: &str = "gantry/workspace:1";
const HELPER_FILE: &str = ".gantry-workspace";
const HELPER_TEXT: &[u8] =
    b"Gantry unpacks working trees into workspace volumes through never-started containers of this image.\n";

/// A run's workspace volume, shared by all its stages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workspace {
    pub volume: String,
}

/// A working tree waiting to be unpacked into its workspace by the run's first stage.
pub(crate) struct PendingFill {
    archive: Archive,
    /// Held while unpacking, so stages that arrive meanwhile wait; true once done.
    done: tokio::sync::Mutex<bool>,
}

/// Pending fills by (endpoint, volume). Process-wide rather than per [`Docker`], so that a
/// stage finds its run's archive even through another connection to the same engine.
type PendingFills = Mutex<HashMap<(String, String), Arc<PendingFill>>>;

fn pending() -> &'static PendingFills {
    static PENDING: OnceLock<PendingFills> = OnceLock::new();
    PENDING.get_or_init(Mutex::default)
}

impl Docker {
    /// Creates the run's workspace volume. `archive` (see [`Archive`]) is unpacked into
    /// it while the run's first stage container starts; the script waits for it.
    pub async fn create_workspace(
        &self,
        run: &RunLabels,
        archive: impl Into<Archive>,
    ) -> Result<Workspace> {
        let archive = archive.into();
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
            let fill = Arc::new(PendingFill {
                archive,
                done: tokio::sync::Mutex::new(false),
            });
            if let Ok(mut pending) = pending().lock() {
                pending.insert(self.pending_key(&volume), fill);
            }
        }
        Ok(Workspace { volume })
    }

    fn pending_key(&self, volume: &str) -> (String, String) {
        (self.endpoint.to_string(), volume.to_owned())
    }

    /// The workspace's unpacking, if it has not happened yet.
    pub(crate) fn pending_fill(&self, workspace: &Workspace) -> Option<Arc<PendingFill>> {
        let key = self.pending_key(&workspace.volume);
        pending().lock().ok()?.get(&key).cloned()
    }

    /// Drops the archive of a workspace no stage will fill any more.
    pub(crate) fn forget_pending_fill(&self, volume: &str) {
        if let Ok(mut pending) = pending().lock() {
            pending.remove(&self.pending_key(volume));
        }
    }

    /// Unpacks the archive into the workspace unless that has happened meanwhile. Returns the
    /// helper container, which the caller removes once convenient; on failure it is removed
    /// here and the archive stays pending for the next attempt.
    pub(crate) async fn fill_workspace(
        &self,
        run: &RunLabels,
        workspace: &Workspace,
        fill: &PendingFill,
    ) -> Result<Option<String>> {
        let mut done = fill.done.lock().await;
        if *done {
            return Ok(None);
        }
        let helper = self.create_helper_container(run, &workspace.volume).await?;
        let options = UploadToContainerOptionsBuilder::new()
            .path(WORKSPACE_PATH)
            .build();
        let uploaded = match &fill.archive.0 {
            Source::Memory(bytes) => Ok(bollard::body_full(bytes.clone())),
            Source::File { path, .. } => tokio::fs::File::open(path)
                .await
                .map(|file| {
                    bollard::body_try_stream(tokio_util::io::ReaderStream::with_capacity(
                        file, CHUNK,
                    ))
                })
                .map_err(|err| {
                    Error::Api(format!("could not read the working tree's archive: {err}"))
                }),
        };
        let uploaded = match uploaded {
            Ok(body) => self
                .client
                .upload_to_container(&helper, Some(options), body)
                .await
                .map_err(|err| {
                    self.error("could not copy the working tree into the workspace", err)
                }),
            Err(err) => Err(err),
        };
        if let Err(err) = uploaded {
            let options = RemoveContainerOptionsBuilder::new().force(true).build();
            let _ = self.client.remove_container(&helper, Some(options)).await;
            return Err(err);
        }
        *done = true;
        self.forget_pending_fill(&workspace.volume);
        Ok(Some(helper))
    }

    /// Creates a never-started container of the helper image that mounts the workspace,
    /// importing the image first if the engine does not have it.
    pub(crate) async fn create_helper_container(
        &self,
        run: &RunLabels,
        volume: &str,
    ) -> Result<String> {
        let mut labels = run_labels(run);
        labels.insert(LABEL_ROLE.to_owned(), "workspace".to_owned());
        let body = ContainerCreateBody {
            image: Some(HELPER_IMAGE.to_owned()),
            // Never run; the engine only insists that a container has a command.
            cmd: Some(vec![format!("/{HELPER_FILE}")]),
            labels: Some(labels),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                mounts: Some(vec![workspace_mount(volume, run)]),
                network_mode: Some("none".to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        };
        match self.client.create_container(None, body.clone()).await {
            Ok(created) => return Ok(created.id),
            Err(err) if is_no_such_image(&err) => self.import_helper_image().await?,
            Err(err) => return Err(self.error("could not create the workspace container", err)),
        }
        self.client
            .create_container(None, body)
            .await
            .map(|created| created.id)
            .map_err(|err| self.error("could not create the workspace container", err))
    }

    /// Imports the helper image from a one-file root file system built in memory, so no
    /// registry is needed. Concurrent imports are harmless: the last one gets the tag.
    async fn import_helper_image(&self) -> Result<()> {
        let rootfs = helper_rootfs().map_err(|err| {
            Error::Api(format!("could not build the workspace helper image: {err}"))
        })?;
        let (repo, tag) = HELPER_IMAGE
            .split_once(':')
            .unwrap_or((HELPER_IMAGE, "latest"));
        let options = CreateImageOptionsBuilder::new()
            .from_src("-")
            .repo(repo)
            .tag(tag)
            .build();
        let mut events =
            self.client
                .create_image(Some(options), Some(bollard::body_full(rootfs.into())), None);
        while let Some(event) = events.next().await {
            event.map_err(|err| self.error("could not import the workspace helper image", err))?;
        }
        Ok(())
    }
}

fn helper_rootfs() -> io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(HELPER_TEXT.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, HELPER_FILE, HELPER_TEXT)?;
    builder.into_inner()
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

/// A tar of a working tree on its way into a workspace. Made by [`Archive::of_directory`], it
/// lives in a temporary file that is streamed to the engine, so a large repository costs disk
/// for a moment rather than memory, and the file is deleted with the `Archive`. Small archives
/// (tests, generated contexts) can stay in memory: `Archive::from(Vec<u8>)`.
pub struct Archive(Source);

enum Source {
    Memory(Bytes),
    File { path: tempfile::TempPath, len: u64 },
}

/// An archive file's name: `gantry-workspace-<random>.tar`.
const FILE_PREFIX: &str = "gantry-workspace-";
const FILE_SUFFIX: &str = ".tar";

/// How much of an archive file is read at a time while it is sent.
const CHUNK: usize = 256 * 1024;

impl Archive {
    /// Tars the contents of `dir` (not `dir` itself) into a new file in `temp_dir`, leaving out
    /// the entries for which `skip(path relative to dir, is_dir)` is true (a skipped directory
    /// is not read at all).
    ///
    /// Everything else goes in, dotfiles and `.git` included; modes and modification times are
    /// kept; symbolic links are stored as links, never followed. Entries are owned by root (uid
    /// and gid 0), as `docker cp` does, because host user ids mean nothing inside the stage's
    /// image. Sockets, FIFOs and device files are skipped.
    pub fn of_directory(
        dir: &Path,
        temp_dir: &Path,
        skip: &dyn Fn(&Path, bool) -> bool,
    ) -> io::Result<Archive> {
        let file = tempfile::Builder::new()
            .prefix(FILE_PREFIX)
            .suffix(FILE_SUFFIX)
            .tempfile_in(temp_dir)?;
        let mut builder = tar::Builder::new(io::BufWriter::with_capacity(CHUNK, file));
        append_children(&mut builder, dir, Path::new(""), skip)?;
        let file = builder
            .into_inner()?
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        let len = file.as_file().metadata()?.len();
        Ok(Archive(Source::File {
            path: file.into_temp_path(),
            len,
        }))
    }

    /// Deletes the archive files in `temp_dir` that a crash left before their upload; the
    /// number deleted. Only for a directory no live [`Archive`] uses.
    pub fn remove_leftovers(temp_dir: &Path) -> usize {
        let Ok(entries) = fs::read_dir(temp_dir) else {
            return 0;
        };
        entries
            .flatten()
            .filter(|entry| {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                name.starts_with(FILE_PREFIX) && name.ends_with(FILE_SUFFIX)
            })
            .filter(|entry| fs::remove_file(entry.path()).is_ok())
            .count()
    }

    /// The size of the tar in bytes.
    pub fn len(&self) -> u64 {
        match &self.0 {
            Source::Memory(bytes) => bytes.len() as u64,
            Source::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An empty archive: a workspace with nothing to unpack.
impl Default for Archive {
    fn default() -> Archive {
        Archive(Source::Memory(Bytes::new()))
    }
}

impl From<Vec<u8>> for Archive {
    fn from(bytes: Vec<u8>) -> Archive {
        Archive(Source::Memory(Bytes::from(bytes)))
    }
}

/// [`Archive::of_directory`] of all of `dir`, in memory: for tests and small trees.
pub fn tar_directory(dir: &Path) -> io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    append_children(&mut builder, dir, Path::new(""), &|_, _| false)?;
    builder.into_inner()
}

fn append_children<W: io::Write>(
    builder: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
    skip: &dyn Fn(&Path, bool) -> bool,
) -> io::Result<()> {
    let mut entries = fs::read_dir(root.join(rel))?.collect::<io::Result<Vec<_>>>()?;
    // A stable order makes the archive reproducible.
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = rel.join(entry.file_name());
        let metadata = fs::symlink_metadata(entry.path())?;
        let file_type = metadata.file_type();
        if skip(&path, file_type.is_dir()) {
            continue;
        }
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&metadata, tar::HeaderMode::Complete);
        header.set_uid(0);
        header.set_gid(0);
        if file_type.is_dir() {
            header.set_size(0);
            builder.append_data(&mut header, &path, io::empty())?;
            append_children(builder, root, &path, skip)?;
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
