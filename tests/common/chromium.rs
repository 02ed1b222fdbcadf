//! Headless Chromium driven over the DevTools protocol (CDP), from Rust, with no other tool:
//! Chromium runs with `--remote-debugging-pipe`, reads CDP messages (JSON, each followed by a
//! NUL byte) from its fd 3 and writes replies and events the same way to its fd 4.
//!
//! Rules: every wait has a deadline ([`Chromium::launch`]'s `timeout` for the whole session); a
//! missed deadline, an error reply or a Chromium that exits panics with a one-line reason that
//! names the command, and the browser's whole process group is killed when the [`Chromium`] is
//! dropped (also while unwinding), so a hung browser fails the test instead of hanging the suite.
//! Used with `#[path = "common/chromium.rs"] mod chromium;`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The browser binary the tests drive (Debian's `chromium` package).
pub const CHROMIUM: &str = "chromium";

/// One headless Chromium process and its DevTools pipe.
pub struct Chromium {
    child: Child,
    to_browser: File,
    from_browser: Receiver<Result<Value, String>>,
    next_id: u64,
    deadline: Instant,
    timeout: Duration,
    stderr_log: PathBuf,
    /// Events received so far (messages without an `id`), in arrival order.
    pub events: Vec<Value>,
}

/// A pipe whose two ends are close-on-exec and numbered 10 or above (so that the child's
/// `dup2` onto 3 and 4 can neither clobber them nor be a no-op that keeps close-on-exec).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid, writable array of two file descriptors, as pipe2 requires.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    let high = |fd: RawFd| {
        // SAFETY: `fd` is an open descriptor this function owns; F_DUPFD_CLOEXEC returns a new
        // one (or -1, checked below).
        let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
        assert!(new >= 10, "fcntl: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors are open and owned here: `fd` is closed once (now) and `new`
        // gets exactly one owner.
        unsafe {
            libc::close(fd);
            OwnedFd::from_raw_fd(new)
        }
    };
    (high(fds[0]), high(fds[1]))
}

