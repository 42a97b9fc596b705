//! The subcommands that work on one image.

use std::fs as hostfs;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use novafs::{Attr, Engine, FormatOptions, Fs, Kind, MountOptions, RawDirEntry, ROOT_INO};
use serde_json::json;

use crate::error::{CliError, CliResult, Context};
use crate::units::{human_bytes, utc_timestamp};

/// Bytes per read or write when streaming file contents.
pub const CHUNK: usize = 1 << 20;

/// Mount `image`, run `f`, and unmount cleanly whatever `f` returned.
pub fn with_fs<T>(image: &Path, f: impl FnOnce(&Fs) -> CliResult<T>) -> CliResult<T> {
    let fs = Fs::open(image, &MountOptions::default())
        .with_context(|| format!("cannot mount {}", image.display()))?;
    let result = f(&fs);
    let unmounted = fs
        .unmount()
        .with_context(|| format!("unmounting {}", image.display()));
    let value = result?;
    unmounted?;
    Ok(value)
}

/// Buffered stdout whose errors become [`CliError::stdout`].
pub struct Out(BufWriter<io::StdoutLock<'static>>);

impl Out {
    pub fn new() -> Out {
        Out(BufWriter::new(io::stdout().lock()))
    }
    pub fn line(&mut self, s: impl AsRef<str>) -> CliResult<()> {
        let w = &mut self.0;
        w.write_all(s.as_ref().as_bytes())
            .and_then(|()| w.write_all(b"\n"))
            .map_err(CliError::stdout)
    }
    pub fn bytes(&mut self, b: &[u8]) -> CliResult<()> {
        self.0.write_all(b).map_err(CliError::stdout)
    }
    pub fn flush(&mut self) -> CliResult<()> {
        self.0.flush().map_err(CliError::stdout)
    }
    pub fn finish(mut self) -> CliResult<()> {
        self.0.flush().map_err(CliError::stdout)
    }
}

fn shown(p: &Path) -> String {
    p.display().to_string()
}

/// Reject paths whose last component is not a name (`/`, `..`): they cannot be removed or
/// moved, and resolving them would act on another entry.
fn last_name<'a>(p: &'a Path, what: &str) -> CliResult<&'a std::ffi::OsStr> {
    p.file_name().ok_or_else(|| {
        CliError::new(
            shown(p),
            format!("cannot {what} a path that does not end in a name"),
        )
    })
}

/// The (name, inode) pairs of a directory, sorted by name.
fn sorted_entries(fs: &Fs, dir: &Path) -> novafs::Result<Vec<(Vec<u8>, u64)>> {
    use std::os::unix::ffi::OsStringExt;
    let mut entries = fs
        .read_dir(dir)?
        .map(|e| e.map(|e| (e.file_name().into_vec(), e.ino())))
        .collect::<novafs::Result<Vec<_>>>()?;
    entries.sort();
    Ok(entries)
}

/// `novafs mkfs`.
pub fn mkfs(image: &Path, size: u64, force_emulated: bool, force: bool) -> CliResult<()> {
    let opts = FormatOptions {
        force_emulated,
        overwrite: force,
        ..FormatOptions::default()
    };
    let ctx = || {
        let hint = if !force && image.metadata().is_ok_and(|m| m.len() > 0) {
            " (the file exists and is not empty: --force formats over it)"
        } else {
            ""
        };
        format!("cannot format {}{hint}", image.display())
    };
    let fs = Fs::format(image, size, &opts).with_context(ctx)?;
    let st = fs.statfs().with_context(ctx)?;
    let mode = fs.media_mode();
    fs.unmount().with_context(ctx)?;
    let mut out = Out::new();
    out.line(format!(
        "formatted {}: {} ({} blocks of {} bytes, {} free), {} inodes, media mode {}",
        image.display(),
        human_bytes(size),
        st.blocks_total,
        st.block_size,
        st.blocks_free,
        st.inodes_total,
        mode.name()
    ))?;
    out.finish()
}

