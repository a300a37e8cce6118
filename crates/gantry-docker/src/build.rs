//! Building images from a directory of the run's workspace.
//!
//! The build context comes out of the workspace *volume*, not the checkout on Gantry's disk:
//! earlier stages may have produced files the image needs, and Gantry may run in a container
//! that shares no paths with the engine. The context directory is read through the archive
//! API (`GET /containers/{id}/archive`) of a created-but-never-started helper container that
//! mounts the volume, the same helper [`Docker::create_workspace`] fills the volume through; if
//! the workspace still waits for its working tree (the build is the run's first stage), it is
//! unpacked through that helper first.
//!
//! The archive is then filtered by the context's `.dockerignore` (Docker's rules, see
//! `dockerignore.rs`) and sent to `POST /build` with the classic builder, which API 1.41
//! engines have without a BuildKit session. The Dockerfile and `.dockerignore` are always
//! sent; the engine itself drops them from the context when `.dockerignore` says so. A
//! Dockerfile outside the context goes in under a name of its own, listed in the
//! `.dockerignore` sent along, as the Docker CLI does for a Dockerfile read from standard input.
//!
//! The builder's output goes to the stage log as it comes. The builder announces each step
//! (`Step 3/5 : RUN pytest`), so a failure names the step it happened in. Cancelling drops
//! the request, which makes the engine stop the build and remove its intermediate containers
//! (`forcerm`).

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use bollard::query_parameters::{
    BuildImageOptionsBuilder, DownloadFromContainerOptionsBuilder, RemoveContainerOptionsBuilder,
    TagImageOptionsBuilder,
};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::dockerignore::DockerIgnore;
use crate::image::send_line;
use crate::workspace::WORKSPACE_PATH;
use crate::{
    Docker, Error, Output, Result, RunLabels, Stream, Workspace, cancellable, cause_of,
    is_not_found,
};

/// One image to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildSpec {
    pub run: RunLabels,
    pub stage: String,
    /// The run's workspace; the context is read from it.
    pub workspace: Workspace,
    /// The context directory, relative to the workspace root (`.` for the root).
    pub context: String,
    /// Relative to the workspace root; `None` is `<context>/Dockerfile`.
    pub dockerfile: Option<String>,
    /// The stage of a multi-stage Dockerfile to build.
    pub target: Option<String>,
    pub args: Vec<(String, String)>,
    pub labels: Vec<(String, String)>,
    /// The repository, e.g. `registry.example.com:8083/team/app`.
    pub image: String,
    /// Each becomes `<image>:<tag>`; none means `latest`.
    pub tags: Vec<String>,
}

/// A built image, tagged locally with every reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltImage {
    /// `sha256:…`
    pub id: String,
    /// `<image>:<tag>` for each tag, in the order of [`BuildSpec::tags`].
    pub references: Vec<String>,
}

/// Instructions longer than this are shortened in error messages.
const STEP_TEXT_LIMIT: usize = 80;

/// How often a build is tried when the engine loses an image during its cache lookup.
const BUILD_TRIES: u32 = 3;

/// Whether a failed step is the classic builder's cache-lookup race rather than the
/// Dockerfile's fault: the engine lists the parent image's children, then reads each one, and a
/// child removed in between (`docker image rm`, a `prune` cron job, another CI on the same
/// engine) fails the step with `unable to find image "sha256:…"`. Reproduced with the docker CLI
/// alone (a build beside a loop building and removing a sibling image failed 2 builds in 80); the
/// same build succeeds when tried again. A missing `FROM` image is reported by name, not by id.
fn lost_cached_image(message: &str) -> bool {
    message.starts_with("unable to find image \"sha256:")
}

impl Docker {
    /// Builds `spec`'s image from its context in the workspace and tags it with every
    /// reference. The builder's output goes to `output` (its own lines as stdout, Gantry's and
    /// the engine's status lines as stderr); callers must drain it concurrently.
    pub async fn build_image(
        &self,
        spec: &BuildSpec,
        output: mpsc::Sender<Output>,
        cancel: CancellationToken,
    ) -> Result<BuiltImage> {
        let span = tracing::debug_span!(
            "build",
            run_id = %spec.run.run_id,
            stage = %spec.stage,
            image = %spec.image
        );
        self.build_image_in(spec, &output, &cancel)
            .instrument(span)
            .await
    }

