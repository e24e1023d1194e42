//! A throwaway OpenLDAP server (slapd) for the tests and the demo: a temp dir with its
//! config, database and certificates, listening on one address (loopback, or a lab host's LAN
//! address inside that host's network namespace) for `ldap://` (StartTLS capable) and
//! `ldaps://`, loaded with the lab's directory (`ldap/*.ldif`: alice in finance, bob in hr,
//! nested and posix groups) through `ldapadd`, so the memberof overlay fills `memberOf`.
//! Killed by PID on drop.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The directory's suffix.
pub const BASE: &str = "dc=example,dc=org";
/// The administrator (rootdn) of the lab directory.
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
/// The administrator's password.
pub const ADMIN_PASSWORD: &str = "secret";
/// Users and groups: alice in finance, bob in hr (groupOfNames and posixGroup).
pub const BASE_LDIF: &str = include_str!("ldap/base.ldif");
/// More: nested groups, a group cycle, many groups for paging, a user with filter
/// metacharacters in the name.
pub const EXTRA_LDIF: &str = include_str!("ldap/extra.ldif");

/// Where slapd is, looking in PATH and the sbin directories (which a non-root PATH lacks).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether slapd and the OpenLDAP client tools are installed.
pub fn installed() -> bool {
    find_program("slapd").is_some() && find_program("ldapadd").is_some()
}

/// A running slapd.
pub struct Slapd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    slapd: PathBuf,
    netns: Option<String>,
    ip: IpAddr,
    /// Port of `ldap://IP:<port>`.
    pub port: u16,
    /// Port of `ldaps://IP:<port>`.
    pub tls_port: u16,
}

impl Slapd {
    /// Starts slapd on `ip` (inside network namespace `netns`, if given) with the lab
    /// directory. On loopback of this namespace free ports are picked; in a lab namespace the
    /// standard 389 and 636.
    pub fn start(netns: Option<&str>, ip: IpAddr) -> anyhow::Result<Slapd> {
        let slapd = find_program("slapd").context(
            "slapd is not installed (Debian: scripts/setup-debian.sh installs slapd and ldap-utils)",
        )?;
        if find_program("ldapadd").is_none() {
            bail!("slapd is installed but ldapadd is not: install Debian's ldap-utils");
        }
        let dir = tempfile::Builder::new()
            .prefix("eastwall-slapd.")
            .tempdir()
            .context("temp dir")?;
        std::fs::create_dir(dir.path().join("db"))?;
        write_certificates(dir.path(), ip)?;
        let mut s = Slapd {
            dir,
            child: None,
            slapd,
            netns: netns.map(str::to_owned),
            ip,
            port: 0,
            tls_port: 0,
        };
        let mut last_error = String::new();
        // Free ports are found by binding and releasing them; another process may take one in
        // between, so try a few times.
        for _ in 0..5 {
            (s.port, s.tls_port) = match netns {
                Some(_) => (389, 636),
                None => (free_port(ip)?, free_port(ip)?),
            };
            match s.launch() {
                Ok(()) => {
                    s.ldapadd(BASE_LDIF)?;
                    s.ldapadd(EXTRA_LDIF)?;
                    return Ok(s);
                }
                Err(e) => last_error = e.to_string(),
            }
        }
        bail!("slapd did not start: {last_error}")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CA certificate that signed the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// A CA certificate that did not sign the server's certificate.
    pub fn other_ca_file(&self) -> PathBuf {
        self.path("other-ca.pem")
    }

    /// A file holding the admin password (for a bind password file).
    pub fn admin_password_file(&self) -> anyhow::Result<PathBuf> {
        let p = self.path("admin.pw");
        std::fs::write(&p, format!("{ADMIN_PASSWORD}\n"))?;
        Ok(p)
    }

    /// `ldap://IP:<port>`.
    pub fn ldap_url(&self) -> String {
        format!("ldap://{}", SocketAddr::new(self.ip, self.port))
    }

    /// `ldaps://IP:<port>`.
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://{}", SocketAddr::new(self.ip, self.tls_port))
    }

