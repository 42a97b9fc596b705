//! Extended attributes and POSIX ACLs (DESIGN.md §5.10).
//!
//! An attribute lives in its inode's log: `XattrSet` (name + the value's last bytes, the rest in
//! `XattrChunk` entries just before it in the same append) and `XattrRemove`. Every set or
//! removal is one append, committed by one tail store (§5.1); replay rebuilds the DRAM index
//! (`InodeState::xattrs`), and GC counts each attribute as a live key of the pages holding its
//! entries (§5.7).
//!
//! POSIX ACLs are the attributes `system.posix_acl_access` and `system.posix_acl_default` in
//! Linux's xattr encoding. The file system keeps them consistent with the mode, as a Linux file
//! system does: setting the access ACL sets the permission bits in the same commit (and an ACL
//! that the mode alone expresses is not stored); a mode change rewrites the access ACL's owner,
//! mask (or group) and other entries in the same commit; a new inode in a directory with a
//! default ACL inherits it (`posix_acl_create`).
#![forbid(unsafe_code)]

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::layout::entry::{
    xattr_name_valid, xattr_set_entries, Entry, XATTR_NAME_MAX, XATTR_VALUE_MAX,
};
use crate::layout::{now_ns, Kind};

/// `system.posix_acl_access`.
pub const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
/// `system.posix_acl_default`.
pub const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";

/// How `set_xattr` treats an existing attribute (`setxattr(2)` flags).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XattrFlags {
    /// Create or replace.
    #[default]
    Any,
    /// `XATTR_CREATE`: fail with `AlreadyExists` if it exists.
    Create,
    /// `XATTR_REPLACE`: fail with `NoData` if it does not exist.
    Replace,
}

/// What setting `system.posix_acl_access` does to the set-group-ID bit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AclSgid {
    /// Keep it: the caller is in the file's group or has `CAP_FSETID` (the library's case).
    #[default]
    Keep,
    /// Clear it in the same commit: the caller is neither (Linux's `posix_acl_update_mode`;
    /// the FUSE front end works this out for the kernel's "kill SGID" hint).
    Clear,
}

impl XattrFlags {
    /// From `setxattr(2)`'s flags (`XATTR_CREATE` 1, `XATTR_REPLACE` 2; both: `InvalidArgument`).
    pub fn from_bits(flags: i32) -> Result<XattrFlags> {
        match flags {
            0 => Ok(XattrFlags::Any),
            1 => Ok(XattrFlags::Create),
            2 => Ok(XattrFlags::Replace),
            _ => Err(Error::InvalidArgument("setxattr flags".into())),
        }
    }
}

/// Check an attribute name: ERANGE for an empty or over-long one (as Linux), EOPNOTSUPP for a
/// namespace this file system does not store.
pub fn check_xattr_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name.len() > XATTR_NAME_MAX {
        return Err(Error::OutOfRange("xattr name of 1..=255 bytes"));
    }
    if !xattr_name_valid(name) {
        return Err(Error::NotSupported(
            "xattr namespace (user., trusted., security., system.posix_acl_access/default)",
        ));
    }
    Ok(())
}

// ----- POSIX ACLs (Linux's xattr encoding: u32 version 2, then {tag u16, perm u16, id u32}) -----

const ACL_VERSION: u32 = 2;
/// The set-group-ID bit of a mode.
const S_ISGID: u32 = 0o2000;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

/// One ACL entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AclEntry {
    /// Tag.
    pub tag: u16,
    /// rwx bits.
    pub perm: u16,
    /// uid or gid (named entries).
    pub id: u32,
}

/// Parse and validate an ACL in xattr form (what `posix_acl_valid` accepts: each of
/// USER_OBJ, GROUP_OBJ, OTHER once, a MASK at most once and required with named entries).
pub fn parse_acl(v: &[u8]) -> Result<Vec<AclEntry>> {
    let bad = || Error::InvalidArgument("malformed POSIX ACL".into());
    if v.len() < 4 || !(v.len() - 4).is_multiple_of(8) {
        return Err(bad());
    }
    if u32::from_le_bytes(v[0..4].try_into().unwrap()) != ACL_VERSION {
        return Err(bad());
    }
    let es: Vec<AclEntry> = v[4..]
        .chunks_exact(8)
        .map(|c| AclEntry {
            tag: u16::from_le_bytes([c[0], c[1]]),
            perm: u16::from_le_bytes([c[2], c[3]]),
            id: u32::from_le_bytes(c[4..8].try_into().unwrap()),
        })
        .collect();
    let count = |t| es.iter().filter(|e| e.tag == t).count();
    let named = count(USER) + count(GROUP);
    if count(USER_OBJ) != 1
        || count(GROUP_OBJ) != 1
        || count(OTHER) != 1
        || count(MASK) > 1
        || (named > 0 && count(MASK) != 1)
        || es.iter().any(|e| {
            e.perm & !7 != 0 || ![USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER].contains(&e.tag)
        })
    {
        return Err(bad());
    }
    Ok(es)
}