    async fn build_image_in(
        &self,
        spec: &BuildSpec,
        output: &mpsc::Sender<Output>,
        cancel: &CancellationToken,
    ) -> Result<BuiltImage> {
        let paths = BuildPaths::new(&spec.context, spec.dockerfile.as_deref())?;
        let references = references(&spec.image, &spec.tags)?;
        let cancelled = || Error::Cancelled {
            what: format!("the build of '{}'", spec.image),
        };

        let sources = cancellable(cancel, self.read_context(spec, &paths))
            .await
            .ok_or_else(cancelled)??;
        let prepared = tokio::task::spawn_blocking(move || prepare_context(sources))
            .await
            .map_err(|err| Error::Api(format!("preparing the build context failed: {err}")))??;
        send_line(
            output,
            format!(
                "Sending build context to Docker daemon: {} in {} file{}{}",
                human_size(prepared.archive.len()),
                prepared.files,
                if prepared.files == 1 { "" } else { "s" },
                match prepared.ignored {
                    0 => String::new(),
                    n => format!(" ({n} left out by .dockerignore)"),
                }
            ),
        )
        .await;

        let mut options = BuildImageOptionsBuilder::new()
            .dockerfile(&prepared.dockerfile)
            .t(&references[0])
            .buildargs(&spec.args.iter().cloned().collect::<HashMap<_, _>>())
            .labels(&spec.labels.iter().cloned().collect::<HashMap<_, _>>())
            .rm(true)
            .forcerm(true);
        if let Some(target) = &spec.target {
            options = options.target(target);
        }
        let options = options.build();
        let archive = bytes::Bytes::from(prepared.archive);
        let mut tries = 1;
        let id = loop {
            let building = self.run_build(options.clone(), archive.clone(), output);
            match cancellable(cancel, building).await.ok_or_else(cancelled)? {
                Err(Error::Build { message, .. })
                    if tries < BUILD_TRIES && lost_cached_image(&message) =>
                {
                    tries += 1;
                    send_line(
                        output,
                        format!(
                            "the engine lost an image while looking up its build cache \
                             ({message}): an image removal on this engine ran beside the \
                             build; building again (try {tries} of {BUILD_TRIES})"
                        ),
                    )
                    .await;
                }
                result => break result?,
            }
        };
        let id = match id {
            Some(id) => id,
            // The classic builder reports the id in an `aux` message; ask if it did not.
            None => self
                .client
                .inspect_image(&references[0])
                .await
                .map_err(|err| self.error("could not inspect the built image", err))?
                .id
                .ok_or_else(|| {
                    Error::Api("the engine reported no id for the built image".into())
                })?,
        };
        for reference in &references[1..] {
            let (repo, tag) = split_reference(reference);
            let options = TagImageOptionsBuilder::new().repo(repo).tag(tag).build();
            self.client
                .tag_image(&id, Some(options))
                .await
                .map_err(|err| self.error(format_args!("could not tag '{reference}'"), err))?;
        }
        Ok(BuiltImage { id, references })
    }

    /// Reads the context (and a Dockerfile outside it) out of the workspace volume.
    async fn read_context(&self, spec: &BuildSpec, paths: &BuildPaths) -> Result<ContextSources> {
        let mut helper = Helper {
            docker: self.clone(),
            id: Some(self.workspace_helper(&spec.run, &spec.workspace).await?),
        };
        let result = async {
            let helper_id = helper.id.as_deref().unwrap_or_default();
            let context = self
                .download(helper_id, &paths.in_container(&paths.context))
                .await?
                .ok_or_else(|| Error::BuildContext {
                    message: format!(
                        "build context '{}' does not exist in the workspace",
                        paths.display_context()
                    ),
                })?;
            let outside_dockerfile = match &paths.dockerfile_in_context {
                Some(_) => None,
                None => Some(
                    self.download(helper_id, &paths.in_container(&paths.dockerfile))
                        .await?
                        .ok_or_else(|| paths.missing_dockerfile())?,
                ),
            };
            Ok(ContextSources {
                context,
                outside_dockerfile,
                paths: paths.clone(),
            })
        }
        .await;
        helper.remove().await;
        result
    }

    /// A never-started container that mounts the workspace, unpacking a pending working tree
    /// into it first.
    async fn workspace_helper(&self, run: &RunLabels, workspace: &Workspace) -> Result<String> {
        if let Some(fill) = self.pending_fill(workspace)
            && let Some(helper) = self.fill_workspace(run, workspace, &fill).await?
        {
            return Ok(helper);
        }
        self.create_helper_container(run, &workspace.volume).await
    }