/// `novafs info`.
pub fn info(image: &Path, as_json: bool) -> CliResult<()> {
    let (st, mode, report) = with_fs(image, |fs| {
        Ok((
            fs.statfs().with_context(|| "statfs".to_string())?,
            fs.media_mode(),
            fs.mount_report().clone(),
        ))
    })?;
    let image_bytes = st.blocks_total * st.block_size;
    let mut out = Out::new();
    if as_json {
        let v = json!({
            "image": shown(image),
            "block_size": st.block_size,
            "blocks_total": st.blocks_total,
            "blocks_free": st.blocks_free,
            "inodes_total": st.inodes_total,
            "inodes_free": st.inodes_free,
            "name_max": st.name_max,
            "size_bytes": image_bytes,
            "media_mode": mode.name(),
            "clean": report.clean,
            "recovered": !report.clean,
            "journal_undone": report.journal_undone,
            "inodes_scanned": report.inodes_scanned,
            "superblock_repaired": report.superblock_repaired,
        });
        out.line(serde_json::to_string_pretty(&v).context("encoding JSON")?)?;
    } else {
        let mount = if report.clean {
            "clean (the last session unmounted cleanly)".to_string()
        } else {
            format!(
                "recovered (journal entries undone: {}, inodes scanned: {})",
                report.journal_undone, report.inodes_scanned
            )
        };
        let used = st.blocks_total.saturating_sub(st.blocks_free);
        let pct = if st.blocks_total == 0 {
            0.0
        } else {
            used as f64 * 100.0 / st.blocks_total as f64
        };
        out.line(format!("image         {}", image.display()))?;
        out.line(format!("size          {}", human_bytes(image_bytes)))?;
        out.line(format!("media_mode    {}", mode.name()))?;
        out.line(format!("mount         {mount}"))?;
        if report.superblock_repaired {
            out.line("superblock    primary repaired from the replica")?;
        }
        out.line(format!("block_size    {}", st.block_size))?;
        out.line(format!("blocks_total  {}", st.blocks_total))?;
        out.line(format!(
            "blocks_free   {} ({} free, {pct:.1}% used)",
            st.blocks_free,
            human_bytes(st.blocks_free * st.block_size)
        ))?;
        out.line(format!("inodes_total  {}", st.inodes_total))?;
        out.line(format!("inodes_free   {}", st.inodes_free))?;
        out.line(format!("name_max      {}", st.name_max))?;
    }
    out.finish()
}

/// One row of `ls`.
struct Row {
    name: Vec<u8>,
    attr: Attr,
    target: Option<Vec<u8>>,
}

fn row(engine: &Engine, name: Vec<u8>, ino: u64) -> novafs::Result<Row> {
    let attr = engine.getattr(ino)?;
    let target = if attr.kind == Kind::Symlink {
        Some(engine.readlink(ino)?)
    } else {
        None
    };
    Ok(Row { name, attr, target })
}

/// `novafs ls`.
pub fn ls(image: &Path, path: &Path, long: bool) -> CliResult<()> {
    let rows = with_fs(image, |fs| {
        let ctx = || shown(path);
        let own = fs.symlink_metadata(path).with_context(ctx)?;
        let list_dir = match own.file_type() {
            novafs::FileType::Dir => true,
            // A symlink to a directory lists the directory; a dangling one lists itself.
            novafs::FileType::Symlink => fs.metadata(path).is_ok_and(|m| m.is_dir()),
            _ => false,
        };
        let engine = fs.engine();
        if list_dir {
            let entries = sorted_entries(fs, path).with_context(ctx)?;
            entries
                .into_iter()
                .map(|(name, ino)| {
                    row(engine, name.clone(), ino)
                        .with_context(|| shown(&path.join(std::ffi::OsStr::from_bytes(&name))))
                })
                .collect::<CliResult<Vec<Row>>>()
        } else {
            let name = path.as_os_str().as_bytes().to_vec();
            Ok(vec![row(engine, name, own.ino()).with_context(ctx)?])
        }
    })?;
    let mut out = Out::new();
    let width = |f: &dyn Fn(&Row) -> u64| {
        rows.iter()
            .map(|r| f(r).to_string().len())
            .max()
            .unwrap_or(1)
    };
    let (wl, ws, wi) = (
        width(&|r| u64::from(r.attr.nlink)),
        width(&|r| r.attr.size),
        width(&|r| r.attr.ino),
    );
    for r in &rows {
        if long {
            out.bytes(
                format!(
                    "{:<7} {:04o} {:>wl$} {:>ws$} {:>wi$} ",
                    r.attr.kind.name(),
                    r.attr.mode & 0o7777,
                    r.attr.nlink,
                    r.attr.size,
                    r.attr.ino
                )
                .as_bytes(),
            )?;
        }
        out.bytes(&r.name)?;
        if let (true, Some(t)) = (long, &r.target) {
            out.bytes(b" -> ")?;
            out.bytes(t)?;
        }
        out.bytes(b"\n")?;
    }
    out.finish()
}