impl Chromium {
    /// Starts headless Chromium with a fresh profile in `profile` (which must outlive the
    /// browser) and the flags the project's rules list. Every later step must finish within
    /// `timeout` from now.
    pub fn launch(profile: &Path, timeout: Duration) -> Chromium {
        let deadline = Instant::now() + timeout;
        // Our writes -> the browser's fd 3; the browser's fd 4 -> our reads.
        let (cmd_read, cmd_write) = pipe();
        let (evt_read, evt_write) = pipe();
        let stderr_log = profile.join("chromium-stderr.log");
        let stderr = File::create(&stderr_log).expect("create chromium's stderr log");
        let (child_in, child_out) = (cmd_read.as_raw_fd(), evt_write.as_raw_fd());
        let mut command = Command::new(CHROMIUM);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-pipe",
                "--window-size=1280,1800",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            // Its own process group: dropping the handle kills the renderers too.
            .process_group(0);
        // SAFETY: between fork and exec the closure only calls dup2, which is
        // async-signal-safe; it allocates nothing and touches no lock. The source descriptors
        // are open (owned by this frame until after spawn) and numbered >= 10, so the targets 3
        // and 4 are distinct from them and come out without close-on-exec.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(child_in, 3) != 3 || libc::dup2(child_out, 4) != 4 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {CHROMIUM}: {e}"));
        // The browser's ends stay only in the browser: its exit then ends our reads with EOF.
        drop(cmd_read);
        drop(evt_write);

        let (tx, rx) = mpsc::channel();
        let mut reader = File::from(evt_read);
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 64 * 1024];
            loop {
                let n = match reader.read(&mut chunk) {
                    Ok(0) => {
                        let _ = tx.send(Err("chromium closed its DevTools pipe".to_string()));
                        return;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let _ = tx.send(Err(format!("reading chromium's DevTools pipe: {e}")));
                        return;
                    }
                };
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.iter().position(|&b| b == 0) {
                    let msg = serde_json::from_slice::<Value>(&buf[..end]).map_err(|e| {
                        format!(
                            "chromium sent a message that is not JSON ({e}): {}",
                            String::from_utf8_lossy(&buf[..end.min(200)])
                        )
                    });
                    buf.drain(..=end);
                    if tx.send(msg).is_err() {
                        return;
                    }
                }
            }
        });
        Chromium {
            child,
            to_browser: File::from(cmd_write),
            from_browser: rx,
            next_id: 1,
            deadline,
            timeout,
            stderr_log,
            events: Vec::new(),
        }
    }

    /// Panics with `what`, the tail of Chromium's stderr, and the browser killed (by Drop).
    fn fail(&mut self, what: &str) -> ! {
        let log = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        let status = match self.child.try_wait() {
            Ok(Some(s)) => format!("chromium exited ({s})"),
            _ => "chromium still running (killed now)".to_string(),
        };
        panic!(
            "headless chromium: {what}; {status}; its stderr ends with:\n{}",
            tail.join("\n")
        );
    }

    /// The next message from the browser, waiting at most until the deadline.
    fn next_message(&mut self, until: Instant, waiting_for: &str) -> Option<Value> {
        let now = Instant::now();
        if now >= until {
            return None;
        }
        match self.from_browser.recv_timeout(until - now) {
            Ok(Ok(msg)) => Some(msg),
            Ok(Err(e)) => self.fail(&format!("{e} while waiting for {waiting_for}")),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                self.fail(&format!("pipe reader gone while waiting for {waiting_for}"))
            }
        }
    }

    fn timed_out(&mut self, waiting_for: &str) -> ! {
        let timeout = self.timeout;
        self.fail(&format!(
            "timed out after {timeout:?} waiting for {waiting_for}"
        ))
    }

    /// Opens a new page (`about:blank`) and attaches to it; returns its session id, for
    /// [`call`](Self::call) and [`wait_event`](Self::wait_event).
    pub fn new_page(&mut self) -> String {
        let target = self.call(None, "Target.createTarget", json!({ "url": "about:blank" }));
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        );
        attached["sessionId"]
            .as_str()
            .expect("Target.attachToTarget returns a sessionId")
            .to_string()
    }

    /// Sends `method` (to the page attached as `session`, or to the browser with `None`) and
    /// returns its `result`; events that arrive meanwhile go to [`Chromium::events`].
    pub fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        if let Err(e) = self.to_browser.write_all(&bytes) {
            self.fail(&format!("sending {method}: {e}"));
        }
        loop {
            let Some(reply) = self.next_message(self.deadline, method) else {
                self.timed_out(&format!("the reply to {method}"));
            };
            if reply.get("id").and_then(Value::as_u64) != Some(id) {
                self.events.push(reply);
                continue;
            }
            if let Some(err) = reply.get("error") {
                self.fail(&format!("{method} failed: {err}"));
            }
            return reply.get("result").cloned().unwrap_or(Value::Null);
        }
    }

    /// Waits for the first event named `method` from `session` among those received after
    /// index `from` of [`Chromium::events`] (received earlier or arriving now).
    pub fn wait_event(&mut self, session: &str, method: &str, from: usize) -> Value {
        let is_it = |e: &Value| {
            e["method"] == method && e.get("sessionId").and_then(Value::as_str) == Some(session)
        };
        if let Some(e) = self.events[from..].iter().find(|e| is_it(e)) {
            return e.clone();
        }
        loop {
            let Some(msg) = self.next_message(self.deadline, method) else {
                self.timed_out(&format!("the event {method}"));
            };
            self.events.push(msg.clone());
            if is_it(&msg) {
                return msg;
            }
        }
    }

    /// Lets the page run for `pause` (bounded by the deadline), collecting events.
    pub fn pause(&mut self, pause: Duration) {
        let until = (Instant::now() + pause).min(self.deadline);
        while let Some(msg) = self.next_message(until, "a pause to end") {
            self.events.push(msg);
        }
    }

    /// Closes the browser politely (Browser.close), then waits a moment for it to exit; Drop
    /// kills it if it has not.
    pub fn close(mut self) {
        let id = self.next_id;
        let mut bytes =
            serde_json::to_vec(&json!({ "id": id, "method": "Browser.close" })).unwrap();
        bytes.push(0);
        if self.to_browser.write_all(&bytes).is_ok() {
            let until = Instant::now() + Duration::from_secs(5);
            while Instant::now() < until {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with a negative pid signals the process group the child leads
        // (process_group(0) above): the browser and its helpers, nothing else.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Decodes standard base64 (as CDP sends binary data, e.g. screenshots).
pub fn base64_decode(text: &str) -> Vec<u8> {
    fn value(c: u8) -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: byte {c:#x}"),
        }
    }
    let bytes: Vec<u8> = text.bytes().filter(|&b| b != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c) << (18 - 6 * i);
        }
        let n = chunk.len() * 6 / 8;
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + n]);
    }
    out
}
