//! `wasmdm new | pack | inspect | keygen`: starting, building, examining and
//! signing packages.

use anyhow::{Context, bail};
use std::path::PathBuf;
use std::process::ExitCode;
use wasmdm_package::display::{escape, escape_json};
use wasmdm_package::{PackProgress, signing};

#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// Directory to create (must not exist, or be empty).
    pub dir: PathBuf,
    /// Package and crate name (default: the directory's name).
    #[arg(long)]
    pub name: Option<String>,
    /// What to start from.
    #[arg(long, value_enum, default_value = "app")]
    pub kind: wasmdm::scaffold::Kind,
}

#[derive(Debug, clap::Args)]
pub struct PackArgs {
    /// Directory with manifest.toml and the files it lists (digests are filled in).
    pub dir: PathBuf,
    /// Output file (default: <name>-<version>.wdm in the current directory).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Sign the manifest with this secret key file (from `wasmdm keygen`).
    #[arg(long, value_name = "SECRET_KEY")]
    pub sign: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The package file.
    pub package: PathBuf,
    /// Also check the signature against this public key file (repeatable).
    #[arg(long = "trust", value_name = "PUBLIC_KEY")]
    pub trusted_keys: Vec<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Base path: writes <base>.secret and <base>.pub.
    #[arg(default_value = "wasmdm-signing")]
    pub base: PathBuf,
}

pub fn new(args: NewArgs) -> anyhow::Result<ExitCode> {
    let name = match args.name {
        Some(n) => n,
        None => args
            .dir
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .context("name the package with --name")?,
    };
    let written = wasmdm::scaffold::create(&args.dir, &name, args.kind)?;
    let dir = args.dir.display();
    println!("created {name} in {dir}:");
    for f in written {
        println!("  {}", f.display());
    }
    println!(
        "next: cd {dir} && cargo build --release && wasmdm pack . && wasmdm run {name}-0.1.0.wdm"
    );
    Ok(ExitCode::SUCCESS)
}

pub fn pack(args: PackArgs) -> anyhow::Result<ExitCode> {
    let key = args
        .sign
        .as_deref()
        .map(signing::load_secret_key)
        .transpose()
        .context("cannot load the signing key")?;
    // Write to a temp file next to the output, rename when complete: a failed
    // pack never leaves a truncated package behind.
    let tmp = tempfile::NamedTempFile::new_in(".")
        .context("cannot create a file in the current directory")?;
    let mut progress = |p: PackProgress| match p {
        PackProgress::Hashed { path, bytes } => {
            eprintln!("  hashed {} ({bytes} bytes)", escape(&path))
        }
        PackProgress::Added { path, bytes, .. } => {
            eprintln!("  added  {} ({bytes} bytes)", escape(&path))
        }
        _ => {}
    };
    let manifest = wasmdm_package::pack(&args.dir, tmp.as_file(), key.as_ref(), &mut progress)
        .with_context(|| format!("cannot pack {}", args.dir.display()))?;
    let output = args.output.unwrap_or_else(|| {
        PathBuf::from(format!(
            "{}-{}.wdm",
            manifest.package.name, manifest.package.version
        ))
    });
    warn_unrunnable(&args.dir, &manifest);
    tmp.as_file().sync_all()?;
    tmp.persist(&output)
        .with_context(|| format!("cannot write {}", output.display()))?;
    println!(
        "packed {} {} ({} component(s){}) -> {}",
        escape(&manifest.package.name),
        escape(&manifest.package.version.to_string()),
        manifest.components.len(),
        if key.is_some() { ", signed" } else { "" },
        output.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Warns (the package is still written: it may target another host) about
/// each component this host could not run: a core module, imports its world
/// lacks (all of them), no `wasi:cli/run` export. No compile, so it is quick.
fn warn_unrunnable(dir: &std::path::Path, manifest: &wasmdm_package::Manifest) {
    for c in &manifest.components {
        let path = dir.join(&c.file);
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let world = wasmdm::runtime::World::from(c.world);
        if let Err(e) = wasmdm::runtime::check_component(&c.id, &bytes, world) {
            let reason = match e {
                wasmdm::runtime::RuntimeError::InstallFailed { reason, .. }
                | wasmdm::runtime::RuntimeError::NotAComponent { reason, .. } => reason,
                other => other.to_string(),
            };
            eprintln!(
                "warning: component {} cannot run on this host: {}",
                escape(&c.id),
                escape(&reason)
            );
        }
    }
}

pub async fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let trusted = args
        .trusted_keys
        .iter()
        .map(|p| {
            signing::load_public_key(p).with_context(|| format!("cannot load {}", p.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let report = wasmdm::inspect::inspect_package(&args.package, &trusted)
        .await
        .with_context(|| format!("cannot inspect {}", args.package.display()))?;
    if args.json {
        println!("{}", escape_json(&serde_json::to_string_pretty(&report)?));
    } else {
        print!("{report}");
    }
    Ok(if report.runnable {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

pub fn keygen(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    let secret_path = args.base.with_extension("secret");
    let public_path = args.base.with_extension("pub");
    if secret_path.exists() || public_path.exists() {
        bail!(
            "{} or {} already exists; not overwriting a key",
            secret_path.display(),
            public_path.display()
        );
    }
    let (secret, public) = wasmdm_package::keygen().context("cannot generate a key")?;
    signing::save_secret_key(&secret_path, &secret)?;
    signing::save_public_key(&public_path, &public)?;
    println!("secret key: {} (keep it private)", secret_path.display());
    println!(
        "public key: {} (fingerprint {})",
        public_path.display(),
        signing::fingerprint(&public)
    );
    Ok(ExitCode::SUCCESS)
}