    /// The tar of `path` in the container, or `None` if there is no such path.
    async fn download(&self, container: &str, path: &str) -> Result<Option<Vec<u8>>> {
        let options = DownloadFromContainerOptionsBuilder::new()
            .path(path)
            .build();
        let mut chunks = self
            .client
            .download_from_container(container, Some(options));
        let mut archive = Vec::new();
        while let Some(chunk) = chunks.next().await {
            match chunk {
                Ok(bytes) => archive.extend_from_slice(&bytes),
                Err(err) if is_not_found(&err) => return Ok(None),
                Err(err) => {
                    return Err(self.error(
                        format_args!("could not read {path} from the workspace"),
                        err,
                    ));
                }
            }
        }
        Ok(Some(archive))
    }

    /// Sends the build request and follows its output; returns the image id if the engine
    /// reported it.
    async fn run_build(
        &self,
        options: bollard::query_parameters::BuildImageOptions,
        archive: bytes::Bytes,
        output: &mpsc::Sender<Output>,
    ) -> Result<Option<String>> {
        let body = bollard::body_full(archive);
        let mut events = self.client.build_image(options, None, Some(body));
        let mut steps = StepTracker::default();
        let mut id = None;
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(err) => return Err(self.build_error(steps.current(), err)),
            };
            if let Some(text) = event.stream {
                steps.feed(&text);
                let _ = output
                    .send(Output {
                        stream: Stream::Stdout,
                        bytes: text.into_bytes(),
                    })
                    .await;
            }
            if let Some(status) = event.status
                && event.progress_detail.is_none_or(|d| d.total.is_none())
            {
                let line = match event.id {
                    Some(id) => format!("{id}: {status}"),
                    None => status,
                };
                send_line(output, line).await;
            }
            if let Some(aux) = event.aux
                && let Some(image_id) = aux.id
            {
                id = Some(image_id);
            }
        }
        Ok(id)
    }

    fn build_error(&self, step: Option<String>, err: bollard::errors::Error) -> Error {
        use bollard::errors::Error as E;
        match &err {
            // The Dockerfile's fault: a failing step, or one the engine rejected up front.
            E::DockerStreamError { .. } | E::DockerResponseServerError { .. } => Error::Build {
                step,
                message: cause_of(&err),
            },
            _ => self.error("the image build broke off", err),
        }
    }
}

/// A helper container, removed explicitly or, if the build future is dropped, in the
/// background.
struct Helper {
    docker: Docker,
    id: Option<String>,
}

impl Helper {
    async fn remove(&mut self) {
        if let Some(id) = self.id.take() {
            remove_helper(&self.docker, &id).await;
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if let Some(id) = self.id.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let docker = self.docker.clone();
            runtime.spawn(async move { remove_helper(&docker, &id).await });
        }
    }
}

async fn remove_helper(docker: &Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::new().force(true).build();
    if let Err(err) = docker.client.remove_container(id, Some(options)).await
        && !is_not_found(&err)
    {
        tracing::warn!(container = %id, error = %err, "could not remove the workspace helper");
    }
}

/// The context and Dockerfile paths, relative to the workspace root, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
struct BuildPaths {
    /// `""` for the workspace root.
    context: String,
    dockerfile: String,
    /// The Dockerfile's path relative to the context, if it is inside it.
    dockerfile_in_context: Option<String>,
}

impl BuildPaths {
    fn new(context: &str, dockerfile: Option<&str>) -> Result<BuildPaths> {
        let context = workspace_relative("build context", context)?;
        let dockerfile = match dockerfile {
            Some(dockerfile) => workspace_relative("Dockerfile", dockerfile)?,
            None if context.is_empty() => "Dockerfile".to_owned(),
            None => format!("{context}/Dockerfile"),
        };
        if dockerfile.is_empty() {
            return Err(Error::BuildContext {
                message: "Dockerfile '.' is the workspace itself, not a file".into(),
            });
        }
        let dockerfile_in_context = if context.is_empty() {
            Some(dockerfile.clone())
        } else {
            dockerfile
                .strip_prefix(&context)
                .and_then(|rest| rest.strip_prefix('/'))
                .map(str::to_owned)
        };
        Ok(BuildPaths {
            context,
            dockerfile,
            dockerfile_in_context,
        })
    }

