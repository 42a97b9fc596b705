//! `novafs demo`: format an image, fill it, verify it across a clean remount, time each step.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use novafs::{FormatOptions, Fs, Kind, MediaMode, MountOptions, StatFs, ROOT_INO};

use crate::commands::Out;
use crate::error::{CliError, CliResult, Context};
use crate::units::{human_bytes, human_duration};

/// `/dev/shm/novafs-demo.img`, or `$TMPDIR/novafs-demo.img` (`/tmp`) without `/dev/shm`.
pub fn default_image() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.join("novafs-demo.img")
    } else {
        std::env::temp_dir().join("novafs-demo.img")
    }
}

const SMALL_FILES: usize = 100;
const SMALL_MAX: u64 = 12 << 10;
const BIG_FILE: &str = "/data/big.bin";
const BIG_BYTES: usize = 8 << 20;
const BIG_WRITE: usize = 4 << 10;
const DIRS: [&str; 7] = [
    "/etc",
    "/etc/app",
    "/src",
    "/src/core",
    "/src/util",
    "/docs",
    "/data",
];

const README: &str = "\
This image was made by `novafs demo`.

It holds a few directories, about a hundred small files of pseudo-random bytes, one 8 MiB file
written in 4 KiB writes, a hard link and a symbolic link. Every write and every metadata
change was atomic and durable when it returned.

Look around with `novafs ls -l IMAGE /` and `novafs cat IMAGE /README.txt`.
";

/// What the demo expects at a path.
#[derive(Clone, Debug)]
enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(String),
}

/// SplitMix64: a small deterministic generator for file sizes and contents.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        for chunk in v.chunks_mut(8) {
            let r = self.next().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
        v
    }
}

struct Report {
    out: Out,
    start: Instant,
}

impl Report {
    /// Run one timed step and print its line.
    fn step<T>(&mut self, name: &str, f: impl FnOnce() -> CliResult<(T, String)>) -> CliResult<T> {
        let t = Instant::now();
        let (value, detail) = f()?;
        self.line(name, t.elapsed(), &detail)?;
        Ok(value)
    }

    fn line(&mut self, name: &str, d: Duration, detail: &str) -> CliResult<()> {
        let sep = if detail.is_empty() { "" } else { "   " };
        self.out.line(format!(
            "  {name:<16}{:>10}{sep}{detail}",
            human_duration(d)
        ))?;
        self.out.flush()
    }
}

fn demo_err(msg: impl std::fmt::Display) -> CliError {
    CliError::new("demo", msg)
}

fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

fn kind_name(n: &Node) -> &'static str {
    match n {
        Node::Dir => "directory",
        Node::File(_) => "file",
        Node::Symlink(_) => "symlink",
    }
}

/// Totals of a verified tree.
#[derive(Debug, Default)]
struct Totals {
    files: u64,
    bytes: u64,
    dirs: u64,
    symlinks: u64,
}

