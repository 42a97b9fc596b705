//! Path resolution over the inode-level API.

use novafs_engine::{Engine, Error, Kind, Result, NAME_MAX, ROOT_INO};

/// Symlinks followed in one resolution before `Loop`.
const MAX_SYMLINKS: u32 = 40;

/// A path's names, inline up to 8 (no allocation for the paths most calls get).
type Components<'a> = smallvec::SmallVec<[&'a [u8]; 8]>;

/// The names of `path` into `out` (cleared first): split at `/`, empty names and `.` left
/// out. One pass over the bytes, filling the caller's inline list (no move of it).
fn components<'a>(path: &'a [u8], out: &mut Components<'a>) -> Result<()> {
    if path.is_empty() {
        return Err(Error::InvalidPath("empty path".into()));
    }
    out.clear();
    // The first name longer than NAME_MAX: reported after the whole path is known free of
    // NUL (a NUL anywhere is the error a caller gets first).
    let mut too_long = None;
    let mut start = 0;
    for (i, &b) in path.iter().enumerate() {
        match b {
            b'/' => {
                push_name(&path[start..i], out, &mut too_long);
                start = i + 1;
            }
            0 => return Err(Error::InvalidPath("path contains NUL".into())),
            _ => {}
        }
    }
    push_name(&path[start..], out, &mut too_long);
    match too_long {
        Some(len) => Err(Error::NameTooLong(len)),
        None => Ok(()),
    }
}

/// One name of a path, unless empty or `.`.
fn push_name<'a>(name: &'a [u8], out: &mut Components<'a>, too_long: &mut Option<usize>) {
    if name.is_empty() || name == b"." {
        return;
    }
    if name.len() > NAME_MAX && too_long.is_none() {
        *too_long = Some(name.len());
    }
    out.push(name);
}

fn walk(
    engine: &Engine,
    start: u64,
    comps: &[&[u8]],
    follow_last: bool,
    links: &mut u32,
) -> Result<u64> {
    let mut cur = start;
    for (i, comp) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let ent = engine.lookup_ent(cur, comp)?;
        if ent.kind == Kind::Symlink && (!last || follow_last) {
            *links += 1;
            if *links > MAX_SYMLINKS {
                return Err(Error::Loop);
            }
            let target = engine.readlink(ent.ino)?;
            let base = if target.first() == Some(&b'/') {
                ROOT_INO
            } else {
                cur
            };
            let mut tcomps = Components::new();
            components(&target, &mut tcomps)?;
            cur = walk(engine, base, &tcomps, true, links)?;
        } else {
            cur = ent.ino;
        }
    }
    Ok(cur)
}

/// Resolve `path` (absolute, or relative to the root) to an inode.
pub fn resolve(engine: &Engine, path: &[u8], follow_last: bool) -> Result<u64> {
    let mut comps = Components::new();
    components(path, &mut comps)?;
    walk(engine, ROOT_INO, &comps, follow_last, &mut 0)
}

/// Resolve the parent directory of `path` and return it with the last name (a slice of
/// `path`).
pub fn resolve_parent<'p>(engine: &Engine, path: &'p [u8]) -> Result<Parent<'p>> {
    let mut comps = Components::new();
    components(path, &mut comps)?;
    let (dirs, last) = split_parent(&comps)?;
    let parent = walk(engine, ROOT_INO, dirs, true, &mut 0)?;
    Ok((parent, last))
}

/// A parent directory and the last name of a path in it.
pub type Parent<'p> = (u64, &'p [u8]);

/// The parents of two paths and their last names ([`resolve_parent`] of each), the directory
/// walked once when both name it by the same components (a rename within one directory).
pub fn resolve_parents<'p, 'q>(
    engine: &Engine,
    a: &'p [u8],
    b: &'q [u8],
) -> Result<(Parent<'p>, Parent<'q>)> {
    // In the order of two `resolve_parent` calls: `a`'s errors come first.
    let mut ca = Components::new();
    components(a, &mut ca)?;
    let (dirs_a, last_a) = split_parent(&ca)?;
    let pa = walk(engine, ROOT_INO, dirs_a, true, &mut 0)?;
    let mut cb = Components::new();
    components(b, &mut cb)?;
    let (dirs_b, last_b) = split_parent(&cb)?;
    let pb = if dirs_a == dirs_b {
        pa
    } else {
        walk(engine, ROOT_INO, dirs_b, true, &mut 0)?
    };
    Ok(((pa, last_a), (pb, last_b)))
}

/// A path's directory components and last name; the root and a last `..` name no entry.
fn split_parent<'c, 'p>(comps: &'c [&'p [u8]]) -> Result<(&'c [&'p [u8]], &'p [u8])> {
    let Some((last, dirs)) = comps.split_last() else {
        return Err(Error::InvalidPath("the root has no name".into()));
    };
    if *last == b".." {
        return Err(Error::InvalidPath(
            "a path ending in '..' names no entry".into(),
        ));
    }
    Ok((dirs, *last))
}
