//! Synthetic directories for benchmarks: deterministic by seed, any size.
//!
//! Not part of the engine: the `scimsync-gen` binary and the `scale` bench
//! use it to write the CSV files the `csv` source reads (`users.csv` with the
//! standard columns, `groups.csv` with `group_id,group,member` rows). Group
//! sizes are skewed like a real company's (Zipf: a few huge groups, a long
//! tail of small ones); [`day_of_changes`] produces the next day's directory
//! (hires, leavers, moves between groups, group renames, attribute edits).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use crate::model::{Fields, Origin, Snapshot, SourceGroup, SourceId, SourceUser};

/// A small deterministic generator (SplitMix64): the same seed gives the
/// same directory on every machine and every version of the toolchain.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const GIVEN: &[&str] = &[
    "Ada",
    "Alan",
    "Grace",
    "Linus",
    "Margaret",
    "Dennis",
    "Barbara",
    "Ken",
    "Frances",
    "John",
    "Katherine",
    "Edsger",
    "Radia",
    "Tim",
    "Hedy",
    "Donald",
    "Sophie",
    "Niklaus",
    "Shafi",
    "Leslie",
    "Anita",
    "Bjarne",
    "Carol",
    "Guido",
    "Jean",
    "Yukihiro",
    "Lynn",
    "James",
    "Mary",
    "Vint",
    "Adele",
    "Robert",
    "Elena",
    "Marco",
    "Priya",
    "Wei",
    "Fatima",
    "Olusegun",
    "Chloé",
    "Søren",
    "José",
    "Zoë",
    "Ingrid",
    "Tomasz",
    "Aiko",
    "Ravi",
    "Noor",
    "Mateo",
    "Léa",
    "Björn",
];
const FAMILY: &[&str] = &[
    "Lovelace",
    "Turing",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Ritchie",
    "Liskov",
    "Thompson",
    "Allen",
    "Backus",
    "Johnson",
    "Dijkstra",
    "Perlman",
    "Berners-Lee",
    "Lamarr",
    "Knuth",
    "Wilson",
    "Wirth",
    "Goldwasser",
    "Lamport",
    "Borg",
    "Stroustrup",
    "Shaw",
    "van Rossum",
    "Sammet",
    "Matsumoto",
    "Conway",
    "Gosling",
    "Keller",
    "Cerf",
    "Goldberg",
    "Noyce",
    "Petrova",
    "Rossi",
    "Sharma",
    "Zhang",
    "Haddad",
    "Adeyemi",
    "Dubois",
    "Kierkegaard",
    "García",
    "O'Neil",
    "Nilsen",
    "Kowalski",
    "Tanaka",
    "Iyer",
    "Rahman",
    "López",
    "Martin",
    "Andersson",
];
const TITLES: &[&str] = &[
    "Software Engineer",
    "Senior Software Engineer",
    "Staff Engineer",
    "Principal Engineer",
    "Engineering Manager",
    "Product Manager",
    "Designer",
    "Data Scientist",
    "Site Reliability Engineer",
    "Support Engineer",
    "Account Executive",
    "Sales Engineer",
    "Recruiter",
    "Accountant",
    "Financial Analyst",
    "Legal Counsel",
    "Office Manager",
    "Technical Writer",
    "Security Engineer",
    "QA Engineer",
    "Director",
    "Vice President",
    "Marketing Manager",
    "Customer Success Manager",
];
const DEPARTMENTS: &[&str] = &[
    "R&D",
    "Platform",
    "Product",
    "Design",
    "Data",
    "Infrastructure",
    "Support",
    "Sales",
    "Marketing",
    "Finance",
    "Legal",
    "People",
    "Security",
    "Operations",
    "Customer Success",
];
const TIMEZONES: &[(&str, &str)] = &[
    ("Europe/London", "en-GB"),
    ("America/New_York", "en-US"),
    ("America/Los_Angeles", "en-US"),
    ("Europe/Berlin", "de-DE"),
    ("Europe/Paris", "fr-FR"),
    ("Asia/Tokyo", "ja-JP"),
    ("Asia/Kolkata", "en-IN"),
    ("Australia/Sydney", "en-AU"),
    ("America/Sao_Paulo", "pt-BR"),
    ("Europe/Warsaw", "pl-PL"),
];
const GROUP_WORDS: &[&str] = &[
    "engineering",
    "platform",
    "payments",
    "search",
    "mobile",
    "web",
    "infra",
    "data",
    "ml",
    "security",
    "sales",
    "marketing",
    "finance",
    "legal",
    "support",
    "design",
    "ops",
    "people",
    "jira-users",
    "confluence-users",
];