/// `novafs stat`.
pub fn stat(image: &Path, path: &Path, as_json: bool) -> CliResult<()> {
    let r = with_fs(image, |fs| {
        let m = fs.symlink_metadata(path).with_context(|| shown(path))?;
        row(fs.engine(), Vec::new(), m.ino()).with_context(|| shown(path))
    })?;
    let a = &r.attr;
    let target = r
        .target
        .as_ref()
        .map(|t| String::from_utf8_lossy(t).into_owned());
    let mut out = Out::new();
    if as_json {
        let v = attr_json("path", &shown(path), a, r.target.as_deref());
        out.line(serde_json::to_string_pretty(&v).context("encoding JSON")?)?;
    } else {
        out.line(format!("  path    {}", path.display()))?;
        out.line(format!("  kind    {}", a.kind.name()))?;
        if let Some(t) = target {
            out.line(format!("  target  {t}"))?;
        }
        out.line(format!("  ino     {} (generation {})", a.ino, a.generation))?;
        out.line(format!("  size    {} ({})", a.size, human_bytes(a.size)))?;
        out.line(format!("  blocks  {} of {} bytes", a.blocks, novafs::BLOCK))?;
        if a.kind.is_device() {
            out.line(format!(
                "  rdev    {}:{}",
                (a.rdev >> 8) & 0xfff,
                (a.rdev & 0xff) | ((a.rdev >> 12) & 0xfff00)
            ))?;
        }
        out.line(format!("  nlink   {}", a.nlink))?;
        out.line(format!("  mode    {:04o}", a.mode & 0o7777))?;
        out.line(format!("  uid     {}", a.uid))?;
        out.line(format!("  gid     {}", a.gid))?;
        out.line(format!("  access  {}", utc_timestamp(a.atime_ns)))?;
        out.line(format!("  modify  {}", utc_timestamp(a.mtime_ns)))?;
        out.line(format!("  change  {}", utc_timestamp(a.ctime_ns)))?;
        out.line(format!("  birth   {}", utc_timestamp(a.crtime_ns)))?;
    }
    out.finish()
}

/// Stream a file of the image into `w`, mapping write errors with `write_err`.
fn copy_out(
    file: &novafs::File,
    path: &Path,
    w: &mut dyn Write,
    write_err: &dyn Fn(io::Error) -> CliError,
) -> CliResult<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    loop {
        let n = file.read_at(&mut buf, off).with_context(|| shown(path))?;
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n]).map_err(write_err)?;
        off += n as u64;
    }
    w.flush().map_err(write_err)?;
    Ok(off)
}

/// `novafs cat`.
pub fn cat(image: &Path, path: &Path) -> CliResult<()> {
    with_fs(image, |fs| {
        let f = fs
            .open_options()
            .read(true)
            .open(path)
            .with_context(|| shown(path))?;
        let mut out = io::stdout().lock();
        copy_out(&f, path, &mut out, &CliError::stdout).map(|_| ())
    })
}

/// Read until `buf` is full or the input ends; returns the bytes read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn is_dash(p: &Path) -> bool {
    p.as_os_str() == "-"
}

