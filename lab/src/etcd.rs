//! A throwaway etcd (Debian's `etcd-server`) for tests and the demo: TLS with client
//! certificates, authentication on, an admin role that may write everything under the
//! eastwall prefix, and one role per node that may read `config/` and write only its own
//! `nodes/<name>/` (the layout of `eastwall_store::layout`). One member, or several
//! forming a cluster, each in a lab host's namespace or on loopback.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The user (certificate common name) with every right.
pub const ROOT: &str = "root";
/// The operators' user: read-write on the eastwall prefix.
pub const ADMIN: &str = "eastwall-admin";

/// Client port in a namespace of its own.
const CLIENT_PORT: u16 = 2379;
/// Peer port in a namespace of its own.
const PEER_PORT: u16 = 2380;

/// One etcd member the lab started.
struct Member {
    name: String,
    netns: Option<String>,
    ip: IpAddr,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// An etcd cluster (of one member or more) with its certificates.
pub struct Etcd {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    prefix: String,
}

/// A client's certificate and key files.
#[derive(Clone, Debug)]
pub struct ClientCert {
    /// The certificate (its common name is the etcd user).
    pub cert: PathBuf,
    /// The key.
    pub key: PathBuf,
}

impl Etcd {
    /// Starts a cluster with one member per `(namespace, address)` (a namespace of `None`:
    /// loopback, on free ports), sets up the users and roles under `prefix`, and enables
    /// authentication.
    pub fn start(members: &[(Option<&str>, IpAddr)], prefix: &str) -> anyhow::Result<Etcd> {
        crate::slapd::find_program("etcd").context(
            "etcd is not installed (Debian: scripts/setup-debian.sh installs etcd-server and etcd-client)",
        )?;
        if crate::slapd::find_program("etcdctl").is_none() {
            bail!("etcd is installed but etcdctl is not: install Debian's etcd-client");
        }
        let dir = tempfile::Builder::new()
            .prefix("eastwall-etcd.")
            .tempdir()
            .context("temp dir")?;
        let ips: Vec<IpAddr> = members.iter().map(|m| m.1).collect();
        write_ca_and_servers(dir.path(), &ips)?;
        let mut e = Etcd {
            dir,
            members: Vec::new(),
            prefix: prefix.to_owned(),
        };
        for (i, (netns, ip)) in members.iter().enumerate() {
            let (client_port, peer_port) = match netns {
                Some(_) => (CLIENT_PORT, PEER_PORT),
                None => (crate::slapd::free_port(*ip)?, crate::slapd::free_port(*ip)?),
            };
            e.members.push(Member {
                name: format!("m{i}"),
                netns: netns.map(str::to_owned),
                ip: *ip,
                client_port,
                peer_port,
                child: None,
            });
        }
        for i in 0..e.members.len() {
            e.launch(i)?;
        }
        e.wait_healthy(Duration::from_secs(20))?;
        for user in [ROOT, ADMIN] {
            e.client_cert(user)?;
        }
        e.ctl(ROOT, &["user", "add", ROOT, "--no-password"])?;
        e.ctl(ROOT, &["user", "grant-role", ROOT, "root"])?;
        e.ctl(ROOT, &["role", "add", ADMIN])?;
        e.ctl(
            ROOT,
            &[
                "role",
                "grant-permission",
                ADMIN,
                "readwrite",
                prefix,
                "--prefix=true",
            ],
        )?;
        e.ctl(ROOT, &["user", "add", ADMIN, "--no-password"])?;
        e.ctl(ROOT, &["user", "grant-role", ADMIN, ADMIN])?;
        e.ctl(ROOT, &["auth", "enable"])?;
        Ok(e)
    }

    /// The client URLs of every member, in order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("https://{}", SocketAddr::new(m.ip, m.client_port)))
            .collect()
    }

    /// The CA the members' and clients' certificates chain to.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The admin's certificate.
    pub fn admin(&self) -> ClientCert {
        self.cert_files(ADMIN)
    }