/// One generated person. Attribute values are indices into fixed word lists
/// (so a million people stay small in memory) plus the id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenUser {
    /// Source id (written as a decimal employee number).
    pub id: u64,
    given: u16,
    family: u16,
    title: u16,
    department: u16,
    tz: u16,
    /// Bumped by phone-number edits.
    phone_rev: u16,
}

impl GenUser {
    fn new(id: u64, rng: &mut Rng) -> GenUser {
        GenUser {
            id,
            given: rng.below(GIVEN.len() as u64) as u16,
            family: rng.below(FAMILY.len() as u64) as u16,
            title: rng.below(TITLES.len() as u64) as u16,
            department: rng.below(DEPARTMENTS.len() as u64) as u16,
            tz: rng.below(TIMEZONES.len() as u64) as u16,
            phone_rev: 0,
        }
    }

    /// The login and work email: `given.family.ID@example.com`, ASCII lowercase.
    pub fn email(&self) -> String {
        let clean = |s: &str| -> String {
            s.chars()
                .filter(char::is_ascii_alphanumeric)
                .map(|c| c.to_ascii_lowercase())
                .collect()
        };
        format!(
            "{}.{}.{}@example.com",
            clean(GIVEN[self.given as usize]),
            clean(FAMILY[self.family as usize]),
            self.id
        )
    }

    fn phone(&self) -> String {
        let n = (self.id * 7919 + u64::from(self.phone_rev) * 104_729) % 10_000_000;
        format!("+1 555 {:07}", n)
    }

    /// The CSV columns, in [`USERS_HEADER`] order.
    fn columns(&self) -> [String; 12] {
        let (tz, lang) = TIMEZONES[self.tz as usize];
        let given = GIVEN[self.given as usize];
        let family = FAMILY[self.family as usize];
        let email = self.email();
        [
            self.id.to_string(),
            email.clone(),
            given.to_owned(),
            family.to_owned(),
            format!("{given} {family}"),
            email,
            TITLES[self.title as usize].to_owned(),
            DEPARTMENTS[self.department as usize].to_owned(),
            "Example Corp".to_owned(),
            tz.to_owned(),
            lang.to_owned(),
            self.phone(),
        ]
    }
}

/// Header of the generated users.csv (`active` is left at its default, true).
pub const USERS_HEADER: &str = "id,user_name,given_name,family_name,display_name,email,title,department,organization,timezone,preferred_language,phone";
const USER_FIELDS: [&str; 11] = [
    "user_name",
    "given_name",
    "family_name",
    "display_name",
    "email",
    "title",
    "department",
    "organization",
    "timezone",
    "preferred_language",
    "phone",
];

/// One generated group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenGroup {
    /// Source id (`g` + number).
    pub id: u64,
    /// Display name.
    pub name: String,
    /// Member user ids, sorted, unique.
    pub members: Vec<u64>,
}

impl GenGroup {
    /// The group's source id as written (`g42`).
    pub fn source_id(&self) -> String {
        format!("g{}", self.id)
    }
}

/// A generated directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directory {
    /// People, by ascending id.
    pub users: Vec<GenUser>,
    /// Groups, by ascending id.
    pub groups: Vec<GenGroup>,
}

/// What to generate.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// People.
    pub users: usize,
    /// Groups.
    pub groups: usize,
    /// Average group memberships per person.
    pub memberships_per_user: f64,
    /// Zipf exponent of group sizes (1.0: the largest group holds about
    /// 1/ln(groups) of all memberships).
    pub skew: f64,
    /// Seed.
    pub seed: u64,
}

impl Spec {
    /// Atlassian's limits scaled to `users`: a quarter as many groups as
    /// users (250 k at 1 M) and 8 memberships per person (8 M at 1 M).
    pub fn scaled(users: usize, seed: u64) -> Spec {
        Spec {
            users,
            groups: (users / 4).max(1),
            memberships_per_user: 8.0,
            skew: 1.0,
            seed,
        }
    }
}

