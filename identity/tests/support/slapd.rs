//! A throwaway slapd: a temp dir with its config, database and certificates, listening on
//! free loopback ports for `ldap://` (StartTLS capable) and `ldaps://`, loaded with
//! `testdata/ldap/*.ldif` through `ldapadd` (online, so the memberof overlay fills
//! `memberOf`). Killed by PID on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The directory's suffix.
pub(crate) const BASE: &str = "dc=example,dc=org";
/// The administrator (rootdn) of the test directory.
pub(crate) const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
/// The administrator's password.
pub(crate) const ADMIN_PASSWORD: &str = "secret";

/// A running slapd.
pub(crate) struct Slapd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    slapd: PathBuf,
    /// Port of `ldap://127.0.0.1:<port>`.
    pub(crate) port: u16,
    /// Port of `ldaps://127.0.0.1:<port>`.
    pub(crate) tls_port: u16,
}

/// Where a program is, looking in PATH and the sbin directories (which a non-root PATH lacks).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local address").port()
}

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/ldap")
}

impl Slapd {
    /// Starts slapd with the test data, or returns `None` (after saying why) if slapd is not
    /// installed and CI is not set. In CI a missing slapd fails the test.
    pub(crate) fn start() -> Option<Slapd> {
        let Some(slapd) = find_program("slapd") else {
            assert!(
                !in_ci(),
                "slapd is not installed but CI is set: run scripts/setup-debian.sh (Debian packages slapd, ldap-utils)"
            );
            eprintln!(
                "SKIPPED: slapd is not installed (Debian: scripts/setup-debian.sh installs slapd and ldap-utils); set CI=true to make this a failure"
            );
            return None;
        };
        assert!(
            find_program("ldapadd").is_some(),
            "slapd is installed but ldapadd is not: install Debian's ldap-utils"
        );
        let dir = tempfile::Builder::new()
            .prefix("eastwall-slapd.")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir(dir.path().join("db")).expect("db dir");
        write_certificates(dir.path());
        let mut s = Slapd {
            dir,
            child: None,
            slapd,
            port: 0,
            tls_port: 0,
        };
        let mut last_error = String::new();
        // Free ports are found by binding and releasing them; another process may take one in
        // between, so try a few times.
        for _ in 0..5 {
            s.port = free_port();
            s.tls_port = free_port();
            match s.launch() {
                Ok(()) => {
                    s.ldapadd_file(&testdata().join("base.ldif"));
                    s.ldapadd_file(&testdata().join("extra.ldif"));
                    return Some(s);
                }
                Err(e) => last_error = e,
            }
        }
        panic!("slapd did not start: {last_error}");
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CA certificate that signed the server's certificate.
    pub(crate) fn ca_file(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// A CA certificate that did not sign the server's certificate.
    pub(crate) fn other_ca_file(&self) -> PathBuf {
        self.path("other-ca.pem")
    }

    /// A file holding the admin password (for a bind_password_file).
    pub(crate) fn admin_password_file(&self) -> PathBuf {
        let p = self.path("admin.pw");
        std::fs::write(&p, format!("{ADMIN_PASSWORD}\n")).expect("write password file");
        p
    }

    /// `ldap://127.0.0.1:<port>`.
    pub(crate) fn ldap_url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// `ldaps://127.0.0.1:<port>`.
    pub(crate) fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.tls_port)
    }

    fn launch(&mut self) -> Result<(), String> {
        let d = self.dir.path();
        let conf = d.join("slapd.conf");
        std::fs::write(&conf, slapd_conf(d)).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(d.join("slapd.log")).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        // -d 0: stay in the foreground, so the PID is ours to kill.
        let child = Command::new(&self.slapd)
            .arg("-f")
            .arg(&conf)
            .arg("-h")
            .arg(format!(
                "ldap://127.0.0.1:{}/ ldaps://127.0.0.1:{}/",
                self.port, self.tls_port
            ))
            .args(["-d", "0"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("spawn slapd: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                let log = std::fs::read_to_string(d.join("slapd.log")).unwrap_or_default();
                return Err(format!("slapd exited with {status}: {log}"));
            }
            let ok = Command::new("ldapsearch")
                .args([
                    "-x",
                    "-H",
                    &self.ldap_url(),
                    "-s",
                    "base",
                    "-b",
                    "",
                    "namingContexts",
                ])
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
        Err("slapd did not answer within 10 s".to_owned())
    }

    /// Stops slapd (SIGKILL to our child, then reaped: no zombie left).
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts slapd again on the same ports with the same database.
    pub(crate) fn restart(&mut self) {
        self.stop();
        self.launch().expect("slapd restarts");
    }

    fn ldapadd_file(&self, file: &Path) {
        let out = Command::new("ldapadd")
            .args([
                "-x",
                "-H",
                &self.ldap_url(),
                "-D",
                ADMIN_DN,
                "-w",
                ADMIN_PASSWORD,
                "-f",
            ])
            .arg(file)
            .output()
            .expect("run ldapadd");
        assert!(
            out.status.success(),
            "ldapadd {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Applies LDIF change records with `ldapmodify` as the admin.
    pub(crate) fn ldapmodify(&self, ldif: &str) {
        let file = self.path("change.ldif");
        std::fs::write(&file, ldif).expect("write ldif");
        let out = Command::new("ldapmodify")
            .args([
                "-x",
                "-H",
                &self.ldap_url(),
                "-D",
                ADMIN_DN,
                "-w",
                ADMIN_PASSWORD,
                "-f",
            ])
            .arg(&file)
            .output()
            .expect("run ldapmodify");
        assert!(
            out.status.success(),
            "ldapmodify: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Adds entries with `ldapadd` as the admin.
    pub(crate) fn ldapadd(&self, ldif: &str) {
        let file = self.path("add.ldif");
        std::fs::write(&file, ldif).expect("write ldif");
        self.ldapadd_file(&file);
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
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

/// A CA, a server certificate for 127.0.0.1 and localhost signed by it, and an unrelated CA.
fn write_certificates(d: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "eastwall test LDAP CA");
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().expect("server key");
    let mut server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server params");
    server
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let cert = server.signed_by(&key, &issuer).expect("server certificate");

    let other_key = KeyPair::generate().expect("other CA key");
    let mut other = CertificateParams::new(Vec::<String>::new()).expect("other CA params");
    other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    other
        .distinguished_name
        .push(DnType::CommonName, "some other CA");
    let other_cert = other.self_signed(&other_key).expect("other CA certificate");

    std::fs::write(d.join("ca.pem"), ca_cert.pem()).expect("write ca.pem");
    std::fs::write(d.join("cert.pem"), cert.pem()).expect("write cert.pem");
    std::fs::write(d.join("key.pem"), key.serialize_pem()).expect("write key.pem");
    std::fs::write(d.join("other-ca.pem"), other_cert.pem()).expect("write other-ca.pem");
}
