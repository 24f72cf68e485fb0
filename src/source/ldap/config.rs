//! `[source.ldap]`: the keys as written, their defaults per directory flavour,
//! and validation into [`LdapSettings`]. Nothing here opens a socket.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::config::{ConfigError, parse_duration};
use crate::model::STANDARD_FIELDS;

/// One value or a list of values.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single string.
    One(String),
    /// Several strings.
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// Which directory's conventions supply the defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flavor {
    /// OpenLDAP and most RFC 4519 directories: `inetOrgPerson`, `entryUUID`,
    /// `groupOfNames`/`groupOfUniqueNames`.
    #[default]
    Openldap,
    /// Microsoft Active Directory: `objectGUID`, `userPrincipalName`/
    /// `sAMAccountName`, `userAccountControl`, `group`.
    ActiveDirectory,
}

/// `[source.ldap]` as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// `ldap://host[:port]` or `ldaps://host[:port]`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS.
    #[serde(default)]
    pub starttls: bool,
    /// PEM file with the CA certificate(s) to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate. Dangerous: test CAs only.
    #[serde(default)]
    pub tls_insecure_skip_verify: bool,
    /// DN to bind as; absent: anonymous.
    pub bind_dn: Option<String>,
    /// Environment variable holding the bind password.
    pub bind_password_env: Option<String>,
    /// File holding the bind password (first line).
    pub bind_password_file: Option<PathBuf>,
    /// Base DN(s) searched for people (subtree).
    pub user_base: OneOrMany,
    /// Filter selecting people.
    pub user_filter: Option<String>,
    /// Base DN(s) searched for groups; absent: no groups are loaded.
    pub group_base: Option<OneOrMany>,
    /// Filter selecting groups.
    pub group_filter: Option<String>,
    /// Entries per page (RFC 2696 paged results); 0 turns paging off.
    pub page_size: Option<u32>,
    /// Timeout for connecting and for each LDAP operation.
    pub timeout: Option<String>,
    /// `openldap` (default) or `active_directory`.
    #[serde(default)]
    pub flavor: Flavor,
    /// Source field → LDAP attribute (or a list: the first one with a value wins).
    #[serde(default)]
    pub attributes: BTreeMap<String, OneOrMany>,
    /// Attribute holding a group's stable id.
    pub group_id_attribute: Option<String>,
    /// Attribute holding a group's name.
    pub group_name_attribute: Option<String>,
    /// Attributes of a group entry listing member DNs.
    pub member_attributes: Option<Vec<String>>,
    /// Attribute of a user entry listing the DNs of its groups; `""` ignores it.
    pub member_of_attribute: Option<String>,
    /// Resolve groups nested in groups to their users (default true).
    #[serde(default = "yes")]
    pub nested_groups: bool,
}

fn yes() -> bool {
    true
}

/// Where the bind password comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PasswordSource {
    /// An environment variable, by name.
    Env(String),
    /// A file whose first line is the password.
    File(PathBuf),
}

impl fmt::Display for PasswordSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordSource::Env(n) => write!(f, "environment variable `{n}`"),
            PasswordSource::File(p) => write!(f, "file {}", p.display()),
        }
    }
}

impl PasswordSource {
    /// Read the password. Errors name the source, never the value. The first
    /// line is taken as it is (only the line ending is removed: a password may
    /// start or end with a space).
    pub fn read(&self) -> Result<SecretString, String> {
        let raw = match self {
            PasswordSource::Env(name) => std::env::var(name).map_err(|e| match e {
                std::env::VarError::NotPresent => {
                    format!(
                        "the LDAP bind password variable `{name}` is not set in the environment"
                    )
                }
                std::env::VarError::NotUnicode(_) => {
                    format!("the LDAP bind password variable `{name}` is not valid UTF-8")
                }
            })?,
            PasswordSource::File(p) => std::fs::read_to_string(p).map_err(|e| {
                format!(
                    "cannot read the LDAP bind password file {}: {e}",
                    p.display()
                )
            })?,
        };
        let line = raw.split('\n').next().unwrap_or("");
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            // An empty password makes a simple bind "unauthenticated": it
            // would succeed without checking anything.
            return Err(format!("the LDAP bind password from {self} is empty"));
        }
        Ok(SecretString::from(line.to_owned()))
    }
}