    /// A command that runs `program` in slapd's namespace.
    fn command(&self, program: &Path) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    fn tool(&self, name: &str) -> anyhow::Result<Command> {
        let p = find_program(name).with_context(|| format!("{name} is not installed"))?;
        Ok(self.command(&p))
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let d = self.dir.path().to_path_buf();
        let conf = d.join("slapd.conf");
        std::fs::write(&conf, slapd_conf(&d))?;
        let log = std::fs::File::create(d.join("slapd.log"))?;
        let log2 = log.try_clone()?;
        // -d 0: stay in the foreground, so the PID is ours to kill.
        let child = self
            .command(&self.slapd.clone())
            .arg("-f")
            .arg(&conf)
            .arg("-h")
            .arg(format!("{}/ {}/", self.ldap_url(), self.ldaps_url()))
            .args(["-d", "0"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .context("spawn slapd")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                let log = std::fs::read_to_string(d.join("slapd.log")).unwrap_or_default();
                bail!("slapd exited with {status}: {log}");
            }
            let ok = self
                .tool("ldapsearch")?
                .args(["-x", "-H", &self.ldap_url(), "-s", "base", "-b", ""])
                .arg("namingContexts")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop();
        bail!("slapd did not answer within 10 s")
    }

    /// Stops slapd (SIGKILL to our child, then reaped: no zombie left).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts slapd again on the same address and ports with the same database.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.launch()
    }

    fn run_ldif(&self, tool: &str, file: &str, ldif: &str) -> anyhow::Result<()> {
        let path = self.path(file);
        std::fs::write(&path, ldif)?;
        let out = self
            .tool(tool)?
            .args(["-x", "-H", &self.ldap_url(), "-D", ADMIN_DN, "-w"])
            .arg(ADMIN_PASSWORD)
            .arg("-f")
            .arg(&path)
            .output()
            .with_context(|| format!("run {tool}"))?;
        if !out.status.success() {
            bail!("{tool}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// Adds entries with `ldapadd` as the admin.
    pub fn ldapadd(&self, ldif: &str) -> anyhow::Result<()> {
        self.run_ldif("ldapadd", "add.ldif", ldif)
    }

    /// Applies LDIF change records with `ldapmodify` as the admin.
    pub fn ldapmodify(&self, ldif: &str) -> anyhow::Result<()> {
        self.run_ldif("ldapmodify", "change.ldif", ldif)
    }

    /// Adds `uid` to the groupOfNames `group` (and so `group` to its memberOf).
    pub fn add_member(&self, group: &str, uid: &str) -> anyhow::Result<()> {
        self.ldapmodify(&format!(
            "dn: cn={group},ou=groups,{BASE}\nchangetype: modify\nadd: member\nmember: uid={uid},ou=people,{BASE}\n"
        ))
    }

    /// Removes `uid` from the groupOfNames `group`.
    pub fn remove_member(&self, group: &str, uid: &str) -> anyhow::Result<()> {
        self.ldapmodify(&format!(
            "dn: cn={group},ou=groups,{BASE}\nchangetype: modify\ndelete: member\nmember: uid={uid},ou=people,{BASE}\n"
        ))
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn free_port(ip: IpAddr) -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind(SocketAddr::new(ip, 0)).context("bind a free port")?;
    Ok(l.local_addr()?.port())
}

fn slapd_conf(d: &Path) -> String {
    let d = d.display();
    format!(
        r#"include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
pidfile {d}/slapd.pid
argsfile {d}/slapd.args
TLSCertificateFile {d}/cert.pem
TLSCertificateKeyFile {d}/key.pem
database mdb
maxsize 10485760
suffix "{BASE}"
rootdn "{ADMIN_DN}"
rootpw {ADMIN_PASSWORD}
directory {d}/db
index objectClass,member,memberUid,uid eq
# Everyone but the rootdn gets at most 10 entries per search unless it pages (RFC 2696):
# proves that lookups page.
limits * size.soft=10 size.hard=10 size.prtotal=unlimited
overlay memberof
memberof-group-oc groupOfNames
memberof-member-ad member
memberof-memberof-ad memberOf
memberof-refint TRUE
"#
    )
}

/// A CA, a server certificate for `ip` (and localhost) signed by it, and an unrelated CA.
fn write_certificates(d: &Path, ip: IpAddr) -> anyhow::Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "eastwall lab LDAP CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut server = CertificateParams::new(vec![ip.to_string(), "localhost".to_owned()])?;
    server
        .distinguished_name
        .push(DnType::CommonName, ip.to_string());
    let cert = server.signed_by(&key, &issuer)?;

    let other_key = KeyPair::generate()?;
    let mut other = CertificateParams::new(Vec::<String>::new())?;
    other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    other
        .distinguished_name
        .push(DnType::CommonName, "some other CA");
    let other_cert = other.self_signed(&other_key)?;

    std::fs::write(d.join("ca.pem"), ca_cert.pem())?;
    std::fs::write(d.join("cert.pem"), cert.pem())?;
    std::fs::write(d.join("key.pem"), key.serialize_pem())?;
    std::fs::write(d.join("other-ca.pem"), other_cert.pem())?;
    Ok(())
}
