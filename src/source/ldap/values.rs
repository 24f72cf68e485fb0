//! Pure conversions for LDAP values: Active Directory GUIDs, the
//! `userAccountControl` disabled bit, DN normalisation and nested-group
//! flattening. No I/O here; everything is unit- and property-tested.

use std::collections::BTreeSet;

/// The canonical string form of a 16-byte Active Directory `objectGUID`
/// (lowercase, `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`).
///
/// AD stores the GUID in Microsoft's mixed-endian layout: the first three
/// fields are little-endian, the last eight bytes are in order. The result
/// is the same string PowerShell's `Get-ADUser` shows (lowercased).
pub fn guid_to_string(bytes: &[u8]) -> Result<String, String> {
    let b: [u8; 16] = bytes.try_into().map_err(|_| {
        format!(
            "`objectGUID` has {} bytes, not the 16 of a GUID",
            bytes.len()
        )
    })?;
    Ok(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3],
        b[2],
        b[1],
        b[0],
        b[5],
        b[4],
        b[7],
        b[6],
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    ))
}

/// `userAccountControl` → active. Bit 0x2 (`ACCOUNTDISABLE`) set means the
/// account is disabled. AD writes the value as a decimal integer (sometimes
/// negative when bit 31 is set, as a signed 32-bit number).
pub fn uac_active(value: &str) -> Result<bool, String> {
    let v = value.trim();
    let n: i64 = v
        .parse()
        .map_err(|_| format!("`userAccountControl` is `{v}`, not an integer"))?;
    if n < i64::from(i32::MIN) || n > i64::from(u32::MAX) {
        return Err(format!(
            "`userAccountControl` is `{v}`, outside the 32-bit range"
        ));
    }
    Ok(n & 0x2 == 0)
}

/// A DN in a form fit for comparison: RDNs split at unescaped commas, spaces
/// around `,`, `+` and `=` removed, attribute types and values lowercased
/// (the naming attributes in use — `cn`, `ou`, `dc`, `uid`, `o` — all match
/// case-insensitively). Escapes are kept as written.
pub fn normalize_dn(dn: &str) -> String {
    let mut out = String::with_capacity(dn.len());
    let mut rdn = String::new();
    let mut chars = dn.chars();
    let flush = |rdn: &mut String, out: &mut String| {
        // Normalise `type = value` pairs within one RDN (multi-valued with `+`).
        let parts: Vec<String> = split_unescaped(rdn, '+')
            .into_iter()
            .map(|ava| match split_once_unescaped(&ava, '=') {
                Some((t, v)) => format!("{}={}", t.trim(), v.trim()),
                None => ava.trim().to_owned(),
            })
            .collect();
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&parts.join("+").to_lowercase());
        rdn.clear();
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                rdn.push(c);
                if let Some(n) = chars.next() {
                    rdn.push(n);
                }
            }
            ',' | ';' => flush(&mut rdn, &mut out),
            _ => rdn.push(c),
        }
    }
    if !rdn.trim().is_empty() || !out.is_empty() {
        flush(&mut rdn, &mut out);
    }
    out
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let last = parts.last_mut().expect("never empty");
            last.push(c);
            if let Some(n) = chars.next() {
                last.push(n);
            }
        } else if c == sep {
            parts.push(String::new());
        } else {
            parts.last_mut().expect("never empty").push(c);
        }
    }
    parts
}

fn split_once_unescaped(s: &str, sep: char) -> Option<(String, String)> {
    let mut parts = split_unescaped(s, sep);
    if parts.len() < 2 {
        return None;
    }
    let first = parts.remove(0);
    Some((first, parts.join(&sep.to_string())))
}

/// A `uniqueMember` value may carry an optional UID after `#`
/// (`cn=ann,ou=people,dc=x#'0101'B`); the DN is what is before it.
pub fn strip_unique_member_uid(value: &str) -> &str {
    match value.rfind("#'") {
        Some(i) if value.ends_with("'B") => &value[..i],
        _ => value,
    }
}

/// The result of flattening nested groups.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Flattened<U> {
    /// For each group, its effective members: its own plus those of every
    /// group nested in it, at any depth.
    pub members: Vec<BTreeSet<U>>,
    /// Groups that are (indirectly) members of themselves. Legal in AD; the
    /// cycle is cut, every group in it gets the union of the cycle's members.
    pub cyclic: BTreeSet<usize>,
}

