//! The server's generic operations against an independent LwM2M client:
//! the client of the npm package `lwm2m-node-lib` (see tests/peers/).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

use common::{TestServer, blocking, eventually};

struct NodeClient {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<Value>,
}

impl NodeClient {
    fn spawn(server_port: u16, ep: &str) -> Option<NodeClient> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/lwm2m-client.js");
        let modules = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/peers/node_modules/lwm2m-node-lib"
        );
        if !std::path::Path::new(modules).exists() {
            eprintln!("skipping: {modules} missing (run npm ci in tests/peers)");
            return None;
        }
        let mut child = Command::new("node")
            .args([script, &server_port.to_string(), ep, "0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let stdout = child.stdout.take()?;
        let stdin = child.stdin.take()?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        Some(NodeClient {
            child,
            stdin,
            lines,
        })
    }

    fn expect(&self, event: &str) -> Value {
        loop {
            let v = self
                .lines
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no {event} event"));
            if v["event"] == event {
                return v;
            }
        }
    }

    fn send(&mut self, cmd: Value) {
        writeln!(self.stdin, "{cmd}").unwrap();
    }
}

impl Drop for NodeClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_client_register_read_write_execute_observe_deregister() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let Some(mut node) = NodeClient::spawn(server.bound.coap.port(), "node-1") else {
        return;
    };
    // Blocking waits on the node's output are fine: the server runs on other workers.
    let reg = node.expect("registered");
    assert!(reg["location"].is_string(), "{reg}");

    let c = server.client();
    let c2 = c.clone();
    let dev = eventually(Duration::from_secs(5), move || {
        c2.get("/api/devices/node-1").ok()
    })
    .await
    .unwrap();
    assert_eq!(dev["online"], true);
    assert_eq!(dev["registration"]["version"], "1.0");
    assert!(
        dev["registration"]["objects"]["objects"]["1000"].is_object(),
        "{dev}"
    );

    // Read a single resource (text/plain).
    let cc = c.clone();
    let r = blocking(move || {
        cc.dm(
            "node-1",
            &json!({"op": "read", "path": "/3/0/0", "accept": 0}),
        )
    })
    .await
    .unwrap();
    assert_eq!(r["code"], "2.05", "{r}");
    assert_eq!(r["values"]["/3/0/0"], "wasmdm-test");

    // Write then read back.
    let cc = c.clone();
    let w = blocking(move || {
        cc.dm("node-1", &json!({"op": "write", "path": "/1000/0/1", "replace": true, "format": 0, "payload": hex::encode("77")}))
    })
    .await
    .unwrap();
    assert_eq!(w["code"], "2.04", "{w}");
    let ev = node.expect("write");
    assert_eq!(
        (ev["path"].as_str(), ev["value"].as_str()),
        (Some("/1000/0/1"), Some("77"))
    );
    let cc = c.clone();
    let r = blocking(move || {
        cc.dm(
            "node-1",
            &json!({"op": "read", "path": "/1000/0/1", "accept": 0}),
        )
    })
    .await
    .unwrap();
    assert_eq!(r["values"]["/1000/0/1"], "77", "{r}");

    // Execute with arguments.
    let cc = c.clone();
    let x = blocking(move || {
        cc.dm(
            "node-1",
            &json!({"op": "execute", "path": "/1000/0/3", "args": "1"}),
        )
    })
    .await
    .unwrap();
    assert_eq!(x["code"], "2.04", "{x}");
    let ev = node.expect("execute");
    assert_eq!(ev["path"], "/1000/0/3");

    // Discover.
    let cc = c.clone();
    let d = blocking(move || cc.dm("node-1", &json!({"op": "discover", "path": "/3/0"})))
        .await
        .unwrap();
    assert_eq!(d["code"], "2.05", "{d}");
    assert!(d["links"].as_array().is_some_and(|l| !l.is_empty()), "{d}");

    // Observe, then change the value on the client: the notification arrives.
    let cc = c.clone();
    let o = blocking(move || {
        cc.dm(
            "node-1",
            &json!({"op": "observe", "path": "/1000/0/2", "accept": 0}),
        )
    })
    .await
    .unwrap();
    assert_eq!(o["code"], "2.05", "{o}");
    node.send(json!({"op": "set", "path": "/1000/0/2", "value": "busy"}));
    let cc = c.clone();
    let seen = eventually(Duration::from_secs(10), move || {
        let v = cc.get("/api/devices/node-1/observed").ok()?;
        (v["/1000/0/2"] == "busy").then_some(v)
    })
    .await;
    assert!(seen.is_some(), "notification of /1000/0/2 = busy not seen");

    // Bad requests are refused before anything is sent.
    let cc = c.clone();
    let e = blocking(move || cc.dm("node-1", &json!({"op": "execute", "path": "/1000/0"})))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("400"), "{e}");

    // De-register: the device goes offline and DM is refused with 409.
    node.send(json!({"op": "deregister"}));
    node.expect("deregistered");
    let cc = c.clone();
    let off = eventually(Duration::from_secs(5), move || {
        let v = cc.get("/api/devices/node-1").ok()?;
        (v["online"] == false).then_some(v)
    })
    .await;
    assert!(off.is_some());
    let cc = c.clone();
    let e = blocking(move || {
        cc.dm(
            "node-1",
            &json!({"op": "read", "path": "/3/0/0", "accept": null}),
        )
    })
    .await
    .unwrap_err();
    assert!(e.to_string().contains("409"), "{e}");
    drop(node);
    server.shutdown().await;
}
