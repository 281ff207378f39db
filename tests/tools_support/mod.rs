//! External tools some tests need (mosquitto, docker-compose, promtool; scripts/setup.sh
//! installs them all). Outside CI a missing tool skips the test with a loud notice; in CI (the
//! `CI` environment variable set to anything but empty, `0` or `false`) it fails the test, so a
//! broken set-up cannot pass by skipping.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Whether the tests run in CI.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| {
            let v = v.trim().to_ascii_lowercase();
            !(v.is_empty() || v == "0" || v == "false")
        })
        .unwrap_or(false)
}

/// The first existing file among `name` on PATH and the `extra` absolute paths. When none exists:
/// panics in CI, otherwise prints a notice naming the test and returns None (the caller skips).
pub fn require_tool(name: &str, extra: &[&str]) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    let found = on_path.or_else(|| {
        extra
            .iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .map(Path::to_path_buf)
    });
    if found.is_none() {
        missing(name);
    }
    found
}

fn missing(name: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string();
    if in_ci() {
        panic!("`{name}` is not installed, and CI must run {test}: run scripts/setup.sh");
    }
    eprintln!(
        "\n******** SKIPPED {test}: `{name}` is not installed (scripts/setup.sh installs it; \
         with CI set this is a failure) ********\n"
    );
}

/// Starts mosquitto on 127.0.0.1:`port` with persistence in `dir`, so that a subscriber's
/// session and its queued QoS 1 messages survive a broker restart, and waits until it accepts
/// connections. None when mosquitto is missing outside CI; a broker that is installed but does
/// not come up fails the test.
pub fn start_mosquitto(port: u16, dir: &Path) -> Option<std::process::Child> {
    start_mosquitto_with(port, dir, "")
}

/// [`start_mosquitto`] with more configuration lines (`extra`, newline-terminated).
pub fn start_mosquitto_with(port: u16, dir: &Path, extra: &str) -> Option<std::process::Child> {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let bin = require_tool("mosquitto", &["/usr/sbin/mosquitto"])?;
    // Started as root, mosquitto drops to its own user: it must be able to save its state.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
            .unwrap_or_else(|e| panic!("cannot open {} to mosquitto: {e}", dir.display()));
    }
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n{extra}",
            dir.display()
        ),
    )
    .unwrap_or_else(|e| panic!("cannot write {}: {e}", conf.display()));
    let mut child = Command::new(&bin)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(child);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("mosquitto did not accept connections on port {port} within 10 s");
}