/// Resolve nested groups to effective user membership.
///
/// `direct[g]` are the users directly in group `g`; `children[g]` the groups
/// nested directly in `g` (indices into the same slices; out-of-range
/// indices are ignored). Cycles never loop: each group's nested groups are
/// walked once with a visited set.
pub fn flatten<U: Ord + Clone>(
    direct: &[BTreeSet<U>],
    children: &[BTreeSet<usize>],
) -> Flattened<U> {
    let n = direct.len();
    let mut out = Flattened {
        members: Vec::with_capacity(n),
        cyclic: BTreeSet::new(),
    };
    for g in 0..n {
        let mut members = direct[g].clone();
        let mut seen = vec![false; n];
        seen[g] = true;
        let mut stack: Vec<usize> = children
            .get(g)
            .map(|c| c.iter().copied().filter(|&c| c < n).collect())
            .unwrap_or_default();
        while let Some(c) = stack.pop() {
            if c == g {
                out.cyclic.insert(g);
            }
            if seen[c] {
                continue;
            }
            seen[c] = true;
            members.extend(direct[c].iter().cloned());
            if let Some(grand) = children.get(c) {
                stack.extend(grand.iter().copied().filter(|&x| x < n));
            }
        }
        out.members.push(members);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn guid_uses_the_microsoft_mixed_endian_layout() {
        // The bytes of {01020304-0506-0708-090a-0b0c0d0e0f10} as AD sends them.
        let bytes = [
            0x04, 0x03, 0x02, 0x01, 0x06, 0x05, 0x08, 0x07, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
            0x0f, 0x10,
        ];
        assert_eq!(
            guid_to_string(&bytes).unwrap(),
            "01020304-0506-0708-090a-0b0c0d0e0f10"
        );
        assert!(
            guid_to_string(&bytes[..15])
                .unwrap_err()
                .contains("15 bytes")
        );
        assert!(guid_to_string(b"abc").is_err());
    }

    #[test]
    fn uac_disabled_bit() {
        assert!(uac_active("512").unwrap()); // NORMAL_ACCOUNT
        assert!(!uac_active("514").unwrap()); // NORMAL_ACCOUNT | ACCOUNTDISABLE
        assert!(!uac_active("66050").unwrap()); // + DONT_EXPIRE_PASSWORD
        assert!(uac_active("66048").unwrap());
        assert!(!uac_active(" 2 ").unwrap());
        assert!(!uac_active("-2147483646").unwrap()); // bit 31 set, signed
        assert!(uac_active("abc").is_err());
        assert!(uac_active("").is_err());
        assert!(uac_active("99999999999").is_err());
    }

    #[test]
    fn dns_compare_case_and_space_insensitively() {
        assert_eq!(
            normalize_dn("CN=Ann Smith, OU=People,DC=Example ,dc=org"),
            "cn=ann smith,ou=people,dc=example,dc=org"
        );
        assert_eq!(
            normalize_dn("cn = Ann\\, Jr.,ou=x"),
            "cn=ann\\, jr.,ou=x",
            "an escaped comma stays inside its RDN"
        );
        assert_eq!(normalize_dn("cn=a+uid=B,dc=x"), "cn=a+uid=b,dc=x");
        assert_eq!(normalize_dn(""), "");
    }

    #[test]
    fn unique_member_uid_suffix_is_stripped() {
        assert_eq!(strip_unique_member_uid("cn=a,dc=x#'0101'B"), "cn=a,dc=x");
        assert_eq!(strip_unique_member_uid("cn=a#b,dc=x"), "cn=a#b,dc=x");
    }

    fn set(v: &[u32]) -> BTreeSet<u32> {
        v.iter().copied().collect()
    }
    fn kids(v: &[usize]) -> BTreeSet<usize> {
        v.iter().copied().collect()
    }

    #[test]
    fn nested_groups_flatten_at_any_depth() {
        // 0 ⊃ 1 ⊃ 2; 3 alone.
        let direct = vec![set(&[1]), set(&[2]), set(&[3, 4]), set(&[9])];
        let children = vec![kids(&[1]), kids(&[2]), kids(&[]), kids(&[])];
        let f = flatten(&direct, &children);
        assert_eq!(f.members[0], set(&[1, 2, 3, 4]));
        assert_eq!(f.members[1], set(&[2, 3, 4]));
        assert_eq!(f.members[2], set(&[3, 4]));
        assert_eq!(f.members[3], set(&[9]));
        assert!(f.cyclic.is_empty());
    }

    #[test]
    fn cycles_terminate_and_are_reported() {
        // 0 ⊃ 1 ⊃ 2 ⊃ 0, and 3 contains itself.
        let direct = vec![set(&[1]), set(&[2]), set(&[3]), set(&[4])];
        let children = vec![kids(&[1]), kids(&[2]), kids(&[0]), kids(&[3])];
        let f = flatten(&direct, &children);
        for g in 0..3 {
            assert_eq!(f.members[g], set(&[1, 2, 3]), "group {g}");
        }
        assert_eq!(f.members[3], set(&[4]));
        assert_eq!(f.cyclic, kids(&[0, 1, 2, 3]));
    }

    #[test]
    fn out_of_range_children_are_ignored() {
        let f = flatten(&[set(&[1])], &[kids(&[5])]);
        assert_eq!(f.members, vec![set(&[1])]);
    }

    proptest! {
        /// Flattening equals the naive fixpoint of "members of g include the
        /// members of each child", on random graphs with cycles.
        #[test]
        fn flatten_is_the_transitive_closure(
            direct in proptest::collection::vec(proptest::collection::btree_set(0u32..20, 0..4), 1..9),
            edges in proptest::collection::vec((0usize..9, 0usize..9), 0..20),
        ) {
            let n = direct.len();
            let mut children = vec![BTreeSet::new(); n];
            for (a, b) in edges {
                if a < n && b < n {
                    children[a].insert(b);
                }
            }
            let f = flatten(&direct, &children);
            // Naive fixpoint.
            let mut want = direct.clone();
            loop {
                let mut changed = false;
                for g in 0..n {
                    for &c in &children[g] {
                        let add: Vec<u32> = want[c].iter().copied().collect();
                        for u in add {
                            changed |= want[g].insert(u);
                        }
                    }
                }
                if !changed { break; }
            }
            prop_assert_eq!(&f.members, &want);
            // Reachability from itself ⇔ reported cyclic.
            for g in 0..n {
                let mut seen = vec![false; n];
                let mut stack: Vec<usize> = children[g].iter().copied().collect();
                let mut cyc = false;
                while let Some(c) = stack.pop() {
                    if c == g { cyc = true; }
                    if seen[c] { continue; }
                    seen[c] = true;
                    stack.extend(children[c].iter().copied());
                }
                prop_assert_eq!(f.cyclic.contains(&g), cyc, "group {}", g);
            }
        }
    }
}
