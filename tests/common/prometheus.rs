//! A real `prometheus` for tests (`#[path = "common/prometheus.rs"] mod prometheus;`): started
//! in a folder, scraping the given targets every second, queried over its HTTP API, killed on
//! drop (also when a test fails). Call `require_tool("prometheus", ..)` first.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Kills a child process (and waits for it) on drop, so a failed assertion leaves nothing
/// running.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running prometheus.
pub struct Prometheus {
    /// Its web (API) address, on loopback.
    pub web: SocketAddr,
    log: PathBuf,
    _child: KillOnDrop,
}

impl Prometheus {
    /// Starts prometheus with its data and log in `dir`, scraping `targets` (`host:port`)
    /// every second as scrape job `job_name` with `honor_labels` (so allocscope's `job` label
    /// stays `job`, not `exported_job`), evaluating `rule_files` every second.
    pub fn start(dir: &Path, job_name: &str, targets: &[String], rule_files: &[PathBuf]) -> Self {
        let config = dir.join("prometheus.yml");
        let rules = if rule_files.is_empty() {
            String::new()
        } else {
            let files: Vec<String> = rule_files
                .iter()
                .map(|f| format!("'{}'", f.display()))
                .collect();
            format!("rule_files: [{}]\n", files.join(", "))
        };
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{rules}\
                 scrape_configs:\n  - job_name: {job_name}\n    honor_labels: true\n    \
                 static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )
        .unwrap();
        let web: SocketAddr = ([127, 0, 0, 1], crate::common::free_port()).into();
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start prometheus");
        Prometheus {
            web,
            log,
            _child: KillOnDrop(child),
        }
    }

    /// The result list of the instant query `expr`; `None` while prometheus is not answering
    /// yet (an empty list until its first scrape).
    pub fn query(&self, expr: &str) -> Option<Vec<serde_json::Value>> {
        let url = format!(
            "http://{}/api/v1/query?query={}",
            self.web,
            percent_encode(expr)
        );
        let mut r = ureq::get(&url).call().ok()?;
        let body: serde_json::Value =
            serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()?;
        assert_eq!(body["status"], "success", "{expr}: {body}");
        body["data"]["result"].as_array().cloned()
    }

    /// What prometheus wrote to its log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Percent-encodes a query string value.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