/// `novafs put`.
pub fn put(image: &Path, host: &Path, path: &Path) -> CliResult<()> {
    let host_ctx = || shown(host);
    let (mut input, mode): (Box<dyn Read>, Option<u32>) = if is_dash(host) {
        (Box::new(io::stdin().lock()), None)
    } else {
        let f = hostfs::File::open(host).with_context(host_ctx)?;
        let meta = f.metadata().with_context(host_ctx)?;
        if meta.is_dir() {
            return Err(CliError::new(host_ctx(), "is a directory"));
        }
        (Box::new(f), Some(meta.permissions().mode() & 0o7777))
    };
    with_fs(image, |fs| {
        let mut target = path.to_path_buf();
        if fs.metadata(path).is_ok_and(|m| m.is_dir()) {
            let name = if is_dash(host) {
                None
            } else {
                host.file_name()
            };
            let name = name.ok_or_else(|| {
                CliError::new(shown(path), "is a directory (give the new file's name)")
            })?;
            target.push(name);
        }
        let tctx = || shown(&target);
        let mut opts = fs.open_options();
        opts.write(true).create(true).truncate(true);
        if let Some(m) = mode {
            opts.mode(m);
        }
        let file = opts.open(&target).with_context(tctx)?;
        let mut buf = vec![0u8; CHUNK];
        let mut off = 0u64;
        loop {
            let n = read_full(&mut *input, &mut buf).with_context(host_ctx)?;
            if n == 0 {
                break;
            }
            file.write_at(&buf[..n], off).with_context(tctx)?;
            off += n as u64;
        }
        Ok(())
    })
}

/// `novafs get`.
pub fn get(image: &Path, path: &Path, host: &Path) -> CliResult<()> {
    with_fs(image, |fs| {
        let f = fs
            .open_options()
            .read(true)
            .open(path)
            .with_context(|| shown(path))?;
        if f.metadata().with_context(|| shown(path))?.is_dir() {
            return Err(CliError::new(shown(path), "is a directory"));
        }
        if is_dash(host) {
            let mut out = io::stdout().lock();
            return copy_out(&f, path, &mut out, &CliError::stdout).map(|_| ());
        }
        let mut dest: PathBuf = host.to_path_buf();
        if dest.is_dir() {
            dest.push(last_name(path, "copy out")?);
        }
        let dctx = shown(&dest);
        let out = hostfs::File::create(&dest).context(dctx.clone())?;
        let mut w = BufWriter::with_capacity(CHUNK, out);
        copy_out(&f, path, &mut w, &|e| CliError::new(dctx.clone(), e))?;
        w.into_inner()
            .map_err(|e| CliError::new(dctx.clone(), e.error()))?
            .sync_all()
            .context(dctx.clone())
    })
}

/// `novafs mkdir`.
pub fn mkdir(image: &Path, path: &Path, parents: bool) -> CliResult<()> {
    with_fs(image, |fs| {
        if parents {
            fs.create_dir_all(path)
        } else {
            fs.create_dir(path)
        }
        .with_context(|| format!("cannot create directory {}", path.display()))
    })
}

struct Frame {
    ino: u64,
    path: PathBuf,
    entries: Vec<RawDirEntry>,
    /// Parent directory and name, to remove this directory once it is empty.
    link: Option<(u64, Vec<u8>)>,
}

/// Remove everything below directory `top` (depth first, without recursion; the caller has
/// checked with `walk_dirs` that the subtree is a tree).
fn remove_tree(engine: &Engine, top: u64, top_path: &Path) -> CliResult<()> {
    let read = |ino: u64, p: &Path| engine.readdir(ino).with_context(|| shown(p));
    let mut stack = vec![Frame {
        ino: top,
        path: top_path.to_path_buf(),
        entries: read(top, top_path)?,
        link: None,
    }];
    while let Some(frame) = stack.last_mut() {
        match frame.entries.pop() {
            Some(e) => {
                let child = frame.path.join(std::ffi::OsStr::from_bytes(&e.name));
                if e.kind == Kind::Dir {
                    let entries = read(e.ino, &child)?;
                    let link = Some((frame.ino, e.name));
                    stack.push(Frame {
                        ino: e.ino,
                        path: child,
                        entries,
                        link,
                    });
                } else {
                    engine
                        .unlink(frame.ino, &e.name)
                        .with_context(|| format!("cannot remove {}", child.display()))?;
                }
            }
            None => {
                if let Some(Frame {
                    path,
                    link: Some((parent, name)),
                    ..
                }) = stack.pop()
                {
                    engine
                        .rmdir(parent, &name)
                        .with_context(|| format!("cannot remove {}", path.display()))?;
                }
            }
        }
    }
    Ok(())
}