/// Cumulative Zipf weights over `n` ranks, for sampling by binary search.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: usize, s: f64) -> Zipf {
        let mut acc = 0.0;
        let cdf = (0..n)
            .map(|k| {
                acc += 1.0 / ((k + 1) as f64).powf(s);
                acc
            })
            .collect::<Vec<_>>();
        Zipf(cdf)
    }

    fn sample(&self, rng: &mut Rng) -> usize {
        let total = *self.0.last().unwrap_or(&1.0);
        let x = rng.unit() * total;
        self.0.partition_point(|c| *c <= x).min(self.0.len() - 1)
    }
}

fn group_name(id: u64, rng: &mut Rng) -> String {
    let a = rng.pick(GROUP_WORDS);
    let b = rng.pick(&["team", "admins", "readers", "guild", "project", "oncall"]);
    format!("{a}-{b}-{id}")
}

/// Draw a person's groups: a count around the average, ranks from the Zipf
/// law, shuffled over group ids so the big groups are not all the first ids.
fn draw_groups(spec: &Spec, zipf: &Zipf, perm: &[u32], rng: &mut Rng) -> Vec<u32> {
    if spec.groups == 0 {
        return Vec::new();
    }
    let avg = spec.memberships_per_user;
    // Uniform in [avg/2, 3avg/2], so the mean is avg.
    let k = (avg * (0.5 + rng.unit())).round() as usize;
    let mut out: Vec<u32> = (0..k.min(spec.groups))
        .map(|_| perm[zipf.sample(rng)])
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Generate a directory.
pub fn generate(spec: &Spec) -> Directory {
    let mut rng = Rng::new(spec.seed);
    let users: Vec<GenUser> = (0..spec.users as u64)
        .map(|i| GenUser::new(100_000 + i, &mut rng))
        .collect();
    let mut groups: Vec<GenGroup> = (0..spec.groups as u64)
        .map(|i| GenGroup {
            id: i + 1,
            name: group_name(i + 1, &mut rng),
            members: Vec::new(),
        })
        .collect();
    // Rank → group index, a seeded shuffle.
    let mut perm: Vec<u32> = (0..spec.groups as u32).collect();
    for i in (1..perm.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        perm.swap(i, j);
    }
    let zipf = Zipf::new(spec.groups, spec.skew);
    for u in &users {
        for g in draw_groups(spec, &zipf, &perm, &mut rng) {
            groups[g as usize].members.push(u.id);
        }
    }
    // Users are visited in id order, so members are already sorted.
    Directory { users, groups }
}

/// What a day of changes did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DayStats {
    /// New people.
    pub hires: usize,
    /// People removed.
    pub leavers: usize,
    /// People moved from one group to another (and department).
    pub moves: usize,
    /// People with an edited attribute (title or phone).
    pub edits: usize,
    /// Groups renamed.
    pub renames: usize,
}