    fn in_container(&self, relative: &str) -> String {
        if relative.is_empty() {
            WORKSPACE_PATH.to_owned()
        } else {
            format!("{WORKSPACE_PATH}/{relative}")
        }
    }

    fn display_context(&self) -> &str {
        if self.context.is_empty() {
            "."
        } else {
            &self.context
        }
    }

    fn missing_dockerfile(&self) -> Error {
        Error::BuildContext {
            message: format!(
                "Dockerfile '{}' does not exist in the workspace",
                self.dockerfile
            ),
        }
    }
}

/// Normalizes a path relative to the workspace root: `./a//b/` is `a/b`, `.` is `""`. Absolute
/// paths and paths leaving the workspace are errors.
fn workspace_relative(what: &str, path: &str) -> Result<String> {
    let invalid = |problem: &str| Error::BuildContext {
        message: format!("{what} '{path}' {problem}"),
    };
    if path.starts_with('/') {
        return Err(invalid(
            "is absolute; write it relative to the workspace root",
        ));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(invalid("leaves the workspace ('..' is not allowed)")),
            part => parts.push(part),
        }
    }
    Ok(parts.join("/"))
}

/// `<image>:<tag>` for each tag (`latest` if there are none), each tag checked.
fn references(image: &str, tags: &[String]) -> Result<Vec<String>> {
    let latest = ["latest".to_owned()];
    let tags = if tags.is_empty() { &latest[..] } else { tags };
    tags.iter()
        .map(|tag| {
            let valid = tag.len() <= 128
                && tag
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if valid {
                Ok(format!("{image}:{tag}"))
            } else {
                Err(Error::Build {
                    step: None,
                    message: format!(
                        "invalid tag '{tag}': a tag is up to 128 letters, digits, '_', '.' and \
                         '-', not starting with '.' or '-'"
                    ),
                })
            }
        })
        .collect()
}

/// Splits `repo:tag`; a `:` before the last `/` belongs to a registry port.
pub(crate) fn split_reference(reference: &str) -> (&str, &str) {
    let name_start = reference.rfind('/').map_or(0, |slash| slash + 1);
    match reference[name_start..].rfind(':') {
        Some(colon) => (
            &reference[..name_start + colon],
            &reference[name_start + colon + 1..],
        ),
        None => (reference, "latest"),
    }
}

/// Remembers the step the builder is in from its `Step 3/5 : RUN pytest` lines, which may
/// arrive split over several messages.
#[derive(Default)]
struct StepTracker {
    partial: String,
    current: Option<String>,
}

impl StepTracker {
    fn feed(&mut self, text: &str) {
        self.partial.push_str(text);
        while let Some(newline) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=newline).collect();
            self.see(line.trim_end());
        }
    }

    fn see(&mut self, line: &str) {
        if let Some((number, instruction)) = line
            .strip_prefix("Step ")
            .and_then(|rest| rest.split_once(" : "))
        {
            let mut instruction = instruction.trim().to_owned();
            if instruction.chars().count() > STEP_TEXT_LIMIT {
                instruction = instruction.chars().take(STEP_TEXT_LIMIT - 1).collect();
                instruction.push('…');
            }
            self.current = Some(format!("{number} '{instruction}'"));
        }
    }

    fn current(&mut self) -> Option<String> {
        let partial = std::mem::take(&mut self.partial);
        self.see(partial.trim_end());
        self.current.clone()
    }
}

/// What the workspace gave: the tar of the context directory (entries prefixed with its
/// name, as the archive API returns them) and that of a Dockerfile outside it.
struct ContextSources {
    context: Vec<u8>,
    outside_dockerfile: Option<Vec<u8>>,
    paths: BuildPaths,
}

/// The tar the build request sends.
#[derive(Debug)]
struct PreparedContext {
    archive: Vec<u8>,
    /// The Dockerfile's path inside `archive`.
    dockerfile: String,
    files: usize,
    ignored: usize,
}

/// One entry of the context, its path relative to the context root.
struct Item {
    path: PathBuf,
    /// `path` as `/`-separated text, for matching.
    text: String,
    header: tar::Header,
    link: Option<PathBuf>,
    data: Vec<u8>,
}