/// How the connection is secured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tls {
    /// Plain LDAP (only allowed to a loopback host).
    None,
    /// `ldap://` upgraded with StartTLS.
    StartTls,
    /// `ldaps://`.
    Ldaps,
}

/// Resolved `[source.ldap]`.
#[derive(Clone, Debug)]
pub struct LdapSettings {
    /// Server URL.
    pub url: String,
    /// Transport security.
    pub tls: Tls,
    /// CA file replacing the system roots.
    pub ca_file: Option<PathBuf>,
    /// Skip certificate verification.
    pub insecure_skip_verify: bool,
    /// Bind DN and password source; `None`: anonymous.
    pub bind: Option<(String, PasswordSource)>,
    /// People bases.
    pub user_bases: Vec<String>,
    /// People filter.
    pub user_filter: String,
    /// Group bases (empty: no groups).
    pub group_bases: Vec<String>,
    /// Group filter.
    pub group_filter: String,
    /// Page size; 0 = no paging.
    pub page_size: u32,
    /// Connect and per-operation timeout.
    pub timeout: Duration,
    /// Field → attribute alternatives (`id` and `active` included).
    pub attributes: BTreeMap<String, Vec<String>>,
    /// Group id attribute.
    pub group_id_attribute: String,
    /// Group name attribute.
    pub group_name_attribute: String,
    /// Member DN attributes of groups.
    pub member_attributes: Vec<String>,
    /// memberOf attribute of users, if used.
    pub member_of_attribute: Option<String>,
    /// Flatten nested groups.
    pub nested_groups: bool,
}

/// Default page size.
pub const DEFAULT_PAGE_SIZE: u32 = 500;

fn default_attributes(flavor: Flavor) -> BTreeMap<String, Vec<String>> {
    let pairs: &[(&str, &[&str])] = match flavor {
        Flavor::Openldap => &[
            ("id", &["entryUUID"]),
            ("user_name", &["uid"]),
            ("given_name", &["givenName"]),
            ("family_name", &["sn"]),
            ("display_name", &["displayName", "cn"]),
            ("email", &["mail"]),
            ("title", &["title"]),
            ("department", &["departmentNumber", "ou"]),
            ("organization", &["o"]),
            ("phone", &["telephoneNumber"]),
            ("preferred_language", &["preferredLanguage"]),
        ],
        Flavor::ActiveDirectory => &[
            ("id", &["objectGUID"]),
            ("user_name", &["userPrincipalName", "sAMAccountName"]),
            ("given_name", &["givenName"]),
            ("family_name", &["sn"]),
            ("display_name", &["displayName", "cn"]),
            ("email", &["mail"]),
            ("title", &["title"]),
            ("department", &["department"]),
            ("organization", &["company"]),
            ("phone", &["telephoneNumber"]),
            ("preferred_language", &["preferredLanguage"]),
            ("active", &["userAccountControl"]),
        ],
    };
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.iter().map(|s| (*s).to_owned()).collect()))
        .collect()
}

fn valid_attribute_name(a: &str) -> bool {
    // RFC 4512 descr (letters, digits, hyphens, starting with a letter) or a
    // numeric OID; an option such as `;binary` is allowed.
    let base = a.split(';').next().unwrap_or("");
    let descr = base.starts_with(|c: char| c.is_ascii_alphabetic())
        && base.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let oid = !base.is_empty()
        && base
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    descr || oid
}

