//! `wasmdm ctl bootstrap ...`: the bootstrap API from the command line.

use serde_json::{Value as Json, json};

use crate::ctl::{Client, CtlError};

fn usage() -> CtlError {
    // The lines are in `wasmdm ctl help` (crate::ctl::USAGE).
    let lines: Vec<&str> = crate::ctl::USAGE
        .lines()
        .skip_while(|l| !l.starts_with("  bootstrap"))
        .take_while(|l| l.starts_with("  bootstrap") || l.starts_with("      "))
        .collect();
    CtlError::Usage(format!("wasmdm ctl bootstrap ...\n{}", lines.join("\n")))
}

fn read(path: &str) -> Result<Vec<u8>, CtlError> {
    std::fs::read(path).map_err(|source| CtlError::File {
        path: path.into(),
        source,
    })
}

fn read_json(path: &str) -> Result<Json, CtlError> {
    serde_json::from_slice(&read(path)?)
        .map_err(|e| CtlError::Usage(format!("{path}: not JSON: {e}")))
}

/// Values of `flag` (`--label a --label b`).
fn values<'a>(args: &[&'a str], flag: &str) -> Vec<&'a str> {
    args.windows(2)
        .filter(|w| w.first() == Some(&flag))
        .filter_map(|w| w.get(1).copied())
        .collect()
}

/// The body of `bootstrap set` / `rotate`.
pub fn set_body(rest: &[&str], rotate: bool) -> Result<Json, CtlError> {
    let with_value = [
        "--psk-identity",
        "--psk-key",
        "--psk-key-file",
        "--label",
        "--config",
    ];
    let mut i = 0;
    while let Some(a) = rest.get(i) {
        i += match *a {
            f if with_value.contains(&f) && rest.get(i + 1).is_some() => 2,
            "--x509" | "--nosec" if !rotate => 1,
            other => {
                return Err(CtlError::Usage(format!(
                    "bootstrap: unknown or incomplete argument {other}"
                )));
            }
        };
    }
    let first = |f: &str| values(rest, f).into_iter().next();
    let mut body = json!({});
    let key = match (first("--psk-key"), first("--psk-key-file")) {
        (Some(k), None) => Some(k.trim().to_string()),
        (None, Some(f)) => Some(String::from_utf8_lossy(&read(f)?).trim().to_string()),
        (None, None) => None,
        _ => {
            return Err(CtlError::Usage(
                "--psk-key and --psk-key-file exclude each other".into(),
            ));
        }
    };
    let (x509, nosec) = (rest.contains(&"--x509"), rest.contains(&"--nosec"));
    if [key.is_some(), x509, nosec].iter().filter(|b| **b).count() > 1 {
        return Err(CtlError::Usage(
            "one of --psk-key/--psk-key-file, --x509, --nosec".into(),
        ));
    }
    if rotate && key.is_none() {
        return Err(CtlError::Usage(
            "bootstrap rotate needs --psk-key or --psk-key-file".into(),
        ));
    }
    if let Some(k) = key {
        body["key"] = json!(k);
    }
    if let Some(id) = first("--psk-identity") {
        body["identity"] = json!(id);
    }
    if x509 {
        body["mode"] = json!("x509");
    }
    if nosec {
        body["mode"] = json!("nosec");
    }
    let labels = values(rest, "--label");
    if !labels.is_empty() {
        body["labels"] = json!(labels);
    }
    if let Some(path) = first("--config") {
        body["config"] = read_json(path)?;
    }
    Ok(body)
}

/// Runs `bootstrap <rest>`.
pub fn run(c: &Client, rest: &[&str]) -> Result<Json, CtlError> {
    Ok(match rest {
        ["list"] => c.get("/api/bootstrap/endpoints")?,
        ["show", ep] => c.get(&format!("/api/bootstrap/endpoints/{ep}"))?,
        ["remove" | "rm", ep] => c.delete(&format!("/api/bootstrap/endpoints/{ep}"))?,
        ["sessions"] => c.get("/api/bootstrap/sessions")?,
        ["sessions", ep] => c.get(&format!("/api/bootstrap/sessions/{ep}"))?,
        ["set", ep, args @ ..] => c.put(
            &format!("/api/bootstrap/endpoints/{ep}"),
            &set_body(args, false)?,
        )?,
        ["rotate", ep, args @ ..] => c.put(
            &format!("/api/bootstrap/endpoints/{ep}"),
            &set_body(args, true)?,
        )?,
        ["rollover", "cancel", ep] => {
            c.delete(&format!("/api/bootstrap/endpoints/{ep}/rollover"))?
        }
        ["rollover", "--all"] => c.post("/api/bootstrap/rollover", &json!({"all": true}))?,
        ["rollover", "--label", l] => c.post("/api/bootstrap/rollover", &json!({"label": l}))?,
        ["rollover", ep] if !ep.starts_with('-') => c.post(
            &format!("/api/bootstrap/endpoints/{ep}/rollover"),
            &json!({}),
        )?,
        ["import", path] => c.post_bytes("/api/bootstrap/import", "text/csv", &read(path)?)?,
        ["label", "list"] => c.get("/api/bootstrap/labels")?,
        ["label", "show", l] => c.get(&format!("/api/bootstrap/labels/{l}"))?,
        ["label", "set", l, path] => {
            c.put(&format!("/api/bootstrap/labels/{l}"), &read_json(path)?)?
        }
        ["label", "rm", l] => c.delete(&format!("/api/bootstrap/labels/{l}"))?,
        _ => return Err(usage()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_rotate_bodies() {
        let b = set_body(
            &[
                "--psk-identity",
                "bs-1",
                "--psk-key",
                "00ff",
                "--label",
                "a",
                "--label",
                "b",
            ],
            false,
        )
        .unwrap();
        assert_eq!(
            b,
            json!({"identity": "bs-1", "key": "00ff", "labels": ["a", "b"]})
        );
        assert_eq!(
            set_body(&["--nosec"], false).unwrap(),
            json!({"mode": "nosec"})
        );
        assert!(set_body(&["--nosec", "--psk-key", "00"], false).is_err());
        assert!(set_body(&["--bogus"], false).is_err());
        assert!(set_body(&["--label"], false).is_err());
        assert!(set_body(&[], true).is_err());
        assert_eq!(
            set_body(&["--psk-key", "11"], true).unwrap(),
            json!({"key": "11"})
        );
        assert!(set_body(&["--x509"], true).is_err());
        let CtlError::Usage(text) = usage() else {
            panic!()
        };
        assert_eq!(text.lines().count(), 8, "{text}");
        assert!(text.contains("bootstrap rollover (EP | --label L | --all)"));
        assert!(text.contains("bootstrap label list") && !text.contains("--quota"));
    }
}
