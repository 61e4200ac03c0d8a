//! [`Service::prepare`] with a stand-in compiler: grouping by hash, one
//! compile per hash, the cache, and the groups left on the plain file.

use super::*;
use crate::campaign::Campaign;
use sha2::Digest as _;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Returns `hash` as the engine hash, counts compiles.
#[derive(Debug)]
pub(super) struct Fake {
    pub(super) hash: String,
    pub(super) compiles: AtomicUsize,
}

impl Precompiler for Fake {
    fn compile(&self, _: &DeviceEngine, wasm: &[u8]) -> Result<(String, Vec<u8>), String> {
        self.compiles.fetch_add(1, Ordering::SeqCst);
        Ok((self.hash.clone(), [b"code:", wasm].concat()))
    }
    fn sign(&self, _: &SigningKey, c: &str, e: &str, _: &[u8]) -> String {
        format!("sig {c} {e}")
    }
}

pub(super) fn package() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    // Not a real component: the stand-in compiler does not look.
    std::fs::write(dir.path().join("app.wasm"), b"\0asm\x0d\0\x01\0").unwrap();
    std::fs::write(
        dir.path().join("manifest.toml"),
        "manifest-version = 1\n[package]\nname = \"app\"\nversion = \"1.0.0\"\n\
         [[component]]\nid = \"app\"\nfile = \"app.wasm\"\nworld = \"wasi:cli/command\"\n",
    )
    .unwrap();
    let mut out = Vec::new();
    wasmdm_package::pack(dir.path(), &mut out, None, &mut |_| {}).unwrap();
    out
}

pub(super) fn engine(hash: &str, accepts: bool) -> DeviceEngine {
    DeviceEngine {
        runtime_version: "wasmtime 48.0.8".into(),
        target: "x86_64-linux".into(),
        compatibility_hash: hash.into(),
        accepts_precompiled: accepts,
        ..Default::default()
    }
}

#[tokio::test]
async fn groups_by_hash_compiles_once_and_leaves_mismatches_plain() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let file = store.write_blob(&package()).unwrap();
    let devices = [
        ("a", Some(engine("00aa", true))),
        ("b", Some(engine("00aa", true))),
        ("c", Some(engine("00bb", true))),
        ("d", Some(engine("00aa", false))),
        ("e", None),
        (
            "f",
            Some(DeviceEngine {
                max_package_bytes: 16,
                ..engine("00aa", true)
            }),
        ),
    ];
    for (ep, engine) in &devices {
        let rec = DeviceRecord {
            endpoint: ep.to_string(),
            registration: None,
            labels: Vec::new(),
            last_seen: 0,
            engine: engine.clone(),
        };
        store.put(DEVICES, ep, &rec).unwrap();
    }
    let fake = Arc::new(Fake {
        hash: "00aa".into(),
        compiles: AtomicUsize::new(0),
    });
    let (key, _) = wasmdm_package::keygen().unwrap();
    let service = Arc::new(Service::new(fake.clone(), key, dir.path()));
    let spec: CampaignSpec = serde_json::from_value(serde_json::json!({
        "op": "install", "package": "app", "file": file, "delivery": "push",
    }))
    .unwrap();
    let targets: Vec<String> = devices.iter().map(|(ep, _)| ep.to_string()).collect();
    let prepared = service
        .prepare(&store, &spec, &targets, &Default::default(), &|| true)
        .await;
    // a, b and f share a hash: one compile. c's engine hash is not what the
    // compiler built: plain file, with a note saying why. f takes packages
    // of at most 16 bytes (/26500/0/9): plain file, with a note.
    assert_eq!(fake.compiles.load(Ordering::SeqCst), 2);
    let got: Vec<(&str, &str)> = prepared
        .variants
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(got, [("a", "00aa"), ("b", "00aa")]);
    assert_eq!(prepared.notes.len(), 2, "{:?}", prepared.notes);
    let noted = |f: &dyn Fn(&String) -> bool| prepared.notes.iter().any(f);
    assert!(noted(
        &|n| n.contains("00bb") && n.contains("not the device's")
    ));
    assert!(noted(&|n| n.starts_with("f: ") && n.contains("(16 bytes)")));
    let mut c = Campaign::new("c1".into(), None, spec.clone(), targets.clone(), 0);
    apply(&mut c, prepared);
    assert_eq!(c.jobs[0].precompiled.as_deref(), Some("00aa"));
    assert_eq!(c.jobs[4].precompiled, None);

    // The variant: the plain archive plus the three entries, which the
    // package reader puts where the device looks for them.
    let (path, sha) = store.variant(&file, "00aa").unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(sha, hex::encode(sha2::Sha256::digest(&bytes)));
    let (staging, extra) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let v = wasmdm_package::unpack_with_precompiled(
        bytes.as_slice(),
        staging.path(),
        Some(extra.path()),
        &wasmdm_package::Limits::default(),
        &[],
    )
    .unwrap();
    assert_eq!(v.precompiled.len(), 3, "{:?}", v.precompiled);
    let comp = v.manifest.components[0].sha256.to_hex();
    assert_eq!(
        std::fs::read_to_string(extra.path().join(format!("{comp}.engine"))).unwrap(),
        "00aa"
    );

    // Cached: a second campaign compiles nothing; deleting the file
    // deletes its variants.
    let again = service
        .prepare(&store, &spec, &targets, &Default::default(), &|| true)
        .await;
    assert_eq!(again.variants.len(), 2);
    assert_eq!(fake.compiles.load(Ordering::SeqCst), 3, "only c's again");
    store.remove_blob(&file).unwrap();
    assert!(store.variant(&file, "00aa").is_none());
}
