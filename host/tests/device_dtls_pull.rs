//! `wasmdm device` over DTLS end to end: a real device process registers
//! with an in-process `wasmdm_server` over coaps with a PSK (NoSec off),
//! and pulls a package from an independent DTLS file server, libcoap's
//! `coap-server-openssl` (Debian `libcoap3-bin` 4.3.1, OpenSSL 3), given as
//! a `coaps://` Package URI written to /9/0/3 through the server's API.
//!
//! The device pulls from a `coaps://` file server with its server account's
//! credentials, so libcoap is started with the same PSK (`-k KEY`, the key
//! as text; with no `-i` file it takes any identity with that key).
//!
//! libcoap's example server has no "serve this directory" option in 4.3.1
//! (`-d N` allows N resources created by PUT, it is not a directory): the
//! package is PUT to it first (Block1, over plain CoAP on its `-p` port)
//! and then served from memory with Block2, ETag and Size2 on the DTLS port
//! (`-p` + 1), which is all the pull needs.
//!
//! The device offers TLS_PSK_WITH_AES_128_CCM_8 (0xC0A8, LwM2M's mandatory
//! suite) first and libcoap's OpenSSL server takes the client's order; the
//! test checks the suite in the device's log. The security notes say
//! OpenSSL 3 needs `@SECLEVEL=0` for CCM_8: this one (3.0.19) takes CCM_8
//! without it (a CCM_8-only GnuTLS client gets it too), so the
//! `OPENSSL_CONF` file with `CipherString = DEFAULT@SECLEVEL=0` given to
//! libcoap is only there for builds that do need it.
//!
//! The failure path (a file server with another key: Update Result 52,
//! back to INITIAL) takes ~30 s: OpenSSL drops the Finished it cannot
//! decrypt without an alert, so the device's handshake fails at its own
//! deadline, and the pull with it; the next pull from the same address,
//! with the right key, works.
//!
//! Each test is skipped (with a note on stderr) when `coap-server-openssl`
//! or `coap-client-notls` is missing.

mod device_support;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use device_support::*;
use serde_json::{Value as Json, json};
use tokio::sync::oneshot;
use wasmdm_server::ctl::Client;
use wasmdm_server::{Bound, ServerConfig};

const KEY: &str = "wasmdm-pull-key-0123";
const OTHER_KEY: &str = "wasmdm-pull-key-9876";
const T: Duration = Duration::from_secs(20);

/// `name` on the PATH, or None with a note that the test is skipped.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        eprintln!("skipping: {name} not found (Debian package libcoap3-bin)");
    }
    found
}

/// The wasmdm server in process: coaps on, NoSec off.
struct Server {
    bound: Bound,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), wasmdm_server::ServerError>>,
}

impl Server {
    async fn start(dir: &Path) -> Server {
        let mut config = ServerConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            dir.to_path_buf(),
        );
        config.coaps_addr = Some("127.0.0.1:0".parse().unwrap());
        config.allow_nosec = false;
        let (stop, rx) = oneshot::channel::<()>();
        let (btx, brx) = oneshot::channel();
        let task = tokio::spawn(wasmdm_server::serve_with(
            config,
            async move {
                let _ = rx.await;
            },
            move |b| {
                let _ = btx.send(b);
            },
        ));
        let bound = brx.await.expect("the server did not start");
        Server {
            bound,
            stop: Some(stop),
            task,
        }
    }

    async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.task.await;
    }
}

/// Two consecutive ports free for UDP and TCP: libcoap's server takes
/// `-p P` for coap (UDP and TCP) and P+1 for coaps and coaps+tcp.
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let p = free_udp_port();
        let Some(q) = p.checked_add(1) else { continue };
        let free = [p, q].iter().all(|&port| {
            UdpSocket::bind(("127.0.0.1", port)).is_ok()
                && TcpListener::bind(("127.0.0.1", port)).is_ok()
        });
        if free {
            return p;
        }
    }
    panic!("no two consecutive free ports");
}

/// `coap-server-openssl` with a PSK, holding `package` at `/pkg`.
struct LibcoapServer {
    child: Child,
    /// Its coaps port (`-p` + 1).
    coaps: u16,
    log: PathBuf,
}

impl LibcoapServer {
    fn start(
        server_bin: &Path,
        client_bin: &Path,
        dir: &Path,
        key: &str,
        package: &[u8],
    ) -> LibcoapServer {
        Self::start_on(server_bin, client_bin, dir, key, package, free_port_pair())
    }

