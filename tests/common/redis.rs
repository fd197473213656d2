//! A `redis-server` for the tests that need one.
//!
//! Needs `redis-server` on the PATH (`.ci/run` installs it). The tests that
//! start one are `#[ignore]`d, so `cargo test` lists them as ignored with the
//! reason; `cargo test --all-features --test redis_fleet --test redis_auth --
//! --ignored` runs them. Run so without `redis-server`, they print that they
//! were skipped, or fail with `WOKELO_REQUIRE_REDIS=1` (CI sets it).

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A `redis-server` on 127.0.0.1, killed on drop.
pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    /// On a free port.
    pub fn start() -> Option<Redis> {
        Self::start_with(free_port(), &[])
    }

    /// On `port`.
    pub fn start_on(port: u16) -> Option<Redis> {
        Self::start_with(port, &[])
    }

    /// On `port`, with `args` added to its command line. `None` (the test is
    /// skipped) if `redis-server` is missing, unless `WOKELO_REQUIRE_REDIS`
    /// is set.
    pub fn start_with(port: u16, args: &[&str]) -> Option<Redis> {
        let port_arg = port.to_string();
        let child = match Command::new("redis-server")
            .args([
                "--port",
                &port_arg,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                assert!(
                    std::env::var("WOKELO_REQUIRE_REDIS").is_err(),
                    "redis-server is required but cannot start: {e}"
                );
                eprintln!("SKIPPED: redis-server not found ({e}); install it to run this test");
                return None;
            }
        };
        let redis = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(redis)
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops the server.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