/// Encode an ACL in xattr form.
pub fn encode_acl(es: &[AclEntry]) -> Vec<u8> {
    let mut v = ACL_VERSION.to_le_bytes().to_vec();
    for e in es {
        v.extend_from_slice(&e.tag.to_le_bytes());
        v.extend_from_slice(&e.perm.to_le_bytes());
        v.extend_from_slice(&e.id.to_le_bytes());
    }
    v
}

/// The permission bits an access ACL gives (`posix_acl_equiv_mode`), and whether the mode
/// alone expresses it (no named entries, no mask).
pub fn acl_mode(es: &[AclEntry]) -> (u32, bool) {
    let mut mode = 0u32;
    let mut equiv = true;
    let mut mask = None;
    for e in es {
        let p = e.perm as u32;
        match e.tag {
            USER_OBJ => mode |= p << 6,
            GROUP_OBJ => mode |= p << 3,
            OTHER => mode |= p,
            MASK => {
                mask = Some(p);
                equiv = false;
            }
            _ => equiv = false,
        }
    }
    if let Some(m) = mask {
        mode = (mode & !0o070) | (m << 3);
    }
    (mode, equiv)
}

/// `posix_acl_chmod`: the access ACL after a mode change.
pub fn acl_chmod(es: &mut [AclEntry], mode: u32) {
    let has_mask = es.iter().any(|e| e.tag == MASK);
    for e in es {
        match e.tag {
            USER_OBJ => e.perm = ((mode >> 6) & 7) as u16,
            GROUP_OBJ if !has_mask => e.perm = ((mode >> 3) & 7) as u16,
            MASK => e.perm = ((mode >> 3) & 7) as u16,
            OTHER => e.perm = (mode & 7) as u16,
            _ => {}
        }
    }
}

/// `posix_acl_create_masq`: a new inode's access ACL from its directory's default ACL and the
/// mode it was created with; returns the ACL (None when the mode alone expresses it) and the
/// new permission bits.
pub fn acl_create(default: &[AclEntry], mode: u32) -> (Option<Vec<AclEntry>>, u32) {
    let mut es = default.to_vec();
    let mut m = mode & 0o777;
    let mut not_equiv = false;
    let mut group_obj = None;
    let mut mask_obj = None;
    for (i, e) in es.iter_mut().enumerate() {
        match e.tag {
            USER_OBJ => {
                e.perm &= ((m >> 6) & 7) as u16;
                m &= ((e.perm as u32) << 6) | !0o700;
            }
            USER | GROUP => not_equiv = true,
            GROUP_OBJ => group_obj = Some(i),
            OTHER => {
                e.perm &= (m & 7) as u16;
                m &= (e.perm as u32) | !0o007;
            }
            MASK => {
                mask_obj = Some(i);
                not_equiv = true;
            }
            _ => {}
        }
    }
    let at = mask_obj.or(group_obj);
    if let Some(i) = at {
        es[i].perm &= ((m >> 3) & 7) as u16;
        m &= ((es[i].perm as u32) << 3) | !0o070;
    }
    ((not_equiv).then_some(es), m & 0o777)
}