/// Filters the context by its `.dockerignore` and adds a Dockerfile from outside it.
fn prepare_context(sources: ContextSources) -> Result<PreparedContext> {
    let paths = &sources.paths;
    let broken = |err: io::Error| Error::Api(format!("could not read the build context: {err}"));
    let mut items = read_context(&sources.context, paths).map_err(broken)?;

    let dockerignore = match items
        .iter()
        .find(|item| item.text == ".dockerignore" && item.header.entry_type().is_file())
    {
        Some(item) => DockerIgnore::parse(&String::from_utf8_lossy(&item.data))
            .map_err(|message| Error::BuildContext { message })?,
        None => DockerIgnore::default(),
    };

    let dockerfile = match (&paths.dockerfile_in_context, &sources.outside_dockerfile) {
        (Some(inside), _) => {
            if !items.iter().any(|item| item.text == *inside) {
                return Err(paths.missing_dockerfile());
            }
            inside.clone()
        }
        (None, Some(archive)) => {
            let content = read_single_file(archive)
                .map_err(broken)?
                .ok_or_else(|| paths.missing_dockerfile())?;
            let name = unique_name(&items, ".gantry.Dockerfile");
            // The Docker CLI's trick for a Dockerfile from outside: list it in the
            // `.dockerignore` sent along, so the engine leaves it out of `COPY . .`.
            match items.iter_mut().find(|item| item.text == ".dockerignore") {
                Some(item) => {
                    item.data
                        .extend_from_slice(format!("\n{name}\n").as_bytes());
                    item.header.set_size(item.data.len() as u64);
                }
                None => items.push(file_item(
                    ".dockerignore",
                    format!(".dockerignore\n{name}\n").into_bytes(),
                )),
            }
            items.push(file_item(&name, content));
            name
        }
        (None, None) => return Err(paths.missing_dockerfile()),
    };

    let kept =
        |text: &str| text == dockerfile || text == ".dockerignore" || !dockerignore.excludes(text);
    let kept_paths: std::collections::HashSet<String> = items
        .iter()
        .filter(|item| kept(&item.text))
        .map(|item| item.text.clone())
        .collect();

    let mut builder = tar::Builder::new(Vec::new());
    let (mut files, mut ignored) = (0, 0);
    let write = |builder: &mut tar::Builder<Vec<u8>>, item: &mut Item| -> io::Result<()> {
        match &item.link {
            Some(link) => builder.append_link(&mut item.header, &item.path, link),
            None => builder.append_data(&mut item.header, &item.path, item.data.as_slice()),
        }
    };
    for mut item in items {
        let entry_type = item.header.entry_type();
        if !kept(&item.text) {
            if !entry_type.is_dir() {
                ignored += 1;
            }
            continue;
        }
        // A hard link to a file left out would point at nothing.
        if entry_type.is_hard_link()
            && !item
                .link
                .as_ref()
                .is_some_and(|target| kept_paths.contains(&slash_text(target)))
        {
            ignored += 1;
            continue;
        }
        if !entry_type.is_dir() {
            files += 1;
        }
        write(&mut builder, &mut item).map_err(broken)?;
    }
    let archive = builder.into_inner().map_err(broken)?;
    Ok(PreparedContext {
        archive,
        dockerfile,
        files,
        ignored,
    })
}

/// Reads the archive API's tar of the context directory, dropping the directory's own name
/// from every path (and from hard link targets, which are relative to the archive's root).
fn read_context(archive: &[u8], paths: &BuildPaths) -> io::Result<Vec<Item>> {
    let mut items = Vec::new();
    let mut entries = tar::Archive::new(archive);
    for (index, entry) in entries.entries()?.enumerate() {
        let mut entry = entry?;
        let header = entry.header().clone();
        let entry_type = header.entry_type();
        if index == 0 && !entry_type.is_dir() {
            return Err(io::Error::other(format!(
                "build context '{}' is a file, not a directory",
                paths.display_context()
            )));
        }
        let path = strip_first(&entry.path()?);
        if path.as_os_str().is_empty() {
            continue;
        }
        let link = match entry_type {
            t if t.is_symlink() => entry.link_name()?.map(|link| link.into_owned()),
            t if t.is_hard_link() => entry.link_name()?.map(|link| strip_first(&link)),
            _ => None,
        };
        // Devices, FIFOs and the like have no place in a build context.
        if !(entry_type.is_file() || entry_type.is_dir() || link.is_some()) {
            continue;
        }
        let mut data = Vec::new();
        if entry_type.is_file() {
            entry.read_to_end(&mut data)?;
        }
        items.push(Item {
            text: slash_text(&path),
            path,
            header,
            link,
            data,
        });
    }
    Ok(items)
}