fn is_loopback_host(host: &url::Host<&str>) -> bool {
    match host {
        // ldap:// is not a "special" URL scheme: its IP hosts parse as names.
        url::Host::Domain(d) => {
            d.eq_ignore_ascii_case("localhost")
                || d.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// Validate `[source.ldap]`; relative paths resolve against `base_dir`.
pub fn resolve(c: &LdapConfig, base_dir: &Path) -> Result<LdapSettings, ConfigError> {
    let key = |k: &str| format!("source.ldap.{k}");
    let url = url::Url::parse(c.url.trim())
        .map_err(|e| ConfigError::at(key("url"), format!("not a valid URL ({e})")))?;
    let host = url
        .host()
        .ok_or_else(|| ConfigError::at(key("url"), "has no host"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::at(
            key("url"),
            "must not carry credentials: use bind_dn and bind_password_env or bind_password_file",
        ));
    }
    if !(url.path().is_empty() || url.path() == "/") || url.query().is_some() {
        return Err(ConfigError::at(
            key("url"),
            "must be only scheme, host and port (put base DNs in user_base and group_base)",
        ));
    }
    let tls = match (url.scheme(), c.starttls) {
        ("ldaps", false) => Tls::Ldaps,
        ("ldaps", true) => {
            return Err(ConfigError::at(
                key("starttls"),
                "StartTLS is for ldap:// URLs; ldaps:// is TLS already",
            ));
        }
        ("ldap", true) => Tls::StartTls,
        ("ldap", false) => {
            if !is_loopback_host(&host) {
                return Err(ConfigError::at(
                    key("url"),
                    "plain ldap:// is only allowed to a loopback host (the bind password would cross the network in clear): use ldaps:// or starttls = true",
                ));
            }
            Tls::None
        }
        (other, _) => {
            return Err(ConfigError::at(
                key("url"),
                format!("scheme `{other}` is not ldap or ldaps"),
            ));
        }
    };
    if tls == Tls::None && (c.ca_file.is_some() || c.tls_insecure_skip_verify) {
        return Err(ConfigError::at(
            key("ca_file"),
            "ca_file and tls_insecure_skip_verify need ldaps:// or starttls = true",
        ));
    }
    let bind = match (&c.bind_dn, &c.bind_password_env, &c.bind_password_file) {
        (None, None, None) => None,
        (None, _, _) => {
            return Err(ConfigError::at(
                key("bind_dn"),
                "a bind password is configured but no bind_dn",
            ));
        }
        (Some(_), Some(_), Some(_)) => {
            return Err(ConfigError::at(
                key("bind_password_env"),
                "set either bind_password_env or bind_password_file, not both",
            ));
        }
        (Some(_), None, None) => {
            return Err(ConfigError::at(
                key("bind_dn"),
                "no bind password source: set bind_password_env (an environment variable name) or bind_password_file (a path)",
            ));
        }
        (Some(dn), env, file) => {
            if dn.trim().is_empty() {
                return Err(ConfigError::at(key("bind_dn"), "must not be empty"));
            }
            let source = match (env, file) {
                (Some(name), _) => {
                    if name.is_empty() || name.contains('=') || name.contains('\0') {
                        return Err(ConfigError::at(
                            key("bind_password_env"),
                            "must be the name of an environment variable",
                        ));
                    }
                    PasswordSource::Env(name.clone())
                }
                (None, Some(p)) => PasswordSource::File(base_dir.join(p)),
                (None, None) => unreachable!("handled above"),
            };
            Some((dn.trim().to_owned(), source))
        }
    };
    let bases = |k: &str, v: Option<&OneOrMany>| -> Result<Vec<String>, ConfigError> {
        let v = v.cloned().map(OneOrMany::into_vec).unwrap_or_default();
        if v.iter().any(|b| b.trim().is_empty() || !b.contains('=')) {
            return Err(ConfigError::at(
                key(k),
                "every base must be a DN such as `ou=people,dc=example,dc=org`",
            ));
        }
        Ok(v.into_iter().map(|b| b.trim().to_owned()).collect())
    };
    let user_bases = bases("user_base", Some(&c.user_base))?;
    if user_bases.is_empty() {
        return Err(ConfigError::at(
            key("user_base"),
            "needs at least one base DN",
        ));
    }
    let group_bases = bases("group_base", c.group_base.as_ref())?;
    let (user_filter, group_filter) = match c.flavor {
        Flavor::Openldap => (
            "(objectClass=inetOrgPerson)",
            "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))",
        ),
        Flavor::ActiveDirectory => (
            "(&(objectCategory=person)(objectClass=user))",
            "(objectClass=group)",
        ),
    };
    let filter = |k: &str, v: &Option<String>, d: &str| -> Result<String, ConfigError> {
        let f = v.as_deref().unwrap_or(d).trim().to_owned();
        ldap3::parse_filter(&f).map_err(|_| {
            ConfigError::at(
                key(k),
                format!("`{f}` is not a valid LDAP filter (RFC 4515)"),
            )
        })?;
        Ok(f)
    };
    let user_filter = filter("user_filter", &c.user_filter, user_filter)?;
    let group_filter = filter("group_filter", &c.group_filter, group_filter)?;
    let page_size = c.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
    if page_size > 100_000 {
        return Err(ConfigError::at(
            key("page_size"),
            "must be at most 100000 (0 turns paging off)",
        ));
    }
    let timeout = match &c.timeout {
        Some(t) => parse_duration(t).map_err(|m| ConfigError::at(key("timeout"), m))?,
        None => Duration::from_secs(30),
    };
    if timeout.is_zero() {
        return Err(ConfigError::at(key("timeout"), "must be above zero"));
    }
    let mut attributes = default_attributes(c.flavor);
    for (field, attrs) in &c.attributes {
        let k = key(&format!("attributes.{field}"));
        let custom_ok = !field.is_empty()
            && field
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
        let known = field == "id" || field == "active" || STANDARD_FIELDS.contains(&field.as_str());
        if !known && !custom_ok {
            return Err(ConfigError::at(
                k,
                "a field name is letters, digits and `_` (a standard field or a custom one for templates)",
            ));
        }
        let list = attrs.clone().into_vec();
        if list.is_empty() || (list.len() == 1 && list[0].is_empty()) {
            if field == "id" {
                return Err(ConfigError::at(k, "the id attribute cannot be dropped"));
            }
            attributes.remove(field);
            continue;
        }
        if let Some(bad) = list.iter().find(|a| !valid_attribute_name(a)) {
            return Err(ConfigError::at(
                k,
                format!("`{bad}` is not an LDAP attribute name"),
            ));
        }
        attributes.insert(field.clone(), list);
    }
    let one_attr = |k: &str, v: &Option<String>, d: &str| -> Result<String, ConfigError> {
        let a = v.as_deref().unwrap_or(d).trim().to_owned();
        if !valid_attribute_name(&a) {
            return Err(ConfigError::at(
                key(k),
                format!("`{a}` is not an LDAP attribute name"),
            ));
        }
        Ok(a)
    };
    let id_default = match c.flavor {
        Flavor::Openldap => "entryUUID",
        Flavor::ActiveDirectory => "objectGUID",
    };
    let group_id_attribute = one_attr("group_id_attribute", &c.group_id_attribute, id_default)?;
    let group_name_attribute = one_attr("group_name_attribute", &c.group_name_attribute, "cn")?;
    let member_attributes = match &c.member_attributes {
        Some(v) => v.clone(),
        None => match c.flavor {
            Flavor::Openldap => vec!["member".into(), "uniqueMember".into()],
            Flavor::ActiveDirectory => vec!["member".into()],
        },
    };
    if let Some(bad) = member_attributes.iter().find(|a| !valid_attribute_name(a)) {
        return Err(ConfigError::at(
            key("member_attributes"),
            format!("`{bad}` is not an LDAP attribute name"),
        ));
    }
    let member_of_attribute = match c.member_of_attribute.as_deref().map(str::trim) {
        Some("") => None,
        Some(a) if !valid_attribute_name(a) => {
            return Err(ConfigError::at(
                key("member_of_attribute"),
                format!("`{a}` is not an LDAP attribute name"),
            ));
        }
        Some(a) => Some(a.to_owned()),
        None => Some("memberOf".to_owned()),
    };
    Ok(LdapSettings {
        url: url.as_str().trim_end_matches('/').to_owned(),
        tls,
        ca_file: c.ca_file.as_ref().map(|p| base_dir.join(p)),
        insecure_skip_verify: c.tls_insecure_skip_verify,
        bind,
        user_bases,
        user_filter,
        group_bases,
        group_filter,
        page_size,
        timeout,
        attributes,
        group_id_attribute,
        group_name_attribute,
        member_attributes,
        member_of_attribute,
        nested_groups: c.nested_groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LdapSettings, ConfigError> {
        let c: LdapConfig = toml::from_str(text).map_err(|e| ConfigError::at("", e.to_string()))?;
        resolve(&c, Path::new("/etc/scimsync"))
    }

    const MIN: &str =
        "url = \"ldap://127.0.0.1:3389\"\nuser_base = \"ou=people,dc=example,dc=org\"\n";

    #[test]
    fn openldap_defaults() {
        let s = parse(MIN).unwrap();
        assert_eq!(s.tls, Tls::None);
        assert_eq!(s.user_bases, vec!["ou=people,dc=example,dc=org"]);
        assert!(s.group_bases.is_empty());
        assert_eq!(s.attributes["id"], vec!["entryUUID"]);
        assert_eq!(s.attributes["user_name"], vec!["uid"]);
        assert!(!s.attributes.contains_key("active"));
        assert_eq!(s.page_size, DEFAULT_PAGE_SIZE);
        assert_eq!(s.member_attributes, vec!["member", "uniqueMember"]);
        assert_eq!(s.member_of_attribute.as_deref(), Some("memberOf"));
        assert!(s.bind.is_none());
        assert!(s.nested_groups);
    }

    #[test]
    fn active_directory_defaults_and_overrides() {
        let text = "url = \"ldaps://dc1.corp.example.com\"\nuser_base = [\"OU=Staff,DC=corp,DC=example,DC=com\", \"OU=Contractors,DC=corp,DC=example,DC=com\"]\nflavor = \"active_directory\"\nbind_dn = \"CN=svc,DC=corp\"\nbind_password_file = \"pw\"\n[attributes]\nuser_name = \"sAMAccountName\"\ncost_center = \"extensionAttribute1\"\ntitle = \"\"\n";
        let s = parse(text).unwrap();
        assert_eq!(s.tls, Tls::Ldaps);
        assert_eq!(s.user_bases.len(), 2);
        assert_eq!(s.attributes["id"], vec!["objectGUID"]);
        assert_eq!(s.attributes["active"], vec!["userAccountControl"]);
        assert_eq!(s.attributes["user_name"], vec!["sAMAccountName"]);
        assert_eq!(s.attributes["cost_center"], vec!["extensionAttribute1"]);
        assert!(!s.attributes.contains_key("title"));
        assert_eq!(s.group_id_attribute, "objectGUID");
        assert_eq!(
            s.bind,
            Some((
                "CN=svc,DC=corp".into(),
                PasswordSource::File("/etc/scimsync/pw".into())
            ))
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases: &[(&str, &str)] = &[
            (
                "url = \"ldap://ldap.example.com\"\nuser_base = \"dc=x\"\n",
                "source.ldap.url",
            ),
            (
                "url = \"http://127.0.0.1\"\nuser_base = \"dc=x\"\n",
                "source.ldap.url",
            ),
            (
                "url = \"ldap://u:p@127.0.0.1\"\nuser_base = \"dc=x\"\n",
                "source.ldap.url",
            ),
            (
                "url = \"ldaps://h\"\nstarttls = true\nuser_base = \"dc=x\"\n",
                "source.ldap.starttls",
            ),
            (
                "url = \"ldap://127.0.0.1\"\nuser_base = \"people\"\n",
                "source.ldap.user_base",
            ),
            (
                "url = \"ldap://127.0.0.1\"\nuser_base = []\n",
                "source.ldap.user_base",
            ),
            (
                "url = \"ldap://127.0.0.1\"\nuser_base = \"dc=x\"\nuser_filter = \"(uid=*\"\n",
                "source.ldap.user_filter",
            ),
            (
                "url = \"ldap://127.0.0.1\"\nuser_base = \"dc=x\"\nbind_dn = \"cn=a\"\n",
                "source.ldap.bind_dn",
            ),
            (
                "url = \"ldap://127.0.0.1\"\nuser_base = \"dc=x\"\nbind_password_env = \"P\"\n",
                "source.ldap.bind_dn",
            ),
            (
                "url = \"ldap://127.0.0.1\"\nuser_base = \"dc=x\"\nbind_dn = \"cn=a\"\nbind_password_env = \"P\"\nbind_password_file = \"f\"\n",
                "source.ldap.bind_password_env",
            ),
            (
                "url = \"ldap://127.0.0.1\"\nuser_base = \"dc=x\"\ntimeout = \"0s\"\n",
                "source.ldap.timeout",
            ),
            (
                "url = \"ldap://127.0.0.1\"\nuser_base = \"dc=x\"\npage_size = 1000000\n",
                "source.ldap.page_size",
            ),
            (
                "url = \"ldap://127.0.0.1\"\nuser_base = \"dc=x\"\n[attributes]\nemail = \"m a i l\"\n",
                "source.ldap.attributes.email",
            ),
            (
                "url = \"ldap://127.0.0.1\"\nuser_base = \"dc=x\"\n[attributes]\nid = \"\"\n",
                "source.ldap.attributes.id",
            ),
            (
                "url = \"ldap://127.0.0.1\"\nuser_base = \"dc=x\"\ntls_insecure_skip_verify = true\n",
                "source.ldap.ca_file",
            ),
        ];
        for (text, want) in cases {
            match parse(text) {
                Ok(_) => panic!("accepted: {text}"),
                Err(e) => assert_eq!(e.key, *want, "{text}: {e}"),
            }
        }
    }

    #[test]
    fn password_from_file_keeps_inner_spaces_and_refuses_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, " se cret \r\nsecond\n").unwrap();
        use secrecy::ExposeSecret;
        let pw = PasswordSource::File(p.clone()).read().unwrap();
        assert_eq!(pw.expose_secret(), " se cret ");
        std::fs::write(&p, "\n").unwrap();
        let e = PasswordSource::File(p).read().unwrap_err();
        assert!(e.contains("is empty"), "{e}");
        let e = PasswordSource::Env("SCIMSYNC_TEST_SURELY_UNSET_LDAP_PW".into())
            .read()
            .unwrap_err();
        assert!(e.contains("SCIMSYNC_TEST_SURELY_UNSET_LDAP_PW"), "{e}");
    }

    #[test]
    fn the_active_directory_example_config_is_valid() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/ldap/scimsync.ad.example.toml"
        ));
        let s = crate::config::Settings::load(path).unwrap();
        assert_eq!(s.source.kind, crate::config::SourceKind::Ldap);
        let l = s.source.ldap.expect("ldap settings");
        assert_eq!(l.tls, Tls::Ldaps);
        assert_eq!(l.user_bases.len(), 2);
        assert_eq!(l.attributes["user_name"], vec!["userPrincipalName"]);
        assert_eq!(l.attributes["active"], vec!["userAccountControl"]);
        assert_eq!(l.attributes["cost_center"], vec!["extensionAttribute1"]);
        assert_eq!(
            l.bind.map(|(_, p)| p),
            Some(PasswordSource::Env("SCIMSYNC_LDAP_PASSWORD".into()))
        );
    }

    #[test]
    fn the_commented_ldap_block_of_the_example_config_is_valid() {
        // Uncomment the [source.ldap] block of the reference config and load
        // it in place of the csv source: every documented key must parse.
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/scimsync.example.toml"
        ))
        .unwrap();
        let start = text.find("# [source.ldap]").expect("the LDAP block");
        let block: String = text[start..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .filter(|l| l.starts_with("# ") && !l.starts_with("# #"))
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        for key in [
            "url",
            "starttls",
            "ca_file",
            "tls_insecure_skip_verify",
            "bind_dn",
            "bind_password_env",
            "user_base",
            "user_filter",
            "group_base",
            "group_filter",
            "page_size",
            "timeout",
            "flavor",
            "group_id_attribute",
            "group_name_attribute",
            "member_attributes",
            "member_of_attribute",
            "nested_groups",
        ] {
            assert!(
                block.contains(&format!("\n{key} = ")),
                "{key} is not documented"
            );
        }
        let table: toml::Table = toml::from_str(&block).unwrap();
        let c: LdapConfig = table["source"]["ldap"].clone().try_into().unwrap();
        let s = resolve(&c, Path::new("/etc/scimsync")).unwrap();
        assert_eq!(s.attributes["cost_center"], vec!["extensionAttribute1"]);
    }
}