/// The next day's directory: `rate` is the share of people touched (0.01 =
/// 1 %), split evenly over hires, leavers, moves and attribute edits; one
/// group in a thousand touched people is renamed (at least one).
pub fn day_of_changes(day: &Directory, rate: f64, seed: u64) -> (Directory, DayStats) {
    let mut rng = Rng::new(seed ^ 0x0DA7_0FC4_A6E5);
    let mut next = day.clone();
    let n = day.users.len();
    let each = ((n as f64 * rate) / 4.0).round() as usize;
    let mut stats = DayStats::default();
    let ngroups = next.groups.len();

    // Pick distinct people for leavers, moves and edits.
    let mut chosen = BTreeSet::new();
    let mut pick_people = |count: usize, rng: &mut Rng| -> Vec<usize> {
        let mut out = Vec::new();
        let mut tries = 0;
        while out.len() < count && tries < count * 20 + 100 && chosen.len() < n {
            tries += 1;
            let i = rng.below(n as u64) as usize;
            if chosen.insert(i) {
                out.push(i);
            }
        }
        out
    };
    let leavers = pick_people(each, &mut rng);
    let movers = pick_people(each, &mut rng);
    let editors = pick_people(each, &mut rng);

    // Which groups each touched person is in.
    let mut memberships: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    let touched: BTreeSet<u64> = leavers
        .iter()
        .chain(&movers)
        .map(|&i| next.users[i].id)
        .collect();
    for (gi, g) in next.groups.iter().enumerate() {
        for m in &g.members {
            if touched.contains(m) {
                memberships.entry(*m).or_default().push(gi);
            }
        }
    }

    for &i in &editors {
        let u = &mut next.users[i];
        if rng.below(2) == 0 {
            u.title = ((u.title as usize + 1 + rng.below(TITLES.len() as u64 - 1) as usize)
                % TITLES.len()) as u16;
        } else {
            u.phone_rev = u.phone_rev.wrapping_add(1);
        }
        stats.edits += 1;
    }
    for &i in &movers {
        let id = next.users[i].id;
        let u = &mut next.users[i];
        u.department = ((u.department as usize + 1) % DEPARTMENTS.len()) as u16;
        if ngroups > 1 {
            if let Some(&from) = memberships.get(&id).and_then(|v| v.first()) {
                next.groups[from].members.retain(|m| *m != id);
            }
            // Move to a small group (a team), not a company-wide one.
            let to = rng.below(ngroups as u64) as usize;
            let members = &mut next.groups[to].members;
            if let Err(at) = members.binary_search(&id) {
                members.insert(at, id);
            }
        }
        stats.moves += 1;
    }
    let gone: BTreeSet<u64> = leavers.iter().map(|&i| next.users[i].id).collect();
    for id in &gone {
        for &gi in memberships.get(id).map(Vec::as_slice).unwrap_or(&[]) {
            next.groups[gi].members.retain(|m| m != id);
        }
    }
    next.users.retain(|u| !gone.contains(&u.id));
    stats.leavers = gone.len();

    // Hires get new ids after the largest one, and a few groups each.
    let first_id = day.users.last().map_or(100_000, |u| u.id + 1);
    let zipf = Zipf::new(ngroups, 1.0);
    // Rank groups by their size today: hires join big groups more often.
    let mut perm: Vec<u32> = (0..ngroups as u32).collect();
    perm.sort_by_key(|&g| std::cmp::Reverse(next.groups[g as usize].members.len()));
    let spec = Spec {
        users: 0,
        groups: ngroups,
        memberships_per_user: 4.0,
        skew: 1.0,
        seed,
    };
    for id in first_id..first_id + each as u64 {
        let u = GenUser::new(id, &mut rng);
        for g in draw_groups(&spec, &zipf, &perm, &mut rng) {
            next.groups[g as usize].members.push(u.id);
        }
        next.users.push(u);
        stats.hires += 1;
    }

    let renames = ((each as f64 * 4.0 / 1000.0).round() as usize)
        .max(1)
        .min(ngroups);
    for _ in 0..renames {
        let gi = rng.below(ngroups as u64) as usize;
        let g = &mut next.groups[gi];
        if !g.name.ends_with("-renamed") {
            g.name.push_str("-renamed");
            stats.renames += 1;
        }
    }
    (next, stats)
}

/// The same directory with every person's title changed (one PATCH each).
pub fn edit_all(d: &Directory) -> Directory {
    let mut next = d.clone();
    for u in &mut next.users {
        u.title = ((u.title as usize + 1) % TITLES.len()) as u16;
    }
    next
}

fn csv_field(out: &mut impl Write, s: &str) -> io::Result<()> {
    if s.contains([',', '"', '\n', '\r']) {
        write!(out, "\"{}\"", s.replace('"', "\"\""))
    } else {
        out.write_all(s.as_bytes())
    }
}

/// Write `users.csv` and `groups.csv` into `dir`.
pub fn write_csv(d: &Directory, dir: &Path) -> io::Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(dir.join("users.csv"))?);
    writeln!(w, "{USERS_HEADER}")?;
    for u in &d.users {
        for (i, c) in u.columns().iter().enumerate() {
            if i > 0 {
                w.write_all(b",")?;
            }
            csv_field(&mut w, c)?;
        }
        w.write_all(b"\n")?;
    }
    w.flush()?;
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(dir.join("groups.csv"))?);
    writeln!(w, "group_id,group,member")?;
    for g in &d.groups {
        let sid = g.source_id();
        if g.members.is_empty() {
            writeln!(w, "{sid},{},", g.name)?;
        }
        for m in &g.members {
            writeln!(w, "{sid},{},{m}", g.name)?;
        }
    }
    w.flush()
}