    /// A certificate for node `node` (user `node-<node>`), with its role: read the
    /// configuration, write only its own status.
    pub fn add_node(&self, node: &str) -> anyhow::Result<ClientCert> {
        let user = format!("node-{node}");
        let c = self.client_cert(&user)?;
        self.ctl(ROOT, &["role", "add", &user])?;
        self.ctl(
            ROOT,
            &[
                "role",
                "grant-permission",
                &user,
                "read",
                &format!("{}config/", self.prefix),
                "--prefix=true",
            ],
        )?;
        // What each version changed: to catch up without reading everything.
        self.ctl(
            ROOT,
            &[
                "role",
                "grant-permission",
                &user,
                "read",
                &format!("{}history/", self.prefix),
                "--prefix=true",
            ],
        )?;
        self.ctl(
            ROOT,
            &[
                "role",
                "grant-permission",
                &user,
                "readwrite",
                &format!("{}nodes/{node}/", self.prefix),
                "--prefix=true",
            ],
        )?;
        self.ctl(ROOT, &["user", "add", &user, "--no-password"])?;
        self.ctl(ROOT, &["user", "grant-role", &user, &user])?;
        Ok(c)
    }

    /// The certificate [`Etcd::add_node`] made for node `node`.
    pub fn node_cert(&self, node: &str) -> ClientCert {
        self.cert_files(&format!("node-{node}"))
    }

    /// A certificate for a service that only reads the configuration (user `name`, e.g.
    /// the CA service, `eastwall-ca`).
    pub fn add_reader(&self, name: &str) -> anyhow::Result<ClientCert> {
        let c = self.client_cert(name)?;
        self.ctl(ROOT, &["role", "add", name])?;
        self.ctl(
            ROOT,
            &[
                "role",
                "grant-permission",
                name,
                "read",
                &format!("{}config/", self.prefix),
                "--prefix=true",
            ],
        )?;
        self.ctl(ROOT, &["user", "add", name, "--no-password"])?;
        self.ctl(ROOT, &["user", "grant-role", name, name])?;
        Ok(c)
    }