/// `novafs rm`.
pub fn rm(image: &Path, path: &Path, recursive: bool) -> CliResult<()> {
    with_fs(image, |fs| {
        let ctx = || format!("cannot remove {}", path.display());
        let m = fs.symlink_metadata(path).with_context(ctx)?;
        if m.is_dir() {
            if !recursive {
                return Err(CliError::new(
                    ctx(),
                    "is a directory (use -r to remove it and everything in it)",
                ));
            }
            if m.ino() == ROOT_INO {
                return Err(CliError::new(
                    ctx(),
                    "refusing to remove the root directory",
                ));
            }
            last_name(path, "remove")?;
            // Before freeing anything, check that the directories form a tree: on the
            // clean-mount fast path nothing has, and a second name of a directory about to be
            // freed may be anywhere, so the whole tree is walked (directories only).
            fs.engine()
                .walk_dirs(ROOT_INO, usize::MAX, |_, _, _| Ok(()))
                .with_context(ctx)?;
            remove_tree(fs.engine(), m.ino(), path)?;
            fs.remove_dir(path).with_context(ctx)
        } else {
            last_name(path, "remove")?;
            fs.remove_file(path).with_context(ctx)
        }
    })
}

/// `novafs mv`.
pub fn mv(image: &Path, from: &Path, to: &Path, no_target_dir: bool) -> CliResult<()> {
    with_fs(image, |fs| {
        let name = last_name(from, "move")?;
        let mut dest = to.to_path_buf();
        if !no_target_dir && fs.metadata(to).is_ok_and(|m| m.is_dir()) {
            dest.push(name);
        }
        fs.rename(from, &dest)
            .with_context(|| format!("cannot move {} to {}", from.display(), dest.display()))
    })
}

/// `novafs ln`.
pub fn ln(image: &Path, target: &Path, link: &Path, symbolic: bool) -> CliResult<()> {
    with_fs(image, |fs| {
        let ctx = || format!("cannot link {} to {}", link.display(), target.display());
        if symbolic {
            fs.symlink(target, link).with_context(ctx)
        } else {
            fs.hard_link(target, link).with_context(ctx)
        }
    })
}

/// The JSON object of `stat --json`, `ls --json` and `tree --json`: `key` (`path` or `name`)
/// set to `label`, every attribute, and a symlink's target.
fn attr_json(key: &str, label: &str, a: &Attr, target: Option<&[u8]>) -> serde_json::Value {
    let mut v = json!({
        key: label,
        "kind": a.kind.name(),
        "ino": a.ino,
        "generation": a.generation,
        "size": a.size,
        "blocks": a.blocks,
        "nlink": a.nlink,
        "mode": a.mode & 0o7777,
        "mode_octal": format!("{:04o}", a.mode & 0o7777),
        "uid": a.uid,
        "gid": a.gid,
        "atime_ns": a.atime_ns,
        "mtime_ns": a.mtime_ns,
        "ctime_ns": a.ctime_ns,
        "crtime_ns": a.crtime_ns,
        "rdev": a.rdev,
    });
    if let (Some(t), Some(o)) = (target, v.as_object_mut()) {
        o.insert(
            "target".into(),
            String::from_utf8_lossy(t).into_owned().into(),
        );
    }
    v
}