/// Walk the whole tree and compare it, names and bytes, with `model`.
fn verify(fs: &Fs, model: &BTreeMap<String, Node>, when: &str) -> CliResult<Totals> {
    let fail = |msg: String| CliError::new(format!("demo: verification {when} failed"), msg);
    let engine = fs.engine();
    let mut seen: BTreeMap<String, Kind> = BTreeMap::new();
    // Directory paths by inode (a parent is visited before its children).
    let mut dirs: HashMap<u64, String> = HashMap::from([(ROOT_INO, String::new())]);
    let mut bad_name = None;
    engine
        .walk_dirs(ROOT_INO, usize::MAX, |ino, _, entries| {
            let dir = dirs.get(&ino).cloned().unwrap_or_default();
            for e in entries {
                let Ok(name) = std::str::from_utf8(&e.name) else {
                    bad_name.get_or_insert_with(|| dir.clone());
                    continue;
                };
                let p = format!("{dir}/{name}");
                if e.kind == Kind::Dir {
                    dirs.insert(e.ino, p.clone());
                }
                seen.insert(p, e.kind);
            }
            Ok(())
        })
        .map_err(|e| fail(format!("walking the tree: {e}")))?;
    if let Some(dir) = bad_name {
        let shown = if dir.is_empty() { "/" } else { dir.as_str() };
        return Err(fail(format!("a name in {shown} is not the UTF-8 written")));
    }
    if let Some(p) = seen.keys().find(|p| !model.contains_key(*p)) {
        return Err(fail(format!("unexpected entry {p}")));
    }
    let mut t = Totals::default();
    for (p, node) in model {
        let kind = seen.get(p).ok_or_else(|| fail(format!("{p} is missing")))?;
        let check_bytes = |data: &[u8], via: &str| -> CliResult<()> {
            let got = fs
                .read(p)
                .map_err(|e| fail(format!("reading {p}{via}: {e}")))?;
            if got != data {
                return Err(fail(format!(
                    "{p}{via}: read {} bytes, wrote {}; first difference at byte {}",
                    got.len(),
                    data.len(),
                    first_difference(&got, data)
                )));
            }
            Ok(())
        };
        match (node, kind) {
            (Node::Dir, Kind::Dir) => t.dirs += 1,
            (Node::File(data), Kind::File) => {
                check_bytes(data, "")?;
                t.files += 1;
                t.bytes += data.len() as u64;
            }
            (Node::Symlink(target), Kind::Symlink) => {
                let got = fs
                    .read_link(p)
                    .map_err(|e| fail(format!("reading symlink {p}: {e}")))?;
                if got != target.as_bytes() {
                    return Err(fail(format!(
                        "symlink {p} points to {}, expected {target}",
                        String::from_utf8_lossy(&got)
                    )));
                }
                if let Some(Node::File(data)) = model.get(target) {
                    check_bytes(data, " (through the symlink)")?;
                }
                t.symlinks += 1;
            }
            (n, k) => return Err(fail(format!("{p} is a {k:?}, expected a {}", kind_name(n)))),
        }
    }
    Ok(t)
}

fn plural(n: u64, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

fn files_detail(t: &Totals) -> String {
    format!(
        "{}, {}, {}, {} compared",
        plural(t.files, "file"),
        plural(t.symlinks, "symlink"),
        plural(t.dirs, "dir"),
        human_bytes(t.bytes)
    )
}

fn mode_blurb(m: MediaMode) -> &'static str {
    match m {
        MediaMode::Dax => "real persistent memory mapped with MAP_SYNC",
        MediaMode::Emulated => "DRAM-backed file (tmpfs) treated as persistent memory",
        MediaMode::Msync => "ordinary file: every persist point also msyncs",
        MediaMode::Traced => "traced in-memory test backend",
    }
}