    /// Stops member `i` (SIGKILL, as a crash).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members.get_mut(i).and_then(|m| m.child.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again with its data.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i);
        self.launch(i)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.healthy_member(i) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("etcd member {i} did not come back within 20 s")
    }

    /// Runs `etcdctl` as `user` against every member; its standard output.
    pub fn ctl(&self, user: &str, args: &[&str]) -> anyhow::Result<String> {
        let c = self.cert_files(user);
        let m = &self.members[0];
        let mut cmd = self.command_in(m.netns.as_deref(), "etcdctl")?;
        let out = cmd
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.endpoints().join(","))
            .arg("--cacert")
            .arg(self.ca_file())
            .arg("--cert")
            .arg(&c.cert)
            .arg("--key")
            .arg(&c.key)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running etcdctl")?;
        if !out.status.success() {
            bail!(
                "etcdctl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn cert_files(&self, user: &str) -> ClientCert {
        ClientCert {
            cert: self.dir.path().join(format!("{user}.crt")),
            key: self.dir.path().join(format!("{user}.key")),
        }
    }

    fn client_cert(&self, user: &str) -> anyhow::Result<ClientCert> {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
        let issuer = self.issuer()?;
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::CommonName, user);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &issuer)?;
        let c = self.cert_files(user);
        std::fs::write(&c.cert, cert.pem())?;
        std::fs::write(&c.key, key.serialize_pem())?;
        Ok(c)
    }

    fn issuer(&self) -> anyhow::Result<rcgen::Issuer<'static, rcgen::KeyPair>> {
        let key =
            rcgen::KeyPair::from_pem(&std::fs::read_to_string(self.dir.path().join("ca.key"))?)?;
        let pem = std::fs::read_to_string(self.ca_file())?;
        Ok(rcgen::Issuer::from_ca_cert_pem(&pem, key)?)
    }

    fn command_in(&self, netns: Option<&str>, program: &str) -> anyhow::Result<Command> {
        let p = crate::slapd::find_program(program)
            .with_context(|| format!("{program} is not installed"))?;
        Ok(match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(p);
                c
            }
            None => Command::new(p),
        })
    }

    fn launch(&mut self, i: usize) -> anyhow::Result<()> {
        let d = self.dir.path().to_path_buf();
        let cluster: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=https://{}", m.name, SocketAddr::new(m.ip, m.peer_port)))
            .collect();
        let m = &self.members[i];
        let client = format!("https://{}", SocketAddr::new(m.ip, m.client_port));
        let peer = format!("https://{}", SocketAddr::new(m.ip, m.peer_port));
        let log = std::fs::File::create(d.join(format!("{}.log", m.name)))?;
        let log2 = log.try_clone()?;
        let server = format!("server-{i}");
        let child = self
            .command_in(m.netns.as_deref(), "etcd")?
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(d.join(format!("{}.data", m.name)))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--initial-cluster-token", "eastwall-lab"])
            .arg("--cert-file")
            .arg(d.join(format!("{server}.crt")))
            .arg("--key-file")
            .arg(d.join(format!("{server}.key")))
            .arg("--trusted-ca-file")
            .arg(self.ca_file())
            .arg("--client-cert-auth")
            .arg("--peer-cert-file")
            .arg(d.join(format!("{server}.crt")))
            .arg("--peer-key-file")
            .arg(d.join(format!("{server}.key")))
            .arg("--peer-trusted-ca-file")
            .arg(self.ca_file())
            .arg("--peer-client-cert-auth")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .context("starting etcd")?;
        self.members[i].child = Some(child);
        Ok(())
    }

    fn healthy_member(&self, i: usize) -> bool {
        let m = &self.members[i];
        let root = self.cert_files(ROOT);
        let Ok(mut cmd) = self.command_in(m.netns.as_deref(), "etcdctl") else {
            return false;
        };
        // Before root's certificate exists, the server's own serves to ask.
        let (cert, key) = if root.cert.exists() {
            (root.cert, root.key)
        } else {
            (
                self.dir.path().join(format!("server-{i}.crt")),
                self.dir.path().join(format!("server-{i}.key")),
            )
        };
        cmd.env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(format!("https://{}", SocketAddr::new(m.ip, m.client_port)))
            .arg("--cacert")
            .arg(self.ca_file())
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .args(["endpoint", "health", "--command-timeout=1s"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn wait_healthy(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            for (i, m) in self.members.iter_mut().enumerate() {
                if let Some(c) = m.child.as_mut()
                    && let Ok(Some(status)) = c.try_wait()
                {
                    let log = std::fs::read_to_string(self.dir.path().join(format!("m{i}.log")))
                        .unwrap_or_default();
                    bail!("etcd member {i} exited with {status}:\n{log}");
                }
            }
            if (0..self.members.len()).all(|i| self.healthy_member(i)) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("etcd did not become healthy within {within:?}")
    }

    /// The folder with the members' logs and data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// A CA, and a server certificate per member (for clients and peers, with its address).
fn write_ca_and_servers(d: &Path, ips: &[IpAddr]) -> anyhow::Result<()> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "eastwall lab etcd CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    std::fs::write(d.join("ca.pem"), ca_cert.pem())?;
    std::fs::write(d.join("ca.key"), ca_key.serialize_pem())?;
    let issuer = Issuer::new(ca, ca_key);
    for (i, ip) in ips.iter().enumerate() {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(vec![ip.to_string(), "localhost".to_owned()])?;
        p.distinguished_name
            .push(DnType::CommonName, format!("etcd-member-{i}"));
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &issuer)?;
        std::fs::write(d.join(format!("server-{i}.crt")), cert.pem())?;
        std::fs::write(d.join(format!("server-{i}.key")), key.serialize_pem())?;
    }
    Ok(())
}
