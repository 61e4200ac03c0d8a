//! `wasmdm inspect`: what a package holds and whether this host can run it,
//! without installing anything.

use crate::runtime::{ComponentInterface, RuntimeError, World};
use serde::Serialize;
use std::fmt;
use std::path::Path;
use wasmdm_package::display::escape;
use wasmdm_package::{EntryStatus, SignatureStatus, VerifyingKey};

/// The report `wasmdm inspect` prints.
#[derive(Debug, Serialize)]
pub struct PackageReport {
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    /// "unsigned", "signed by <fingerprint>", "signature INVALID", ...
    pub signature: String,
    pub files: Vec<FileReport>,
    pub components: Vec<ComponentReport>,
    /// Every digest matches and every component can run on this host.
    pub runnable: bool,
    /// What this host compiles components to (native code, or Pulley
    /// bytecode on 32-bit ARM).
    pub code_target: String,
}

#[derive(Debug, Serialize)]
pub struct FileReport {
    pub path: String,
    pub size: u64,
    /// "ok", "digest mismatch", "not listed", "missing", "refused: ..."
    pub status: String,
}

#[derive(Debug, Serialize)]
pub struct ComponentReport {
    pub id: String,
    pub version: String,
    pub file: String,
    pub sha256: String,
    pub world: String,
    pub memory_bytes: u64,
    pub network: String,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// `None` when it can run here, else why not.
    pub problem: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot read the package: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Package(#[from] wasmdm_package::PackageError),
}

/// Reads `path` fully into a scratch directory (hostile-input safe, like a
/// delivery) and checks each component against this host's worlds.
pub async fn inspect_package(
    path: &Path,
    trusted: &[VerifyingKey],
) -> Result<PackageReport, InspectError> {
    let limits = wasmdm_package::Limits::default();
    let inspection = wasmdm_package::read_manifest(std::fs::File::open(path)?, &limits)?;
    let manifest = &inspection.manifest;
    let signature = match &inspection.signature {
        SignatureStatus::Unsigned => "unsigned".to_string(),
        SignatureStatus::Malformed(_) => "signature file MALFORMED".to_string(),
        SignatureStatus::Signed { fingerprint, valid } => {
            let trusted_ok = !trusted.is_empty()
                && inspection.signature_bytes.as_deref().is_some_and(|sig| {
                    wasmdm_package::signing::verify_manifest(
                        sig,
                        &inspection.manifest_bytes,
                        trusted,
                    )
                    .is_ok()
                });
            match (valid, trusted.is_empty(), trusted_ok) {
                (false, _, _) => format!("signature by {fingerprint} INVALID"),
                (true, true, _) => format!("signed by {fingerprint}"),
                (true, false, true) => format!("signed by {fingerprint} (trusted)"),
                (true, false, false) => format!("signed by {fingerprint} (NOT a trusted key)"),
            }
        }
    };
    let mut files: Vec<FileReport> = inspection
        .entries
        .iter()
        .map(|e| FileReport {
            path: e.path.clone(),
            size: e.size,
            status: match &e.status {
                EntryStatus::Ok => "ok".into(),
                EntryStatus::DigestMismatch { .. } => "digest mismatch".into(),
                EntryStatus::Unlisted => "not listed in the manifest".into(),
                other => format!("{other:?}"),
            },
        })
        .collect();
    files.extend(inspection.missing.iter().map(|p| FileReport {
        path: p.clone(),
        size: 0,
        status: "missing".into(),
    }));

    // Unpack to a scratch dir to read the components (digests re-checked).
    let scratch = tempfile::tempdir()?;
    let verified = wasmdm_package::unpack(std::fs::File::open(path)?, scratch.path(), &limits, &[]);
    let mut components = Vec::new();
    for c in &manifest.components {
        let world = World::from(c.world);
        let (interface, problem) = match &verified {
            Ok(_) => match std::fs::read(scratch.path().join(&c.file)) {
                Ok(bytes) => match crate::runtime::describe_component(&c.id, &bytes, world).await {
                    Ok((interface, check)) => {
                        (interface, check.err().map(|e: RuntimeError| e.to_string()))
                    }
                    Err(e) => (ComponentInterface::default(), Some(e.to_string())),
                },
                Err(e) => (
                    ComponentInterface::default(),
                    Some(format!("cannot read {}: {e}", c.file)),
                ),
            },
            Err(e) => (
                ComponentInterface::default(),
                Some(format!("package refused: {e}")),
            ),
        };
        components.push(ComponentReport {
            id: c.id.clone(),
            version: c.version.to_string(),
            file: c.file.to_string(),
            sha256: c.sha256.to_hex(),
            world: format!("{world}"),
            memory_bytes: c.sandbox.memory_bytes,
            network: if c.sandbox.network.is_none() {
                "none".into()
            } else {
                c.sandbox
                    .network
                    .allow
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            imports: interface.imports,
            exports: interface.exports,
            problem,
        });
    }
    let runnable = verified.is_ok()
        && files.iter().all(|f| f.status == "ok")
        && components.iter().all(|c| c.problem.is_none())
        && !signature.contains("INVALID");
    Ok(PackageReport {
        name: manifest.package.name.clone(),
        version: manifest.package.version.to_string(),
        description: manifest.package.description.clone(),
        signature,
        files,
        components,
        runnable,
        code_target: crate::runtime::CodeTarget::host().describe(),
    })
}

/// Every text field comes from the package (or from errors quoting it), so each is printed
/// through [`escape`]: a hostile package must not drive the terminal or forge a line.
impl fmt::Display for PackageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "package   {} {}",
            escape(&self.name),
            escape(&self.version)
        )?;
        if let Some(d) = &self.description {
            writeln!(f, "about     {}", escape(d))?;
        }
        writeln!(f, "signature {}", escape(&self.signature))?;
        writeln!(f, "files")?;
        for file in &self.files {
            writeln!(
                f,
                "  {:<32} {:>10} bytes  {}",
                escape(&file.path),
                file.size,
                escape(&file.status)
            )?;
        }
        for c in &self.components {
            writeln!(
                f,
                "component {} {} ({})",
                escape(&c.id),
                escape(&c.version),
                escape(&c.file)
            )?;
            writeln!(f, "  sha256  {}", escape(&c.sha256))?;
            writeln!(f, "  world   {}", escape(&c.world))?;
            writeln!(
                f,
                "  memory  {} bytes, network {}",
                c.memory_bytes,
                escape(&c.network)
            )?;
            for i in &c.imports {
                writeln!(f, "  import  {}", escape(i))?;
            }
            for e in &c.exports {
                writeln!(f, "  export  {}", escape(e))?;
            }
            match &c.problem {
                None => writeln!(f, "  runs on this host: yes")?,
                Some(p) => writeln!(f, "  runs on this host: NO: {}", escape(p))?,
            }
        }
        writeln!(f, "host code {}", self.code_target)?;
        writeln!(
            f,
            "verdict   {}",
            if self.runnable {
                "can run on this host"
            } else {
                "can NOT run on this host"
            }
        )
    }
}
