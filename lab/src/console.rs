//! The management services of a lab on one host: the flow collector (nodes export to it)
//! and the console over it and the central store, started as the real `eastwall` binary
//! with certificates from the lab's CA. The console's HTTPS certificate is issued for the
//! host's address by a throwaway CA of its own; [`Console::spki`] is what a test browser is
//! told to trust.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::etcd::Etcd;
use crate::lab::Lab;

/// The collector's port.
pub const COLLECTOR_PORT: u16 = 15010;
/// The console's port.
pub const CONSOLE_PORT: u16 = 9443;

/// A user of the console: name, password, role.
#[derive(Clone, Debug)]
pub struct ConsoleUser {
    /// The sign-in name.
    pub name: String,
    /// The password.
    pub password: String,
    /// `admin` or `reader`.
    pub role: &'static str,
}

/// The collector and the console, ended (by PID) when dropped.
pub struct Console {
    collector: Child,
    console: Option<Child>,
    dir: tempfile::TempDir,
    exe: PathBuf,
    netns: String,
    addr: IpAddr,
    spki: String,
    users: Vec<ConsoleUser>,
}

impl Drop for Console {
    fn drop(&mut self) {
        if let Some(c) = &mut self.console {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.collector.kill();
        let _ = self.collector.wait();
    }
}

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut b = vec![0u8; bytes];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Standard base64 (RFC 4648), for the hash Chromium takes.
fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn wait_listening(netns: &str, addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !crate::in_netns(netns, move || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    })? {
        if Instant::now() > deadline {
            bail!("{what} did not listen on {addr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

impl Console {
    /// Starts the collector on lab host `host` (the lab needs identity enabled); the console
    /// comes with [`Console::start_console`], once there is a store.
    pub fn start(lab: &Lab, host: &str, exe: &Path) -> anyhow::Result<Console> {
        Console::start_with_db(lab, host, exe, None)
    }

    /// [`Console::start`] with the collector's database at `db` (one filled beforehand), or
    /// a new one in its folder.
    pub fn start_with_db(
        lab: &Lab,
        host: &str,
        exe: &Path,
        db: Option<PathBuf>,
    ) -> anyhow::Result<Console> {
        let ca = lab
            .ca()
            .context("the lab needs identity (a CA) for the collector")?;
        let h = lab.host(host).clone();
        let dir = tempfile::tempdir()?;
        let td = ca.trust_domain().to_owned();
        std::fs::write(dir.path().join("bundle.pem"), ca.cert_pem())?;
        for (name, id) in [
            ("collector", format!("spiffe://{td}/collector")),
            ("operator", format!("spiffe://{td}/operator/console")),
        ] {
            let issued = ca
                .issue(
                    &eastwall_policy::SpiffeId::parse(&id).map_err(|e| anyhow::anyhow!("{e}"))?,
                    Duration::from_secs(24 * 3600),
                )
                .map_err(|e| anyhow::anyhow!("issuing {id}: {e}"))?;
            std::fs::write(dir.path().join(format!("{name}.crt")), issued.cert_pem)?;
            std::fs::write(dir.path().join(format!("{name}.key")), issued.key_pem)?;
        }
        let log = std::fs::File::create(dir.path().join("collector.log"))?;
        let listen = SocketAddr::new(h.addr.into(), COLLECTOR_PORT);
        let collector = Command::new("ip")
            .args(["netns", "exec", &h.netns])
            .arg(exe)
            .args(["collector", "--listen", &listen.to_string()])
            .arg("--cert")
            .arg(dir.path().join("collector.crt"))
            .arg("--key")
            .arg(dir.path().join("collector.key"))
            .arg("--trust-bundle")
            .arg(dir.path().join("bundle.pem"))
            .arg("--db")
            .arg(db.unwrap_or_else(|| dir.path().join("flows.db")))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the collector")?;
        let c = Console {
            collector,
            console: None,
            dir,
            exe: exe.to_owned(),
            netns: h.netns.clone(),
            addr: h.addr.into(),
            spki: String::new(),
            users: Vec::new(),
        };
        wait_listening(&c.netns, listen, "the collector")?;
        Ok(c)
    }

    /// The collector's URL.
    pub fn collector_url(&self) -> String {
        format!("https://{}/", SocketAddr::new(self.addr, COLLECTOR_PORT))
    }

    /// Makes the nodes of `hosts` (started from now on) export their records here: each
    /// gets its node certificate (issued by the lab's CA) as `export.crt` in its folder.
    pub fn export_from(&self, lab: &mut Lab, hosts: &[&str]) -> anyhow::Result<()> {
        let ca = lab.ca().context("the lab needs identity")?;
        for node in hosts {
            let id = format!("spiffe://{}/node/{node}", ca.trust_domain());
            let issued = ca
                .issue(
                    &eastwall_policy::SpiffeId::parse(&id).map_err(|e| anyhow::anyhow!("{e}"))?,
                    Duration::from_secs(24 * 3600),
                )
                .map_err(|e| anyhow::anyhow!("issuing {id}: {e}"))?;
            let dir = lab.dir().join(node);
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("export.crt"), issued.cert_pem)?;
            std::fs::write(dir.join("export.key"), issued.key_pem)?;
        }
        lab.add_node_spec(&format!(
            "  export:\n    url: https://{}\n    nodeCert: export.crt\n    nodeKey: export.key\n",
            SocketAddr::new(self.addr, COLLECTOR_PORT)
        ));
        Ok(())
    }

    /// Starts the console over `etcd` (as its admin, so that admins can apply) and the
    /// collector, with two local users: `ada` (admin) and `rob` (reader), passwords random.
    pub fn start_console(&mut self, etcd: &Etcd) -> anyhow::Result<()> {
        self.start_console_with(etcd, None, &[])
    }

    /// [`Console::start_console`], also signing users in against an LDAP directory
    /// (`ldap`: the `signIn.ldap` mapping, as YAML flow), members of `readers` as readers.
    pub fn start_console_with(
        &mut self,
        etcd: &Etcd,
        ldap: Option<&str>,
        readers: &[&str],
    ) -> anyhow::Result<()> {
        let dir = self.dir.path().to_owned();
        // The HTTPS certificate, for the host's address.
        let key = rcgen::KeyPair::generate()?;
        // The host's address, and loopback for the demo's forward.
        let mut params = rcgen::CertificateParams::new(vec![
            self.addr.to_string(),
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "eastwall console");
        let cert = params.self_signed(&key)?;
        std::fs::write(dir.join("console.crt"), cert.pem())?;
        std::fs::write(dir.join("console.key"), key.serialize_pem())?;
        let spki = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            &rcgen::PublicKeyData::subject_public_key_info(&key),
        );
        self.spki = base64(spki.as_ref());
        // Users, with hashes made by the binary itself.
        let mut users_yaml =
            String::from("apiVersion: eastwall.dev/v1\nkind: ConsoleUsers\nusers:\n");
        self.users.clear();
        for (name, role, group) in [
            ("ada", "admin", "console-admins"),
            ("rob", "reader", "console-readers"),
        ] {
            let password = random_hex(8)?;
            let mut child = Command::new(&self.exe)
                .args(["console", "hash-password"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            std::io::Write::write_all(
                child.stdin.as_mut().context("stdin")?,
                format!("{password}\n").as_bytes(),
            )?;
            let out = child.wait_with_output()?;
            if !out.status.success() {
                bail!("hash-password: {}", String::from_utf8_lossy(&out.stderr));
            }
            let hash = String::from_utf8(out.stdout)?.trim().to_owned();
            users_yaml.push_str(&format!(
                "  - name: {name}\n    password: \"{hash}\"\n    groups: [{group}]\n"
            ));
            self.users.push(ConsoleUser {
                name: name.into(),
                password,
                role,
            });
        }
        std::fs::write(dir.join("users.yaml"), users_yaml)?;
        let admin = etcd.admin();
        std::fs::write(
            dir.join("console.yaml"),
            format!(
                "apiVersion: eastwall.dev/v1
kind: ConsoleConfig
listen: {listen}
tls: {{cert: console.crt, key: console.key}}
store:
  endpoints: [{endpoints}]
  caFile: {ca}
  certFile: {cert}
  keyFile: {key}
collector:
  url: https://{collector}
  trustBundle: bundle.pem
  cert: operator.crt
  key: operator.key
signIn:
  users: users.yaml
  admins: [console-admins]
  readers: [{readers}]
{ldap}",
                listen = SocketAddr::new(self.addr, CONSOLE_PORT),
                endpoints = etcd.endpoints().join(", "),
                ca = etcd.ca_file().display(),
                cert = admin.cert.display(),
                key = admin.key.display(),
                collector = SocketAddr::new(self.addr, COLLECTOR_PORT),
                readers = std::iter::once("console-readers")
                    .chain(readers.iter().copied())
                    .collect::<Vec<_>>()
                    .join(", "),
                ldap = ldap.map(|l| format!("  ldap: {l}\n")).unwrap_or_default(),
            ),
        )?;
        let log = std::fs::File::create(dir.join("console.log"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .arg(&self.exe)
            .arg("console")
            .arg("--config")
            .arg(dir.join("console.yaml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the console")?;
        self.console = Some(child);
        wait_listening(
            &self.netns,
            SocketAddr::new(self.addr, CONSOLE_PORT),
            "the console",
        )
    }

    /// The console process's PID (`ip netns exec` replaces itself with it).
    pub fn console_pid(&self) -> Option<u32> {
        self.console.as_ref().map(Child::id)
    }

    /// The console's address: `https://ADDR:PORT/`.
    pub fn url(&self) -> String {
        format!("https://{}/", SocketAddr::new(self.addr, CONSOLE_PORT))
    }

    /// The network namespace of the host it runs on (a browser must run there).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// base64(SHA-256(its certificate's public key info)): for Chromium's
    /// `--ignore-certificate-errors-spki-list`, which trusts that key and no other.
    pub fn spki(&self) -> &str {
        &self.spki
    }

    /// Its users.
    pub fn users(&self) -> &[ConsoleUser] {
        &self.users
    }

    /// Its folder (configuration, certificates, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The console's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }
}

/// A loopback port of this machine's own namespace forwarded to the console (the demo's way
/// in from a browser on the machine): its port, and the forward, which stops when dropped.
pub fn forward_loopback(console: &Console) -> anyhow::Result<(u16, Forward)> {
    let listener = (CONSOLE_PORT..CONSOLE_PORT + 20)
        .find_map(|p| std::net::TcpListener::bind(("127.0.0.1", p)).ok())
        .context("no free loopback port for the console")?;
    let port = listener.local_addr()?.port();
    listener.set_nonblocking(true)?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (netns, target) = (
        console.netns.clone(),
        SocketAddr::new(console.addr, CONSOLE_PORT),
    );
    let s = stop.clone();
    std::thread::spawn(move || {
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            let client = match listener.accept() {
                Ok((c, _)) => c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                Err(_) => continue,
            };
            // A socket made in the namespace stays there whichever thread uses it.
            let Ok(Ok(server)) = crate::in_netns(&netns, move || {
                std::net::TcpStream::connect_timeout(&target, Duration::from_secs(3))
            }) else {
                continue;
            };
            let _ = client.set_nonblocking(false);
            for (mut from, mut to) in [
                (client.try_clone(), server.try_clone()),
                (server.try_clone(), client.try_clone()),
            ]
            .into_iter()
            .filter_map(|(a, b)| Some((a.ok()?, b.ok()?)))
            {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    Ok((port, Forward { stop }))
}

/// A running [`forward_loopback`].
pub struct Forward {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_as_rfc_4648_says() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