/// Run the demo on `image` (formatted, so overwritten) of `size` bytes.
pub fn run(image: &Path, size: u64) -> CliResult<()> {
    let mut r = Report {
        out: Out::new(),
        start: Instant::now(),
    };
    let shown = image.display().to_string();
    r.out
        .line(format!("novafs demo: {shown} ({})", human_bytes(size)))?;
    r.out.flush()?;
    let mut model: BTreeMap<String, Node> = BTreeMap::new();
    let mut rng = Rng(0x6e6f_7661_6673_2d64);
    let mut writes = 0u64;
    let mut written = 0u64;

    let fs = r.step("format", || {
        // The demo reformats its own image (or any novafs image it is given), never a
        // foreign file.
        let mut magic = [0u8; 8];
        let is_novafs = std::fs::File::open(image)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok_and(|()| magic == novafs_engine::layout::superblock::MAGIC);
        let opts = FormatOptions {
            overwrite: is_novafs,
            ..FormatOptions::default()
        };
        let fs =
            Fs::format(image, size, &opts).with_context(|| format!("cannot format {shown}"))?;
        Ok((fs, String::new()))
    })?;
    let mode = fs.media_mode();

    r.step("mkdir", || {
        for d in DIRS {
            fs.create_dir(d)
                .with_context(|| format!("demo: mkdir {d}"))?;
            model.insert(d.to_string(), Node::Dir);
        }
        Ok(((), format!("{} directories", DIRS.len())))
    })?;

    r.step("small files", || {
        let mut bytes = README.len() as u64;
        fs.write("/README.txt", README.as_bytes())
            .context("demo: writing /README.txt")?;
        model.insert("/README.txt".into(), Node::File(README.as_bytes().to_vec()));
        for i in 0..SMALL_FILES {
            let dir = DIRS[i % DIRS.len()];
            let p = format!("{dir}/file-{i:03}.dat");
            let len = match i % 25 {
                0 => 0,
                1 => 4096,
                2 => 4097,
                _ => rng.below(SMALL_MAX) as usize + 1,
            };
            let data = rng.bytes(len);
            let f = fs
                .create(&p)
                .with_context(|| format!("demo: creating {p}"))?;
            f.write_at(&data, 0)
                .with_context(|| format!("demo: writing {p}"))?;
            bytes += len as u64;
            model.insert(p, Node::File(data));
        }
        writes += SMALL_FILES as u64 + 1;
        written += bytes;
        Ok((
            (),
            format!("{} files, {}", SMALL_FILES + 1, human_bytes(bytes)),
        ))
    })?;

    r.step("large file", || {
        let data = rng.bytes(BIG_BYTES);
        let t = Instant::now();
        let f = fs
            .create(BIG_FILE)
            .with_context(|| format!("demo: creating {BIG_FILE}"))?;
        for (i, chunk) in data.chunks(BIG_WRITE).enumerate() {
            f.write_at(chunk, (i * BIG_WRITE) as u64)
                .with_context(|| format!("demo: writing {BIG_FILE}"))?;
        }
        drop(f);
        let secs = t.elapsed().as_secs_f64().max(1e-9);
        let n = BIG_BYTES / BIG_WRITE;
        writes += n as u64;
        written += BIG_BYTES as u64;
        model.insert(BIG_FILE.into(), Node::File(data));
        Ok((
            (),
            format!(
                "{} in {n} writes of {}, {:.0} MiB/s",
                human_bytes(BIG_BYTES as u64),
                human_bytes(BIG_WRITE as u64),
                BIG_BYTES as f64 / secs / (1 << 20) as f64
            ),
        ))
    })?;

    r.step("links", || {
        let orig = "/etc/app/file-001.dat";
        fs.hard_link(orig, "/etc/app/hardlink.dat")
            .context("demo: hard link")?;
        let node = model
            .get(orig)
            .cloned()
            .ok_or_else(|| demo_err("model lost a file"))?;
        model.insert("/etc/app/hardlink.dat".into(), node);
        fs.symlink(BIG_FILE, "/latest").context("demo: symlink")?;
        model.insert("/latest".into(), Node::Symlink(BIG_FILE.into()));
        let nlink = fs
            .metadata("/etc/app/hardlink.dat")
            .context("demo: stat hard link")?
            .nlink();
        if nlink != 2 {
            return Err(demo_err(format!("hard link count is {nlink}, expected 2")));
        }
        Ok(((), "1 hard link, 1 symlink".to_string()))
    })?;

    r.step("verify", || {
        let t = verify(&fs, &model, "after writing")?;
        Ok(((), files_detail(&t)))
    })?;

    r.step("rename + unlink", || {
        // A directory with files in it, and a file across directories.
        fs.rename("/docs", "/documentation")
            .context("demo: rename /docs")?;
        let moved: Vec<String> = model
            .keys()
            .filter(|k| *k == "/docs" || k.starts_with("/docs/"))
            .cloned()
            .collect();
        for k in moved {
            if let Some(n) = model.remove(&k) {
                model.insert(format!("/documentation{}", &k["/docs".len()..]), n);
            }
        }
        fs.rename("/src/core/file-003.dat", "/src/util/moved.dat")
            .context("demo: rename a file")?;
        let n = model
            .remove("/src/core/file-003.dat")
            .ok_or_else(|| demo_err("model lost a file"))?;
        model.insert("/src/util/moved.dat".into(), n);
        // Every 10th small file, and the first name of the hard-linked file.
        let victims: Vec<String> = model
            .keys()
            .filter(|k| {
                k.ends_with("0.dat") && k.contains("/file-") || *k == "/etc/app/file-001.dat"
            })
            .cloned()
            .collect();
        for v in &victims {
            fs.remove_file(v)
                .with_context(|| format!("demo: unlink {v}"))?;
            model.remove(v);
        }
        let nlink = fs
            .metadata("/etc/app/hardlink.dat")
            .context("demo: stat hard link")?
            .nlink();
        if nlink != 1 {
            return Err(demo_err(format!(
                "hard link count after unlinking the other name is {nlink}, expected 1"
            )));
        }
        Ok(((), format!("2 renames, {} unlinks", victims.len())))
    })?;

    r.step("verify", || {
        let t = verify(&fs, &model, "after rename and unlink")?;
        Ok(((), files_detail(&t)))
    })?;

    r.step("unmount", || {
        fs.unmount()
            .with_context(|| format!("demo: unmounting {shown}"))?;
        Ok(((), String::new()))
    })?;

    let fs = r.step("remount", || {
        let fs = Fs::open(image, &MountOptions::default())
            .with_context(|| format!("demo: remounting {shown}"))?;
        let rep = fs.mount_report();
        if !rep.clean {
            return Err(demo_err(format!(
                "the remount was not clean: recovery ran ({} journal entries undone, {} inodes scanned)",
                rep.journal_undone, rep.inodes_scanned
            )));
        }
        Ok((fs, "clean".to_string()))
    })?;

    let totals = r.step("verify", || {
        let t = verify(&fs, &model, "after remount")?;
        let d = files_detail(&t);
        Ok((t, d))
    })?;

    let st: StatFs = fs
        .statfs()
        .with_context(|| format!("demo: statfs of {shown}"))?;
    r.step("unmount", || {
        fs.unmount()
            .with_context(|| format!("demo: unmounting {shown}"))?;
        Ok(((), String::new()))
    })?;

    let total = r.start.elapsed();
    r.out
        .line(format!("  {:<16}{:>10}", "total", human_duration(total)))?;
    r.out.line("")?;
    r.out.line(format!(
        "  media mode      {} ({})",
        mode.name(),
        mode_blurb(mode)
    ))?;
    r.out.line(format!("  image           {shown}"))?;
    r.out.line(format!(
        "  contents        {} ({}), {}, {} below the root",
        plural(totals.files, "file"),
        human_bytes(totals.bytes),
        plural(totals.symlinks, "symlink"),
        match totals.dirs {
            1 => "1 directory".to_string(),
            n => format!("{n} directories"),
        }
    ))?;
    r.out.line(format!(
        "  written         {} in {writes} writes",
        human_bytes(written)
    ))?;
    r.out.line(format!(
        "  statfs          block size {}, blocks {} total / {} free, inodes {} total / {} free",
        st.block_size, st.blocks_total, st.blocks_free, st.inodes_total, st.inodes_free
    ))?;
    r.out
        .line("  result          all bytes verified, before and after a clean remount")?;
    r.out.line("")?;
    r.out
        .line(format!("  look inside:    novafs ls -l {shown} /"))?;
    r.out.line(format!("  clean up:       rm {shown}"))?;
    r.out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> tempfile::TempDir {
        if Path::new("/dev/shm").is_dir() {
            tempfile::tempdir_in("/dev/shm").unwrap()
        } else {
            tempfile::tempdir().unwrap()
        }
    }

    #[test]
    fn verify_catches_differences() {
        let dir = scratch();
        let fs = Fs::format(dir.path().join("v.img"), 4 << 20, &FormatOptions::default()).unwrap();
        fs.create_dir("/d").unwrap();
        fs.write("/d/f", b"abc").unwrap();
        fs.symlink("/d/f", "/l").unwrap();
        let mut model = BTreeMap::new();
        model.insert("/d".to_string(), Node::Dir);
        model.insert("/d/f".to_string(), Node::File(b"abc".to_vec()));
        model.insert("/l".to_string(), Node::Symlink("/d/f".into()));
        let t = verify(&fs, &model, "test").unwrap();
        assert_eq!((t.files, t.bytes, t.dirs, t.symlinks), (1, 3, 1, 1));

        let mut wrong = model.clone();
        wrong.insert("/d/f".into(), Node::File(b"abd".to_vec()));
        let e = verify(&fs, &wrong, "test").unwrap_err().to_string();
        assert!(e.contains("first difference at byte 2"), "{e}");

        let mut missing = model.clone();
        missing.insert("/d/g".into(), Node::File(Vec::new()));
        let e = verify(&fs, &missing, "test").unwrap_err().to_string();
        assert!(e.contains("/d/g is missing"), "{e}");

        let mut extra = model.clone();
        extra.remove("/l");
        let e = verify(&fs, &extra, "test").unwrap_err().to_string();
        assert!(e.contains("unexpected entry /l"), "{e}");

        let mut kind = model;
        kind.insert("/d".into(), Node::File(Vec::new()));
        assert!(verify(&fs, &kind, "test").is_err());
        fs.unmount().unwrap();
    }

    #[test]
    fn default_image_name() {
        assert!(default_image().ends_with("novafs-demo.img"));
    }
}
