//! A private OpenLDAP `slapd` for tests: a temporary directory with a
//! generated `slapd.conf` (mdb backend; core, cosine, inetorgperson, nis and
//! the test-only AD schema), data loaded with `slapadd` before start, listening
//! on 127.0.0.1 on free ports, killed on drop.
//!
//! If `slapd` is not installed the tests fail and say how to install it,
//! unless `SCIMSYNC_SKIP_LDAP=1` is set (then they print a loud skip line).

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

/// The suffix of the test directory.
pub const SUFFIX: &str = "dc=example,dc=org";
/// The service account scimsync binds as (not the rootdn: limits apply to it).
pub const BIND_DN: &str = "cn=scimsync,ou=service,dc=example,dc=org";
/// Its password (in the LDIF fixture).
pub const BIND_PASSWORD: &str = "bind-secret";
/// The rootdn's password (for changes made by tests with ldapmodify).
const ADMIN_PASSWORD: &str = "admin-secret";
/// The server's size limit: below the large test's entry count.
pub const SIZE_LIMIT: usize = 500;

/// The committed LDIF fixture.
pub fn fixture_ldif() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/ldap/directory.ldif"
    ))
    .expect("fixtures/ldap/directory.ldif")
}

fn slapd_binary(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// `None` (after a loud skip line) when slapd is missing and skipping is
/// allowed; panics with install instructions when it is missing otherwise.
fn binaries() -> Option<(PathBuf, PathBuf)> {
    match (slapd_binary("slapd"), slapd_binary("slapadd")) {
        (Some(d), Some(a)) => Some((d, a)),
        _ => {
            if std::env::var("SCIMSYNC_SKIP_LDAP").as_deref() == Ok("1") {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!(
                        "!!!!! SKIPPED: LDAP test without slapd (SCIMSYNC_SKIP_LDAP=1). Install it: apt-get install -y slapd ldap-utils !!!!!"
                    );
                }
                None
            } else {
                panic!(
                    "the LDAP tests need OpenLDAP's slapd and slapadd, which are not installed: \
                     run `DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slapd ldap-utils` \
                     (or set SCIMSYNC_SKIP_LDAP=1 to skip these tests, loudly)"
                )
            }
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("a free port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// TLS material for the server.
pub struct ServerTls {
    /// CA certificate the server's certificate is issued by.
    pub ca: PathBuf,
    /// Server certificate (SAN IP:127.0.0.1).
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

/// A running slapd.
pub struct Slapd {
    child: Child,
    /// Its temporary directory (config, data, log).
    pub dir: TempDir,
    /// `ldap://127.0.0.1:PORT`.
    pub url: String,
    /// `ldaps://127.0.0.1:PORT` when started with TLS.
    pub ldaps_url: Option<String>,
}

impl Slapd {
    /// Start with this LDIF loaded. `None` only when skipping is allowed.
    pub fn start(ldif: &str) -> Option<Slapd> {
        Self::start_with(ldif, None)
    }

    /// Start with this LDIF and, optionally, TLS (StartTLS on the ldap://
    /// port and a separate ldaps:// port).
    pub fn start_with(ldif: &str, tls: Option<&ServerTls>) -> Option<Slapd> {
        let (slapd, slapadd) = binaries()?;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/ldap/ad-test.schema");
        let tls_conf = tls
            .map(|t| {
                format!(
                    "TLSCACertificateFile {}\nTLSCertificateFile {}\nTLSCertificateKeyFile {}\n",
                    t.ca.display(),
                    t.cert.display(),
                    t.key.display()
                )
            })
            .unwrap_or_default();
        let conf = format!(
            "include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
include {schema}
pidfile {dir}/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
{tls_conf}sizelimit size.soft={SIZE_LIMIT} size.hard={SIZE_LIMIT} size.prtotal=unlimited
database mdb
maxsize 1073741824
suffix \"{SUFFIX}\"
rootdn \"cn=admin,{SUFFIX}\"
rootpw {ADMIN_PASSWORD}
directory {data}
access to attrs=userPassword by anonymous auth by * none
access to * by dn.exact=\"{BIND_DN}\" read by * none
",
            dir = dir.path().display(),
            data = data.display(),
        );
        let conf_path = dir.path().join("slapd.conf");
        std::fs::write(&conf_path, conf).expect("slapd.conf");
        let ldif_path = dir.path().join("data.ldif");
        std::fs::write(&ldif_path, ldif).expect("data.ldif");
        let out = Command::new(&slapadd)
            .arg("-q")
            .arg("-f")
            .arg(&conf_path)
            .arg("-l")
            .arg(&ldif_path)
            .output()
            .expect("slapadd runs");
        assert!(
            out.status.success(),
            "slapadd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let url = format!("ldap://127.0.0.1:{port}");
        let mut listen = format!("{url}/");
        let ldaps_url = tls.map(|_| format!("ldaps://127.0.0.1:{}", free_port()));
        if let Some(u) = &ldaps_url {
            listen.push_str(&format!(" {u}/"));
        }
        let log = std::fs::File::create(dir.path().join("slapd.log")).expect("log file");
        let child = Command::new(&slapd)
            .arg("-f")
            .arg(&conf_path)
            .arg("-h")
            .arg(&listen)
            // -d keeps slapd in the foreground (a child we can kill).
            .arg("-d")
            .arg("0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("slapd starts");
        let s = Slapd {
            child,
            dir,
            url,
            ldaps_url,
        };
        s.wait_until_listening(port);
        Some(s)
    }

    fn wait_until_listening(&self, port: u16) {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        for _ in 0..200 {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "slapd did not start listening on {}: {}",
            self.url,
            std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
        );
    }

    /// Apply an LDIF change record as the rootdn (ldapmodify from ldap-utils).
    pub fn modify(&self, ldif: &str) {
        let path = self.dir.path().join("change.ldif");
        std::fs::write(&path, ldif).expect("change.ldif");
        let out = Command::new("ldapmodify")
            .args([
                "-x",
                "-H",
                &self.url,
                "-D",
                &format!("cn=admin,{SUFFIX}"),
                "-w",
            ])
            .arg(ADMIN_PASSWORD)
            .arg("-f")
            .arg(&path)
            .output()
            .expect("ldapmodify runs (apt-get install -y ldap-utils)");
        assert!(
            out.status.success(),
            "ldapmodify failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stop the server (a directory that is down).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the TLS test needs the openssl command (apt-get install -y openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 signed by it, and an unrelated
/// second CA, made with the openssl command in `dir`.
pub fn make_tls(dir: &Path) -> (ServerTls, PathBuf) {
    for ca in ["ca", "other-ca"] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=scimsync test {ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
    }
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext file");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
    (
        ServerTls {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        },
        dir.join("other-ca.pem"),
    )
}

/// `n` generated people under `ou=bulk` plus the suffix, the service account
/// and `ou=bulk` itself (deterministic).
pub fn bulk_ldif(n: usize) -> String {
    let mut s = format!(
        "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n\
         dn: ou=service,{SUFFIX}\nobjectClass: organizationalUnit\nou: service\n\n\
         dn: {BIND_DN}\nobjectClass: applicationProcess\nobjectClass: simpleSecurityObject\ncn: scimsync\nuserPassword: {BIND_PASSWORD}\n\n\
         dn: ou=bulk,{SUFFIX}\nobjectClass: organizationalUnit\nou: bulk\n\n"
    );
    for i in 0..n {
        s.push_str(&format!(
            "dn: uid=bulk{i:05},ou=bulk,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: bulk{i:05}\ncn: Bulk {i}\nsn: Person{i}\ngivenName: Bulk\nmail: bulk{i:05}@example.com\n\n"
        ));
    }
    s
}