impl Engine {
    /// The value of extended attribute `name` of inode `ino` (`NoData` if it has none).
    pub fn get_xattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        check_xattr_name(name)?;
        let i = self.inode(ino)?;
        let st = i.state.read();
        self.check_mounted()?;
        if st.freed {
            return Err(Error::NotFound);
        }
        st.xattrs()
            .get(name)
            .map(|x| x.value.clone())
            .ok_or(Error::NoData)
    }

    /// The names of inode `ino`'s extended attributes, in byte order.
    pub fn list_xattr(&self, ino: u64) -> Result<Vec<Vec<u8>>> {
        let i = self.inode(ino)?;
        let st = i.state.read();
        self.check_mounted()?;
        if st.freed {
            return Err(Error::NotFound);
        }
        Ok(st.xattrs().keys().map(|k| k.to_vec()).collect())
    }

    /// Set extended attribute `name` of inode `ino` to `value`: one atomic, durable commit
    /// (one log append, one tail store). Setting `system.posix_acl_access` also sets the
    /// permission bits it implies, in the same commit (an ACL the mode alone expresses is not
    /// stored, as on Linux). Errors as `setxattr(2)` on ext4: `OutOfRange` (ERANGE) for a bad
    /// name length, `TooBig` (E2BIG) past 64 KiB, `NotSupported` for another namespace,
    /// `AlreadyExists`/`NoData` for `Create`/`Replace`, `NotPermitted` for `user.` on other
    /// than files and directories, `PermissionDenied` for a default ACL on a non-directory,
    /// `NoSpace`.
    pub fn set_xattr(&self, ino: u64, name: &[u8], value: &[u8], flags: XattrFlags) -> Result<()> {
        self.set_xattr_sgid(ino, name, value, flags, AclSgid::Keep)
    }

    /// [`Engine::set_xattr`], with what an access ACL does to the set-group-ID bit (`sgid`
    /// matters only for `system.posix_acl_access`).
    pub fn set_xattr_sgid(
        &self,
        ino: u64,
        name: &[u8],
        value: &[u8],
        flags: XattrFlags,
        sgid: AclSgid,
    ) -> Result<()> {
        check_xattr_name(name)?;
        if value.len() > XATTR_VALUE_MAX {
            return Err(Error::TooBig("xattr value larger than 64 KiB"));
        }
        let acl = if name == ACL_ACCESS || name == ACL_DEFAULT {
            Some(parse_acl(value)?)
        } else {
            None
        };
        let _op = self.writable()?;
        let i = self.inode(ino)?;
        let mut st = i.state.write();
        if st.freed {
            return Err(Error::NotFound);
        }
        let kind = st.attr.kind;
        if name.starts_with(b"user.") && !matches!(kind, Kind::File | Kind::Dir) {
            return Err(Error::NotPermitted(
                "user. attributes on other than files and directories",
            ));
        }
        if name == ACL_DEFAULT && kind != Kind::Dir {
            return Err(Error::PermissionDenied("a default ACL on a non-directory"));
        }
        if kind == Kind::Symlink && acl.is_some() {
            return Err(Error::NotSupported("ACLs on symbolic links"));
        }
        let exists = st.xattrs().contains_key(name);
        match flags {
            XattrFlags::Create if exists => return Err(Error::AlreadyExists),
            XattrFlags::Replace if !exists => return Err(Error::NoData),
            _ => {}
        }
        let now = now_ns();
        let mut entries = Vec::new();
        let mut store = true;
        if let (Some(es), true) = (&acl, name == ACL_ACCESS) {
            let (bits, equiv) = acl_mode(es);
            let mut a = crate::layout::entry::SetAttrEntry::zeroed_entry();
            a.mask = crate::layout::entry::attr_mask::MODE | crate::layout::entry::attr_mask::CTIME;
            a.mode = (st.attr.mode & !0o777) | bits;
            if sgid == AclSgid::Clear {
                a.mode &= !S_ISGID;
            }
            a.ctime_ns = now;
            entries.push(Entry::SetAttr(a));
            if equiv {
                store = false;
                if exists {
                    entries.push(Entry::XattrRemove {
                        name: name.to_vec(),
                        ctime_ns: now,
                    });
                }
            }
        }
        if store {
            entries.extend(xattr_set_entries(name, value, now));
        }
        let mut txn = self.txn("setxattr");
        txn.append(ino, i.slot_off, &st, entries)?;
        let mut done = txn.commit()?;
        for b in self.apply(&mut done, ino, i.slot_off, &mut st) {
            self.blocks.free(b, 1);
        }
        Ok(())
    }

    /// Remove extended attribute `name` of inode `ino` (`NoData` if it has none): one atomic,
    /// durable commit. Removing the access ACL leaves the permission bits as they are.
    pub fn remove_xattr(&self, ino: u64, name: &[u8]) -> Result<()> {
        check_xattr_name(name)?;
        let _op = self.writable()?;
        let i = self.inode(ino)?;
        let mut st = i.state.write();
        if st.freed {
            return Err(Error::NotFound);
        }
        if !st.xattrs().contains_key(name) {
            return Err(Error::NoData);
        }
        let entries = vec![Entry::XattrRemove {
            name: name.to_vec(),
            ctime_ns: now_ns(),
        }];
        // A removal may use the reserve: it frees what the attribute held.
        let mut txn = self.txn("removexattr").frees_space(true);
        txn.append(ino, i.slot_off, &st, entries)?;
        let mut done = txn.commit()?;
        for b in self.apply(&mut done, ino, i.slot_off, &mut st) {
            self.blocks.free(b, 1);
        }
        Ok(())
    }
}