    /// As [`LibcoapServer::start`], on `port` (coap) and `port` + 1 (coaps).
    fn start_on(
        server_bin: &Path,
        client_bin: &Path,
        dir: &Path,
        key: &str,
        package: &[u8],
        port: u16,
    ) -> LibcoapServer {
        let conf = dir.join("openssl-seclevel0.cnf");
        std::fs::write(
            &conf,
            "openssl_conf = openssl_init\n[openssl_init]\nssl_conf = ssl_sect\n\
             [ssl_sect]\nsystem_default = system_default_sect\n\
             [system_default_sect]\nCipherString = DEFAULT@SECLEVEL=0\n",
        )
        .unwrap();
        let log = dir.join("libcoap-server.log");
        let child = Command::new(server_bin)
            .args(["-A", "127.0.0.1", "-p", &port.to_string(), "-k", key])
            .args(["-d", "4", "-v", "6"])
            .env("OPENSSL_CONF", &conf)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = LibcoapServer {
            child,
            coaps: port + 1,
            log,
        };
        // Upload over plain CoAP (Block1); retried until the server listens.
        let file = dir.join("package.bin");
        std::fs::write(&file, package).unwrap();
        let uri = format!("coap://127.0.0.1:{port}/pkg");
        let deadline = Instant::now() + T;
        loop {
            let out = Command::new(client_bin)
                .args(["-m", "put", "-b", "1024", "-B", "5", "-v", "6", "-f"])
                .arg(&file)
                .arg(&uri)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            if text.contains("c:2.01") || text.contains("c:2.04") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "upload to libcoap failed: {text}\nserver log: {}",
                std::fs::read_to_string(&server.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }

    fn uri(&self) -> String {
        format!("coaps://127.0.0.1:{}/pkg", self.coaps)
    }
}

impl Drop for LibcoapServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `wasmdm device` with a DTLS-PSK account with `coaps`.
fn start_device(ep: &str, coaps: SocketAddr, data_dir: &Path, identity: &str) -> DeviceProcess {
    let key_file = data_dir.with_extension("psk");
    // Not hex, so the device takes the file's bytes as the key.
    std::fs::write(&key_file, KEY).unwrap();
    let log = data_dir.with_extension("log");
    let log_file = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_wasmdm"))
        .args(["device", "--endpoint", ep, "--bind", "127.0.0.1:0"])
        .args(["--lifetime", "60", "--server"])
        .arg(format!("coaps://{coaps}"))
        .args(["--psk-identity", identity, "--psk-key-file"])
        .arg(&key_file)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("WASMDM_PSK_KEY")
        .env("RUST_LOG", "info")
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    DeviceProcess {
        child,
        endpoint: ep.into(),
        data_dir: data_dir.into(),
        log,
    }
}

fn dm(api: &Client, ep: &str, op: Json) -> Json {
    let r = api
        .dm(ep, &op)
        .unwrap_or_else(|e| panic!("{op} on {ep}: {e}"));
    assert_eq!(r["success"], true, "{op} on {ep}: {r:#}");
    r
}

fn read(api: &Client, ep: &str, path: &str) -> Json {
    dm(api, ep, json!({"op": "read", "path": path, "accept": null}))["values"][path].clone()
}

/// Polls `path` until it reads `want` (as an integer).
fn wait_int(api: &Client, device: &DeviceProcess, path: &str, want: i64) {
    wait_int_for(api, device, path, want, T)
}

fn wait_int_for(api: &Client, device: &DeviceProcess, path: &str, want: i64, timeout: Duration) {
    let ep = device.endpoint.as_str();
    let deadline = Instant::now() + timeout;
    loop {
        let got = read(api, ep, path);
        if got.as_i64() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} stayed {got}, wanted {want}; /9/0/9 = {}\n{}",
            read(api, ep, "/9/0/9"),
            strip_ansi(&device.log_text())
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Stores the device's PSK, starts it, waits until it registered over DTLS.
fn registered_device(api: &Client, coaps: SocketAddr, dir: &Path, ep: &str) -> DeviceProcess {
    let identity = format!("{ep}-id");
    api.put(
        &format!("/api/security/{ep}"),
        &json!({"mode": "psk", "identity": identity, "key": hex::encode(KEY)}),
    )
    .unwrap();
    let device = start_device(ep, coaps, &dir.join("device"), &identity);
    wait_until(T, "the device registers over DTLS", || {
        api.get(&format!("/api/devices/{ep}"))
            .is_ok_and(|d| d["online"] == true)
    });
    assert_eq!(read(api, ep, "/9/0/7"), 0, "a fresh device is INITIAL");
    device
}

fn write_package_uri(api: &Client, ep: &str, uri: &str) {
    let r = dm(
        api,
        ep,
        json!({"op": "write", "path": "/9/0/3", "replace": true, "format": 0,
               "payload": hex::encode(uri)}),
    );
    assert_eq!(r["code"], "2.04", "{r:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_over_coaps_from_libcoap_installs() {
    let (Some(libcoap), Some(put)) = (tool("coap-server-openssl"), tool("coap-client-notls"))
    else {
        return;
    };
    let dir = LogOnPanic(tempfile::tempdir().unwrap());
    let server = Server::start(&dir.0.path().join("server")).await;
    let api = server.bound.client();
    let coaps = server.bound.coaps.unwrap();
    let path = dir.0.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let package = pack_example("counter", "1.2.3");
        let files = LibcoapServer::start(&libcoap, &put, &path, KEY, &package);
        let ep = "dtls-pull-1";
        let device = registered_device(&api, coaps, &path, ep);
        let log = || strip_ansi(&device.log_text());
        // The registration went over DTLS with CCM_8 (our device offers it first).
        assert!(
            log().contains(&format!(
                "DTLS session established peer={coaps} cipher_suite=0xC0A8"
            )),
            "{}",
            log()
        );

        write_package_uri(&api, ep, &files.uri());
        // Pulled, verified: DELIVERED with Update Result 0 (SwMgmt §5.1.2.3).
        wait_int(&api, &device, "/9/0/7", 3);
        assert_eq!(read(&api, ep, "/9/0/9"), 0);
        assert_eq!(read(&api, ep, "/9/0/0"), "counter");
        assert_eq!(read(&api, ep, "/9/0/1"), "1.2.3");
        // libcoap took the device's first suite.
        let file_server = format!("127.0.0.1:{}", files.coaps);
        assert!(
            log().contains(&format!(
                "DTLS session established peer={file_server} cipher_suite=0xC0A8"
            )),
            "{}",
            log()
        );

        // Install: INSTALLED, Update Result 2.
        dm(
            &api,
            ep,
            json!({"op": "execute", "path": "/9/0/4", "args": null}),
        );
        wait_int(&api, &device, "/9/0/7", 4);
        assert_eq!(read(&api, ep, "/9/0/9"), 2);
        drop(device);
    })
    .await
    .unwrap();
    server.shutdown().await;
}

/// A file server holding another key: OpenSSL silently drops the Finished
/// it cannot decrypt and repeats its own flight, so the device sees no
/// alert. Its handshake fails at the DTLS client's deadline (30 s; rtc-dtls
/// alone would wait forever, see host/proto/tests/dtls_seam.rs), and the
/// pull fails with it: Update Result 52, the state back to INITIAL. Then
/// the file server gets the right key at the same address, and a new pull
/// works (a new handshake after the back-off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_from_a_coaps_server_with_another_key_fails_with_52_then_works() {
    let (Some(libcoap), Some(put)) = (tool("coap-server-openssl"), tool("coap-client-notls"))
    else {
        return;
    };
    let dir = LogOnPanic(tempfile::tempdir().unwrap());
    let server = Server::start(&dir.0.path().join("server")).await;
    let api = server.bound.client();
    let coaps = server.bound.coaps.unwrap();
    let path = dir.0.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let package = pack_example("counter", "1.0.0");
        let files = LibcoapServer::start(&libcoap, &put, &path, OTHER_KEY, &package);
        let ep = "dtls-pull-2";
        let device = registered_device(&api, coaps, &path, ep);
        let started = Instant::now();
        write_package_uri(&api, ep, &files.uri());
        wait_int_for(&api, &device, "/9/0/9", 52, Duration::from_secs(150));
        eprintln!("Update Result 52 after {:?}", started.elapsed());
        assert_eq!(read(&api, ep, "/9/0/7"), 0, "back to INITIAL");

        // The file server gets the right key (same address): the next pull works.
        let port = files.coaps - 1;
        drop(files);
        let files = LibcoapServer::start_on(&libcoap, &put, &path, KEY, &package, port);
        write_package_uri(&api, ep, &files.uri());
        wait_int_for(&api, &device, "/9/0/7", 3, Duration::from_secs(150));
        assert_eq!(read(&api, ep, "/9/0/9"), 0);
        drop(device);
    })
    .await
    .unwrap();
    server.shutdown().await;
}