/// The snapshot the CSV loader would produce from [`write_csv`]'s files
/// (origins aside), without the files.
pub fn to_snapshot(d: &Directory) -> Snapshot {
    let users = d
        .users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let cols = u.columns();
            let fields: Fields = USER_FIELDS
                .iter()
                .zip(cols.iter().skip(1))
                .map(|(k, v)| (*k, v.as_str().into()))
                .collect();
            SourceUser {
                id: SourceId::from(cols[0].as_str()),
                fields,
                active: true,
                groups: Vec::new(),
                origin: Origin {
                    file: "users.csv".into(),
                    location: format!("line {}", i + 2),
                },
            }
        })
        .collect();
    let groups = d
        .groups
        .iter()
        .map(|g| SourceGroup {
            id: SourceId::from(g.source_id()),
            name: g.name.clone(),
            members: g
                .members
                .iter()
                .map(|m| SourceId::from(m.to_string()))
                .collect(),
            origin: Origin {
                file: "groups.csv".into(),
                location: "line 2".into(),
            },
        })
        .collect();
    Snapshot {
        users,
        groups,
        rejects: Vec::new(),
    }
}

/// Memberships in a directory.
pub fn membership_count(d: &Directory) -> usize {
    d.groups.iter().map(|g| g.members.len()).sum()
}