/// The content of the one regular file in an archive API tar, if it is one.
fn read_single_file(archive: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let mut entries = tar::Archive::new(archive);
    for entry in entries.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type().is_file() {
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            return Ok(Some(data));
        }
    }
    Ok(None)
}

fn strip_first(path: &Path) -> PathBuf {
    path.components()
        .skip_while(|c| matches!(c, Component::CurDir | Component::RootDir))
        .skip(1)
        .collect()
}

fn slash_text(path: &Path) -> String {
    path.to_string_lossy().trim_end_matches('/').to_owned()
}

fn unique_name(items: &[Item], base: &str) -> String {
    let taken = |name: &str| items.iter().any(|item| item.text == name);
    let mut name = base.to_owned();
    let mut n = 1;
    while taken(&name) {
        name = format!("{base}.{n}");
        n += 1;
    }
    name
}

fn file_item(path: &str, data: Vec<u8>) -> Item {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(data.len() as u64);
    Item {
        path: PathBuf::from(path),
        text: path.to_owned(),
        header,
        link: None,
        data,
    }
}

fn human_size(bytes: usize) -> String {
    // Precision does not matter here; this is a log line.
    #[allow(clippy::cast_precision_loss)]
    let bytes = bytes as f64;
    if bytes < 1000.0 {
        format!("{bytes} B")
    } else if bytes < 1e6 {
        format!("{:.1} kB", bytes / 1e3)
    } else {
        format!("{:.1} MB", bytes / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, content) in entries {
            let mut header = tar::Header::new_gnu();
            match content {
                Some(content) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(content.len() as u64);
                    header.set_mode(0o644);
                    builder
                        .append_data(&mut header, path, content.as_bytes())
                        .unwrap();
                }
                None => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    header.set_mode(0o755);
                    builder.append_data(&mut header, path, io::empty()).unwrap();
                }
            }
        }
        builder.into_inner().unwrap()
    }

    fn listing(archive: &[u8]) -> Vec<String> {
        let mut archive = tar::Archive::new(archive);
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let path = entry.path().unwrap().display().to_string();
                let mut content = String::new();
                entry.read_to_string(&mut content).unwrap();
                if content.is_empty() {
                    path
                } else {
                    format!("{path}={}", content.trim_end().replace('\n', "|"))
                }
            })
            .collect()
    }

    #[test]
    fn filters_by_dockerignore_and_keeps_the_dockerfile() {
        let context = archive(&[
            ("backend", None),
            ("backend/Dockerfile", Some("FROM x")),
            (
                "backend/.dockerignore",
                Some("*.log\nDockerfile\nsecrets\n!secrets/public.pem\n"),
            ),
            ("backend/app.py", Some("print()")),
            ("backend/debug.log", Some("noise")),
            ("backend/secrets", None),
            ("backend/secrets/key", Some("k")),
            ("backend/secrets/public.pem", Some("p")),
        ]);
        let paths = BuildPaths::new("backend", None).unwrap();
        let prepared = prepare_context(ContextSources {
            context,
            outside_dockerfile: None,
            paths,
        })
        .unwrap();
        assert_eq!(prepared.dockerfile, "Dockerfile");
        assert_eq!(
            listing(&prepared.archive),
            [
                "Dockerfile=FROM x",
                ".dockerignore=*.log|Dockerfile|secrets|!secrets/public.pem",
                "app.py=print()",
                "secrets/public.pem=p",
            ]
        );
        assert_eq!((prepared.files, prepared.ignored), (4, 2));
    }

    #[test]
    fn a_dockerfile_outside_the_context_gets_a_name_of_its_own() {
        let context = archive(&[("app", None), ("app/main.py", Some("print()"))]);
        let dockerfile = archive(&[("Dockerfile.app", Some("FROM y"))]);
        let paths = BuildPaths::new("app", Some("docker/Dockerfile.app")).unwrap();
        assert_eq!(paths.dockerfile_in_context, None);
        let prepared = prepare_context(ContextSources {
            context,
            outside_dockerfile: Some(dockerfile),
            paths,
        })
        .unwrap();
        assert_eq!(prepared.dockerfile, ".gantry.Dockerfile");
        assert_eq!(
            listing(&prepared.archive),
            [
                "main.py=print()",
                ".dockerignore=.dockerignore|.gantry.Dockerfile",
                ".gantry.Dockerfile=FROM y",
            ]
        );
    }

    #[test]
    fn missing_dockerfile_and_file_context() {
        let context = archive(&[("app", None), ("app/main.py", Some("print()"))]);
        let err = prepare_context(ContextSources {
            context,
            outside_dockerfile: None,
            paths: BuildPaths::new("app/", None).unwrap(),
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Dockerfile 'app/Dockerfile' does not exist in the workspace"
        );

        let context = archive(&[("main.py", Some("print()"))]);
        let err = prepare_context(ContextSources {
            context,
            outside_dockerfile: None,
            paths: BuildPaths::new("main.py", None).unwrap(),
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "could not read the build context: build context 'main.py' is a file, not a directory"
        );
    }

    #[test]
    fn paths() {
        let check = |context: &str, dockerfile: Option<&str>, expected: &str| {
            let actual = match BuildPaths::new(context, dockerfile) {
                Ok(paths) => format!(
                    "context={:?} dockerfile={:?} in_context={:?}",
                    paths.context, paths.dockerfile, paths.dockerfile_in_context
                ),
                Err(err) => err.to_string(),
            };
            assert_eq!(actual, expected);
        };
        check(
            ".",
            None,
            r#"context="" dockerfile="Dockerfile" in_context=Some("Dockerfile")"#,
        );
        check(
            "./backend/",
            Some("backend//Dockerfile"),
            r#"context="backend" dockerfile="backend/Dockerfile" in_context=Some("Dockerfile")"#,
        );
        check(
            "backend",
            Some("backend-extra/Dockerfile"),
            r#"context="backend" dockerfile="backend-extra/Dockerfile" in_context=None"#,
        );
        check(
            "../elsewhere",
            None,
            "build context '../elsewhere' leaves the workspace ('..' is not allowed)",
        );
        check(
            "/workspace",
            None,
            "build context '/workspace' is absolute; write it relative to the workspace root",
        );
    }

    #[test]
    fn references_and_tags() {
        assert_eq!(
            references("127.0.0.1:5000/pet/app", &["1.0".into(), "latest".into()]).unwrap(),
            [
                "127.0.0.1:5000/pet/app:1.0",
                "127.0.0.1:5000/pet/app:latest"
            ]
        );
        assert_eq!(references("app", &[]).unwrap(), ["app:latest"]);
        assert_eq!(
            references("app", &["feature/x".into()])
                .unwrap_err()
                .to_string(),
            "image build failed: invalid tag 'feature/x': a tag is up to 128 letters, digits, \
             '_', '.' and '-', not starting with '.' or '-'"
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/pet/app:1"),
            ("127.0.0.1:5000/pet/app", "1")
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/pet/app"),
            ("127.0.0.1:5000/pet/app", "latest")
        );
    }

    #[test]
    fn only_the_cache_lookup_race_is_tried_again() {
        assert!(lost_cached_image(
            r#"unable to find image "sha256:92c514c6d2caa23c8301561198eef5637bfb3d24ce7550cfab99ec9015a61b34""#
        ));
        // The Dockerfile's own faults fail the build at once.
        assert!(!lost_cached_image(
            "pull access denied for nosuch/image, repository does not exist"
        ));
        assert!(!lost_cached_image(
            r#"unable to find image "local/nosuch:latest" locally"#
        ));
        assert!(!lost_cached_image(
            "The command '/bin/sh -c exit 3' returned a non-zero code: 3"
        ));
    }

    #[test]
    fn steps_are_tracked_across_messages() {
        let mut steps = StepTracker::default();
        steps.feed("Step 1/2 : FROM local/busybox");
        steps.feed("\n ---> 82b52a7d50c8\nStep 2/2 : RUN pytest");
        assert_eq!(steps.current().as_deref(), Some("2/2 'RUN pytest'"));
        steps.feed(&format!("\nStep 3/3 : RUN {}\n", "x".repeat(100)));
        let step = steps.current().unwrap();
        assert!(step.ends_with("xx…'"), "{step}");
        assert_eq!(step.chars().count(), "3/3 ''".len() + STEP_TEXT_LIMIT);
    }
}