/// `novafs ls --json`: one JSON array of entries (the fields of `stat --json`, plus name).
pub fn ls_json(image: &Path, path: &Path) -> CliResult<()> {
    let rows = with_fs(image, |fs| {
        let ctx = || shown(path);
        let own = fs.symlink_metadata(path).with_context(ctx)?;
        let engine = fs.engine();
        if own.is_dir() || (own.is_symlink() && fs.metadata(path).is_ok_and(|m| m.is_dir())) {
            let entries = sorted_entries(fs, path).with_context(ctx)?;
            entries
                .into_iter()
                .map(|(name, ino)| row(engine, name, ino).with_context(ctx))
                .collect::<CliResult<Vec<Row>>>()
        } else {
            let name = path.as_os_str().as_bytes().to_vec();
            Ok(vec![row(engine, name, own.ino()).with_context(ctx)?])
        }
    })?;
    let v: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            attr_json(
                "name",
                &String::from_utf8_lossy(&r.name),
                &r.attr,
                r.target.as_deref(),
            )
        })
        .collect();
    let mut out = Out::new();
    out.line(serde_json::to_string_pretty(&v).context("encoding JSON")?)?;
    out.finish()
}

/// `novafs df`: space and inodes, like df(1).
/// `novafs resize`: grow the image offline to `size` (`+N`: by N bytes).
pub fn resize(image: &Path, size: &str) -> CliResult<()> {
    let (relative, spec) = match size.trim().strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, size),
    };
    let n = crate::units::parse_size(spec).map_err(|e| CliError::new("", e))?;
    let ctx = || format!("cannot resize {}", image.display());
    let current = image
        .metadata()
        .map_err(|e| CliError::new(ctx(), e.to_string()))?
        .len();
    let mut target = if relative {
        current.saturating_add(n)
    } else {
        n
    };
    target -= target % 4096;
    // Reserve exactly the address space the new size needs: the mount grows only once.
    let opts = MountOptions {
        grow_limit: target,
        ..MountOptions::default()
    };
    let fs = Fs::open(image, &opts).with_context(ctx)?;
    let before = fs.statfs().with_context(ctx)?;
    let grown = fs.grow(target);
    let unmounted = fs.unmount().with_context(ctx);
    let added = grown.with_context(ctx)?;
    unmounted?;
    let bs = before.block_size;
    let mut out = Out::new();
    if added == 0 {
        out.line(format!(
            "{} is already {} ({} blocks)",
            image.display(),
            human_bytes(before.blocks_total * bs),
            before.blocks_total
        ))?;
    } else {
        out.line(format!(
            "grew {}: {} -> {} ({} blocks added)",
            image.display(),
            human_bytes(before.blocks_total * bs),
            human_bytes(before.blocks_total * bs + added),
            added / bs
        ))?;
    }
    out.finish()
}

pub fn df(image: &Path, as_json: bool) -> CliResult<()> {
    let st = with_fs(image, |fs| {
        fs.statfs().with_context(|| "statfs".to_string())
    })
    .map_err(|e| {
        CliError::new(
            "",
            format!("{e} (if the image is mounted through FUSE, run df on its mount point)"),
        )
    })?;
    let bs = st.block_size;
    let used = st.blocks_total.saturating_sub(st.blocks_free);
    let pct = |part: u64, whole: u64| {
        if whole == 0 {
            0
        } else {
            (part * 100).div_ceil(whole)
        }
    };
    let inodes_used = st.inodes_total.saturating_sub(st.inodes_free);
    let mut out = Out::new();
    if as_json {
        let v = json!({
            "image": shown(image),
            "block_size": bs,
            "size_bytes": st.blocks_total * bs,
            "used_bytes": used * bs,
            "available_bytes": st.blocks_avail * bs,
            "reserved_bytes": (st.blocks_free - st.blocks_avail) * bs,
            "use_percent": pct(used, used + st.blocks_avail),
            "inodes_total": st.inodes_total,
            "inodes_used": inodes_used,
            "inodes_free": st.inodes_free,
            "inodes_use_percent": pct(inodes_used, st.inodes_total),
        });
        out.line(serde_json::to_string_pretty(&v).context("encoding JSON")?)?;
    } else {
        out.line(format!(
            "{:<24} {:>10} {:>10} {:>10} {:>5} {:>10} {:>10} {:>6}",
            "Image", "Size", "Used", "Avail", "Use%", "Inodes", "IUsed", "IUse%"
        ))?;
        out.line(format!(
            "{:<24} {:>10} {:>10} {:>10} {:>4}% {:>10} {:>10} {:>5}%",
            shown(image),
            human_bytes(st.blocks_total * bs),
            human_bytes(used * bs),
            human_bytes(st.blocks_avail * bs),
            pct(used, used + st.blocks_avail),
            st.inodes_total,
            inodes_used,
            pct(inodes_used, st.inodes_total)
        ))?;
    }
    out.finish()
}

