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
    /// Code a server compiled for one device engine (a package variant,
    /// issue 13): outside the signed manifest, checked by the device.
    pub precompiled: Vec<PrecompiledReport>,
}

/// One component's precompiled code in a package variant.
#[derive(Debug, Serialize)]
pub struct PrecompiledReport {
    /// Component id (from the manifest).
    pub component: String,
    /// Engine compatibility hash the code was built for (`.engine`).
    pub engine: Option<String>,
    /// Size of the code (`.cwasm`), bytes.
    pub size: u64,
    /// Fingerprint of the key the `.sig` names (the device checks it
    /// against its `native-code-keys`), or why it cannot be read.
    pub signed_by: String,
}

/// Status of a `precompiled/` entry in the file list: not a problem.
const PRECOMPILED_STATUS: &str = "precompiled code (see below)";
/// Status of a `precompiled/` entry a device skips (bad name, over its cap).
const PRECOMPILED_SKIPPED: &str = "precompiled entry a device ignores";

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
    /// LwM2M object ids the component may serve (issue 14).
    pub objects: Vec<u16>,
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
    // Unpack to a scratch dir to read the components (digests re-checked)
    // and the precompiled code of a variant.
    let scratch = tempfile::tempdir()?;
    let code_dir = tempfile::tempdir()?;
    let verified = wasmdm_package::unpack_with_precompiled(
        std::fs::File::open(path)?,
        scratch.path(),
        Some(code_dir.path()),
        &limits,
        &[],
    );
    let kept: &[String] = verified.as_ref().map_or(&[], |v| v.precompiled.as_slice());
    let mut files: Vec<FileReport> = inspection
        .entries
        .iter()
        .map(|e| FileReport {
            path: e.path.clone(),
            size: e.size,
            status: match &e.status {
                EntryStatus::Ok => "ok".into(),
                EntryStatus::DigestMismatch { .. } => "digest mismatch".into(),
                EntryStatus::Unlisted => match precompiled_name(&e.path) {
                    Some(name) if kept.iter().any(|k| k == name) => PRECOMPILED_STATUS.into(),
                    Some(_) => PRECOMPILED_SKIPPED.into(),
                    None => "not listed in the manifest".into(),
                },
                other => format!("{other:?}"),
            },
        })
        .collect();
    files.extend(inspection.missing.iter().map(|p| FileReport {
        path: p.clone(),
        size: 0,
        status: "missing".into(),
    }));

    let precompiled = manifest
        .components
        .iter()
        .filter_map(|c| precompiled_report(code_dir.path(), kept, &c.id, &c.sha256.to_hex()))
        .collect();
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
            objects: c.sandbox.objects.clone(),
            imports: interface.imports,
            exports: interface.exports,
            problem,
        });
    }
    let runnable = verified.is_ok()
        && files
            .iter()
            .all(|f| ["ok", PRECOMPILED_STATUS, PRECOMPILED_SKIPPED].contains(&f.status.as_str()))
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
        precompiled,
    })
}

/// The name after `precompiled/` of an archive path in that directory.
fn precompiled_name(path: &str) -> Option<&str> {
    path.trim_start_matches("./")
        .strip_prefix(wasmdm_package::PRECOMPILED_DIR)?
        .strip_prefix('/')
}

/// What the variant holds for component `id` (digest `sha`), if any code.
fn precompiled_report(
    dir: &Path,
    kept: &[String],
    id: &str,
    sha: &str,
) -> Option<PrecompiledReport> {
    let code = format!("{sha}.cwasm");
    if !kept.contains(&code) {
        return None;
    }
    let size = std::fs::metadata(dir.join(&code)).map_or(0, |m| m.len());
    let engine = std::fs::read_to_string(dir.join(format!("{sha}.engine")))
        .ok()
        .map(|t| t.trim().to_string());
    let signed_by = match std::fs::read(dir.join(format!("{sha}.sig"))) {
        Err(_) => "no signature (a device refuses the code)".into(),
        Ok(bytes) => match wasmdm_package::signing::SignatureFile::parse(&bytes) {
            Ok(sig) => wasmdm_package::signing::fingerprint(&sig.key),
            Err(e) => format!("malformed signature (a device refuses the code): {e}"),
        },
    };
    Some(PrecompiledReport {
        component: id.to_string(),
        engine,
        size,
        signed_by,
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
            if !c.objects.is_empty() {
                let ids: Vec<String> = c.objects.iter().map(u16::to_string).collect();
                writeln!(
                    f,
                    "  objects {} (LwM2M objects it may serve)",
                    ids.join(", ")
                )?;
            }
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
        for p in &self.precompiled {
            writeln!(
                f,
                "precompiled {}: engine {}, {} bytes, signed by {} (the device checks the key and its engine hash)",
                escape(&p.component),
                escape(p.engine.as_deref().unwrap_or("(no .engine entry)")),
                p.size,
                escape(&p.signed_by)
            )?;
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
