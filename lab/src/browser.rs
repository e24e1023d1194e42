//! A real headless browser for the console's tests and screenshots: Debian's Chromium driven
//! through ChromeDriver (WebDriver, with `fantoccini`), inside a lab host's network
//! namespace. It trusts one HTTPS key (the console's) and nothing else beyond the system's.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// ChromeDriver in a namespace, ended (by PID) when dropped; Chromium is its child.
pub struct Browser {
    driver: Child,
    port: u16,
    netns: String,
    profile: tempfile::TempDir,
    spki: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The browsers ChromeDriver started (and theirs) first: a test that failed did not
        // close its session, and they would outlive the driver.
        for pid in descendants(self.driver.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Every process below `root`, from /proc (parents before children).
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            // `pid (comm) state ppid ...`: the name may hold spaces, so read after the last ')'.
            if let Ok(stat) = std::fs::read_to_string(e.path().join("stat"))
                && let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r)
                && let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok())
            {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(pid, ppid) in &parent_of {
            if ppid == p && !out.contains(&pid) {
                out.push(pid);
                frontier.push(pid);
            }
        }
    }
    out
}

/// Whether Chromium and ChromeDriver are installed (`scripts/setup-debian.sh`).
pub fn installed() -> bool {
    Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists()
}

impl Browser {
    /// Starts ChromeDriver in `netns`; sessions trust the HTTPS key whose SPKI hash is
    /// `spki` (base64 of SHA-256).
    pub fn start(netns: &str, spki: &str) -> anyhow::Result<Browser> {
        if !installed() {
            bail!("Chromium and ChromeDriver are not installed (scripts/setup-debian.sh)");
        }
        let port = 9515;
        let profile = tempfile::tempdir()?;
        let driver = Command::new("ip")
            .args(["netns", "exec", netns, CHROMEDRIVER])
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver")?;
        let b = Browser {
            driver,
            port,
            netns: netns.to_owned(),
            profile,
            spki: spki.to_owned(),
        };
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(15);
        while !crate::in_netns(netns, move || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        })? {
            if Instant::now() > deadline {
                bail!("chromedriver did not listen");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(b)
    }

    /// The namespace to run sessions in ([`crate::in_netns`]).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// A new browser session (a fresh profile each time, no cookies). Must be called from
    /// a thread in [`Browser::netns`], inside a tokio runtime.
    pub async fn session(&self, width: u32, height: u32) -> anyhow::Result<fantoccini::Client> {
        let dir = tempfile::Builder::new()
            .prefix("profile-")
            .tempdir_in(self.profile.path())?
            .keep();
        let args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", dir.display()),
            format!("--ignore-certificate-errors-spki-list={}", self.spki),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "binary": CHROMIUM, "args": args }),
        );
        // Certificates are checked; only the console's key is trusted (the flag above).
        caps.insert("acceptInsecureCerts".into(), serde_json::json!(false));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        fantoccini::ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .map_err(|e| anyhow::anyhow!("a browser session: {e}"))
    }
}