/// Levels `novafs tree` shows at most (its walk and output recurse per level).
const TREE_DEPTH_MAX: usize = 1024;

/// `novafs tree`: the directory tree below PATH (symlinks shown, not followed).
pub fn tree(image: &Path, path: &Path, max_depth: Option<usize>, as_json: bool) -> CliResult<()> {
    fn walk(
        engine: &Engine,
        name: &str,
        ino: u64,
        depth: usize,
        max: Option<usize>,
        counts: &mut (u64, u64),
    ) -> novafs::Result<serde_json::Value> {
        let r = row(engine, Vec::new(), ino)?;
        let mut v = attr_json("name", name, &r.attr, r.target.as_deref());
        if r.attr.kind == Kind::Dir {
            if depth > 0 {
                counts.0 += 1;
            }
            if max.is_none_or(|m| depth < m) {
                let mut entries = engine.readdir(ino)?;
                entries.sort_by(|a, b| a.name.cmp(&b.name));
                let children = entries
                    .iter()
                    .map(|e| {
                        walk(
                            engine,
                            &String::from_utf8_lossy(&e.name),
                            e.ino,
                            depth + 1,
                            max,
                            counts,
                        )
                    })
                    .collect::<novafs::Result<Vec<_>>>()?;
                if let Some(o) = v.as_object_mut() {
                    o.insert("children".into(), children.into());
                }
            }
        } else {
            counts.1 += 1;
        }
        Ok(v)
    }
    let mut counts = (0u64, 0u64);
    let v = with_fs(image, |fs| {
        let ino = fs
            .symlink_metadata(path)
            .with_context(|| shown(path))?
            .ino();
        // The recursion below (and the JSON it builds) is only as deep as the tree: check
        // first that it is a tree (no cycle) of bounded depth.
        let depth_max = max_depth.unwrap_or(usize::MAX).min(TREE_DEPTH_MAX + 1);
        let mut deepest = 0;
        if fs
            .symlink_metadata(path)
            .with_context(|| shown(path))?
            .is_dir()
        {
            fs.engine()
                .walk_dirs(ino, depth_max, |_, depth, _| {
                    deepest = deepest.max(depth);
                    Ok(())
                })
                .with_context(|| shown(path))?;
        }
        if deepest > TREE_DEPTH_MAX {
            return Err(CliError::new(
                shown(path),
                format!("the tree is deeper than {TREE_DEPTH_MAX} levels (use --max-depth)"),
            ));
        }
        walk(fs.engine(), &shown(path), ino, 0, max_depth, &mut counts).with_context(|| shown(path))
    })?;
    let mut out = Out::new();
    if as_json {
        out.line(serde_json::to_string_pretty(&v).context("encoding JSON")?)?;
        return out.finish();
    }
    fn print(out: &mut Out, v: &serde_json::Value, prefix: &str) -> CliResult<()> {
        let Some(children) = v.get("children").and_then(|c| c.as_array()) else {
            return Ok(());
        };
        for (i, c) in children.iter().enumerate() {
            let last = i + 1 == children.len();
            let name = c["name"].as_str().unwrap_or("?");
            let detail = match c["kind"].as_str() {
                Some("dir") => "/".to_string(),
                Some("symlink") => format!(" -> {}", c["target"].as_str().unwrap_or("")),
                _ => format!("  ({})", human_bytes(c["size"].as_u64().unwrap_or(0))),
            };
            out.line(format!(
                "{prefix}{}{name}{detail}",
                if last { "└── " } else { "├── " }
            ))?;
            print(
                out,
                c,
                &format!("{prefix}{}", if last { "    " } else { "│   " }),
            )?;
        }
        Ok(())
    }
    out.line(shown(path))?;
    print(&mut out, &v, "")?;
    out.line(format!("\n{} directories, {} files", counts.0, counts.1))?;
    out.finish()
}