/// The fewest write requests that take a target holding `from` to `to`
/// (`from` empty: a first sync), with `chunk` members per group PATCH:
/// one POST per new user or group, one PATCH per changed or departed user
/// (disable), ⌈adds/chunk⌉ + ⌈removes/chunk⌉ PATCHes per group. A group
/// rename needs one more PATCH when the target can rename groups; when it
/// cannot (Atlassian) the renamed group is a POST, ⌈kept/chunk⌉ PATCHes
/// moving the members that stay, ⌈joined/chunk⌉ for those who joined, and
/// the DELETE of the old group (its leavers go with it).
pub fn minimum_writes(from: &Directory, to: &Directory, chunk: usize, can_rename: bool) -> u64 {
    let chunk = chunk.max(1);
    let before: BTreeMap<u64, &GenUser> = from.users.iter().map(|u| (u.id, u)).collect();
    let after: BTreeMap<u64, &GenUser> = to.users.iter().map(|u| (u.id, u)).collect();
    let mut n = 0u64;
    for (id, u) in &after {
        match before.get(id) {
            None => n += 1,
            Some(old) if old != u => n += 1,
            Some(_) => {}
        }
    }
    n += before.keys().filter(|id| !after.contains_key(id)).count() as u64;
    let old_groups: BTreeMap<u64, &GenGroup> = from.groups.iter().map(|g| (g.id, g)).collect();
    let new_groups: BTreeMap<u64, &GenGroup> = to.groups.iter().map(|g| (g.id, g)).collect();
    let ceil = |k: usize| k.div_ceil(chunk) as u64;
    for (id, g) in &new_groups {
        match old_groups.get(id) {
            None => n += 1 + ceil(g.members.len()),
            Some(old) => {
                let a: BTreeSet<u64> = old.members.iter().copied().collect();
                let b: BTreeSet<u64> = g.members.iter().copied().collect();
                let joined = ceil(b.difference(&a).count());
                if old.name == g.name {
                    n += joined + ceil(a.difference(&b).count());
                } else if can_rename {
                    n += 1 + joined + ceil(a.difference(&b).count());
                } else {
                    n += 2 + ceil(a.intersection(&b).count()) + joined;
                }
            }
        }
    }
    // A group gone from the source is deleted.
    n += old_groups
        .keys()
        .filter(|id| !new_groups.contains_key(id))
        .count() as u64;
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_directory_other_seed_another() {
        let spec = Spec::scaled(2_000, 7);
        let a = generate(&spec);
        let b = generate(&spec);
        assert_eq!(a, b);
        let c = generate(&Spec { seed: 8, ..spec });
        assert_ne!(a, c);
        let (d1, s1) = day_of_changes(&a, 0.02, 7);
        let (d2, s2) = day_of_changes(&b, 0.02, 7);
        assert_eq!(d1, d2);
        assert_eq!(s1, s2);
        let dir1 = tempfile::tempdir().unwrap();
        let dir2 = tempfile::tempdir().unwrap();
        write_csv(&d1, dir1.path()).unwrap();
        write_csv(&d2, dir2.path()).unwrap();
        for f in ["users.csv", "groups.csv"] {
            assert_eq!(
                std::fs::read(dir1.path().join(f)).unwrap(),
                std::fs::read(dir2.path().join(f)).unwrap()
            );
        }
    }

    #[test]
    fn sizes_are_skewed_and_counts_add_up() {
        let d = generate(&Spec::scaled(20_000, 1));
        assert_eq!(d.users.len(), 20_000);
        assert_eq!(d.groups.len(), 5_000);
        let m = membership_count(&d);
        // 8 per person on average, give or take the duplicates dropped.
        assert!((140_000..=160_000).contains(&m), "{m} memberships");
        let mut sizes: Vec<usize> = d.groups.iter().map(|g| g.members.len()).collect();
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        // A few huge groups, a long tail of small ones.
        assert!(sizes[0] > 5_000, "largest group {}", sizes[0]);
        assert!(
            sizes[sizes.len() / 2] < 20,
            "median group {}",
            sizes[sizes.len() / 2]
        );
        for g in &d.groups {
            assert!(g.members.windows(2).all(|w| w[0] < w[1]), "sorted, unique");
        }
    }

    #[test]
    fn a_day_of_changes_does_what_it_says() {
        let d = generate(&Spec::scaled(10_000, 3));
        let (next, stats) = day_of_changes(&d, 0.04, 3);
        assert_eq!(stats.hires, 100);
        assert_eq!(stats.leavers, 100);
        assert_eq!(stats.moves, 100);
        assert_eq!(stats.edits, 100);
        assert!(stats.renames >= 1);
        assert_eq!(next.users.len(), 10_000);
        let before: BTreeSet<u64> = d.users.iter().map(|u| u.id).collect();
        let after: BTreeSet<u64> = next.users.iter().map(|u| u.id).collect();
        assert_eq!(after.difference(&before).count(), 100);
        assert_eq!(before.difference(&after).count(), 100);
        // Leavers are in no group any more.
        for id in before.difference(&after) {
            assert!(next.groups.iter().all(|g| !g.members.contains(id)));
        }
        // Changed people: edits + moves + leavers; writes also count hires
        // and the membership chunks.
        let changed = next
            .users
            .iter()
            .filter(|u| d.users.iter().any(|o| o.id == u.id && o != *u))
            .count();
        assert_eq!(changed, 200);
        assert_eq!(minimum_writes(&d, &d, 100, false), 0);
        let first = minimum_writes(&Directory::default(), &d, 100, false);
        let chunks: u64 = d
            .groups
            .iter()
            .map(|g| g.members.len().div_ceil(100) as u64)
            .sum();
        assert_eq!(first, 10_000 + 2_500 + chunks);
    }

    #[test]
    fn the_snapshot_matches_the_csv_loader() {
        let d = generate(&Spec::scaled(300, 5));
        let dir = tempfile::tempdir().unwrap();
        write_csv(&d, dir.path()).unwrap();
        let settings = crate::config::Settings::from_toml(
            "[source]\nusers = \"users.csv\"\ngroups = \"groups.csv\"\n[target]\nname = \"t\"\nbase_url = \"http://127.0.0.1:1/scim\"\napi_key_env = \"K\"\n",
            &dir.path().join("scimsync.toml"),
        )
        .unwrap();
        let loaded = crate::source::load(&settings.source).unwrap();
        let built = to_snapshot(&d);
        assert!(loaded.rejects.is_empty(), "{:?}", loaded.rejects);
        assert_eq!(loaded.users.len(), built.users.len());
        for (a, b) in loaded.users.iter().zip(&built.users) {
            assert_eq!((&a.id, &a.fields, a.active), (&b.id, &b.fields, b.active));
        }
        let by_id = |s: &Snapshot| -> BTreeMap<SourceId, (String, crate::model::Members)> {
            s.groups
                .iter()
                .map(|g| (g.id.clone(), (g.name.clone(), g.members.clone())))
                .collect()
        };
        assert_eq!(by_id(&loaded), by_id(&built));
    }
}