/// The entry that keeps an access ACL consistent with a new mode (`None`: no ACL, or it
/// already agrees).
pub(crate) fn chmod_acl_entry(
    xattrs: &std::collections::BTreeMap<Box<[u8]>, crate::inode::Xattr>,
    mode: u32,
    now: u64,
) -> Vec<Entry> {
    let Some(x) = xattrs.get(ACL_ACCESS) else {
        return Vec::new();
    };
    let Ok(mut es) = parse_acl(&x.value) else {
        return Vec::new();
    };
    acl_chmod(&mut es, mode);
    let v = encode_acl(&es);
    if v == x.value {
        return Vec::new();
    }
    xattr_set_entries(ACL_ACCESS, &v, now)
}

/// An attribute a new inode inherits: (name, value).
pub(crate) type Inherited = (&'static [u8], Vec<u8>);

/// A new inode's attributes inherited from its directory's default ACL: the xattrs to set and
/// the permission bits (`mode` unchanged without a default ACL, or for a symlink).
pub(crate) fn inherit_acl(
    parent: &std::collections::BTreeMap<Box<[u8]>, crate::inode::Xattr>,
    kind: Kind,
    mode: u32,
) -> (Vec<Inherited>, u32) {
    let Some(d) = parent.get(ACL_DEFAULT) else {
        return (Vec::new(), mode);
    };
    let Ok(def) = parse_acl(&d.value) else {
        return (Vec::new(), mode);
    };
    if kind == Kind::Symlink {
        return (Vec::new(), mode);
    }
    let (access, bits) = acl_create(&def, mode);
    let mut out = Vec::new();
    if kind == Kind::Dir {
        out.push((ACL_DEFAULT, d.value.clone()));
    }
    if let Some(a) = access {
        out.push((ACL_ACCESS, encode_acl(&a)));
    }
    (out, (mode & !0o777) | bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(tag: u16, perm: u16, id: u32) -> AclEntry {
        AclEntry { tag, perm, id }
    }

    #[test]
    fn acl_round_trip_and_mode() {
        let es = vec![
            e(USER_OBJ, 6, 0),
            e(USER, 4, 1000),
            e(GROUP_OBJ, 4, 0),
            e(MASK, 5, 0),
            e(OTHER, 0, 0),
        ];
        let v = encode_acl(&es);
        assert_eq!(parse_acl(&v).unwrap(), es);
        assert_eq!(acl_mode(&es), (0o650, false));
        let mut c = es.clone();
        acl_chmod(&mut c, 0o704);
        assert_eq!(acl_mode(&c), (0o704, false));
        assert_eq!(c[2].perm, 4, "group_obj kept when a mask exists");
        assert!(parse_acl(&v[..v.len() - 1]).is_err());
        assert!(parse_acl(&encode_acl(&es[1..])).is_err(), "no USER_OBJ");
        let no_mask = vec![es[0], es[1], es[2], es[4]];
        assert!(
            parse_acl(&encode_acl(&no_mask)).is_err(),
            "named entry without mask"
        );
        let (acl, bits) = acl_create(&es, 0o666);
        assert_eq!(bits, 0o640);
        assert_eq!(acl.unwrap()[3].perm, 4);
        let plain = vec![e(USER_OBJ, 7, 0), e(GROUP_OBJ, 5, 0), e(OTHER, 5, 0)];
        assert_eq!(acl_create(&plain, 0o666), (None, 0o644));
    }
}
