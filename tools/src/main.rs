//! `novafs`: format, inspect and edit novafs images from the shell.
//!
//! Invoked as `mkfs.novafs` (a copy or symlink of the binary), it behaves as `novafs mkfs`; as
//! `fsck.novafs`, as `novafs fsck`; as `mount.novafs`, as `novafs mount`.

mod commands;
mod crashtest;
mod demo;
mod error;
mod fsck;
mod inspect;
mod mount;
mod units;

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::error::CliResult;

const LONG_ABOUT: &str = "\
novafs: format, inspect and edit novafs images.

novafs is a NOVA-style log-structured file system for persistent memory. An image is a plain \
file: on a DAX file system it is mapped with MAP_SYNC (media mode 'dax'), on tmpfs such as \
/dev/shm it is treated as emulated persistent memory ('emulated'), anywhere else every persist \
point is also msync'ed ('msync').

Every command mounts the image, does its work (each change is atomic and durable when it \
returns) and unmounts it cleanly. PATH arguments are paths inside the image ('/' is its root; \
relative paths start at the root). Errors are printed as 'novafs: <context>: <error>' and exit \
with status 1; usage errors exit with status 2.";

const EXAMPLES: &str = "\
Examples:
  novafs demo                                  # format, fill, verify and time a demo image
  novafs mkfs /dev/shm/pm.img --size 1GiB      # make an image
  novafs put /dev/shm/pm.img ./notes.txt /notes.txt
  novafs ls -l /dev/shm/pm.img /
  novafs cat /dev/shm/pm.img /notes.txt
  novafs info /dev/shm/pm.img --json
  novafs df /dev/shm/pm.img
  novafs tree /dev/shm/pm.img
  novafs inspect /dev/shm/pm.img --path /notes.txt
  novafs fsck /dev/shm/pm.img                  # check (read-only); -y repairs
  novafs mount /dev/shm/pm.img /mnt/pm         # serve it through FUSE
  fusermount3 -u /mnt/pm";

const MKFS_EXAMPLES: &str = "\
Examples:
  novafs mkfs /dev/shm/pm.img                  # 1 GiB image on tmpfs (emulated pmem)
  novafs mkfs /mnt/pmem0/fs.img --size 16GiB   # on a DAX file system
  mkfs.novafs ./test.img --size 64M --force-emulated";

#[derive(Parser, Debug)]
#[command(
    name = "novafs",
    version,
    about = "Format, inspect and edit novafs persistent-memory file system images",
    long_about = LONG_ABOUT,
    after_help = EXAMPLES,
    propagate_version = true,
    subcommand_required = true,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `mkfs.novafs`: the same as `novafs mkfs`.
#[derive(Parser, Debug)]
#[command(
    name = "mkfs.novafs",
    version,
    about = "Format an image file as an empty novafs file system (same as `novafs mkfs`)",
    after_help = MKFS_EXAMPLES
)]
struct MkfsCli {
    #[command(flatten)]
    args: MkfsArgs,
}

const FSCK_EXAMPLES: &str = "\
Exit status (as e2fsck): 0 no errors, 1 errors corrected, 4 errors left uncorrected,
8 operational error (cannot open the image, image in use, not novafs), 16 usage error.
An interrupted operation in the journal is not an error but \"needs recovery\": -n checks the
image as recovery will leave it and says what recovery will do; -y applies it (as mount does).

Examples:
  novafs fsck /dev/shm/pm.img                  # check only (-n is the default)
  novafs fsck -y /dev/shm/pm.img               # repair
  fsck.novafs -n --json /dev/shm/pm.img | jq .errors_found";

/// `fsck.novafs`: the same as `novafs fsck`.
#[derive(Parser, Debug)]
#[command(
    name = "fsck.novafs",
    version,
    about = "Check and repair a novafs image (same as `novafs fsck`)",
    after_help = FSCK_EXAMPLES
)]
struct FsckCli {
    #[command(flatten)]
    args: FsckArgs,
}

/// `mount.novafs`: the same as `novafs mount` (the mount(8) helper calling convention:
/// `mount.novafs IMAGE DIR [-sfnv] [-o OPTIONS]`).
#[derive(Parser, Debug)]
#[command(
    name = "mount.novafs",
    version,
    about = "Mount a novafs image through FUSE (same as `novafs mount`)",
    after_help = mount::MOUNT_EXAMPLES
)]
struct MountCli {
    #[command(flatten)]
    args: mount::MountArgs,
}

#[derive(Args, Debug)]
struct FsckArgs {
    /// Image file (must not be mounted: it is opened with the exclusive lock)
    image: PathBuf,
    /// Check only, change nothing (the default)
    #[arg(short = 'n', long = "no", conflicts_with = "yes")]
    no: bool,
    /// Repair every problem that can be repaired
    #[arg(short = 'y', long = "yes")]
    yes: bool,
    /// Force a full check of a clean image (the full check always runs: it is fast)
    #[arg(short = 'f', long)]
    force: bool,
    /// Print one JSON object (errors_found, errors_fixed, errors_left, inodes_checked,
    /// blocks_checked, problems, ...)
    #[arg(long)]
    json: bool,
    /// Threads that load inodes ahead (0: one per core; 1: the check's own thread only).
    /// The findings and repairs are the same with any number
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

impl FsckArgs {
    fn run(&self) -> i32 {
        fsck::run(
            &self.image,
            &fsck::Options {
                repair: self.yes && !self.no,
                force: self.force,
                json: self.json,
                threads: self.threads,
            },
        )
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Format an image file as an empty novafs file system.
    ///
    /// The file is created, or truncated and overwritten: everything in it is lost. The size
    /// must be a multiple of 4096 bytes and at least 1 MiB.
    #[command(after_help = MKFS_EXAMPLES)]
    Mkfs(MkfsArgs),

    /// Show the size, free space and media mode of an image.
    ///
    /// Mounting runs recovery first if the last session did not unmount cleanly; the output
    /// says whether the mount was clean or recovered.
    #[command(after_help = "\
Examples:
  novafs info /dev/shm/pm.img
  novafs info /dev/shm/pm.img --json | jq .blocks_free")]
    Info(InfoArgs),

    /// List a directory (sorted by name).
    ///
    /// With -l each line shows kind, permission bits (octal), link count, size, inode number
    /// and name; symlinks also show their target. A PATH that is not a directory lists just
    /// that entry.
    #[command(after_help = "\
Examples:
  novafs ls /dev/shm/pm.img
  novafs ls -l /dev/shm/pm.img /logs")]
    Ls(LsArgs),

    /// Grow an image to a new size (offline: the image must not be mounted elsewhere).
    ///
    /// The file is extended and the new space handed to the file system in one atomic commit:
    /// after a crash the image has its old size or its new one. SIZE is the new total size,
    /// or '+N' to add N bytes; it is rounded down to a multiple of 4096. Shrinking is refused.
    /// A mounted image grows with Fs::grow.
    #[command(after_help = "\
Examples:
  novafs resize /dev/shm/pm.img 4GiB
  novafs resize /dev/shm/pm.img +512MiB")]
    Resize(ResizeArgs),

    /// Show free space and inodes, like df(1).
    ///
    /// Available space excludes the small reserve kept so that deleting always works on a
    /// full image.
    #[command(after_help = "\
Examples:
  novafs df /dev/shm/pm.img
  novafs df /dev/shm/pm.img --json | jq .available_bytes")]
    Df(DfArgs),

    /// Show the directory tree below PATH, with file sizes and symlink targets.
    #[command(after_help = "\
Examples:
  novafs tree /dev/shm/pm.img
  novafs tree /dev/shm/pm.img /var -L 2
  novafs tree /dev/shm/pm.img --json | jq '.children[].name'")]
    Tree(TreeArgs),

    /// Decode on-media structures: the superblock and mount state (default), an inode with
    /// every log entry, or a block and its owner.
    ///
    /// The image file is read directly, without mounting or locking it and without writing:
    /// it works on an image that is mounted (through FUSE, say); each structure is shown as
    /// durable at the moment it was read. Log entries show their sequence number, page and
    /// offset, type and fields (times in nanoseconds since 1970).
    #[command(after_help = "\
Examples:
  novafs inspect /dev/shm/pm.img                    # superblock, mount state, inode table
  novafs inspect /dev/shm/pm.img --inode 1          # the root directory's log
  novafs inspect /dev/shm/pm.img --path /notes.txt --json | jq '.log_entries[].type'
  novafs inspect /dev/shm/pm.img --block 1234       # who owns block 1234")]
    Inspect(InspectArgs),

    /// Show the metadata of a file, directory or symlink (symlinks are not followed).
    #[command(after_help = "\
Examples:
  novafs stat /dev/shm/pm.img /notes.txt
  novafs stat /dev/shm/pm.img /notes.txt --json | jq .size")]
    Stat(StatArgs),

    /// List, print, set or remove extended attributes (getfattr/setfattr for an image).
    ///
    /// Without -n: every name with its value (text if printable, else 0x-hex). With -n
    /// NAME: that value's raw bytes on stdout (ENODATA if absent). With -n NAME -v VALUE: set
    /// it (one atomic commit; VALUE 0x... is hex). With -x NAME: remove it. POSIX ACLs are the
    /// attributes system.posix_acl_access and system.posix_acl_default (binary).
    #[command(after_help = "\
Examples:
  novafs xattr /dev/shm/pm.img /notes.txt
  novafs xattr /dev/shm/pm.img /notes.txt -n user.origin -v laptop
  novafs xattr /dev/shm/pm.img /notes.txt -n user.origin
  novafs xattr /dev/shm/pm.img /notes.txt -x user.origin
  novafs xattr /dev/shm/pm.img /notes.txt --json")]
    Xattr(XattrArgs),

    /// Write the contents of a file to stdout (raw bytes).
    #[command(after_help = "\
Examples:
  novafs cat /dev/shm/pm.img /notes.txt
  novafs cat /dev/shm/pm.img /backup.tar | tar -t")]
    Cat(CatArgs),

    /// Copy a host file into the image (created or truncated; '-' reads stdin).
    ///
    /// The data is streamed in 1 MiB writes, so files larger than memory work. If PATH is an
    /// existing directory the file keeps its host name inside it. A new file gets the host
    /// file's permission bits.
    #[command(after_help = "\
Examples:
  novafs put /dev/shm/pm.img ./notes.txt /notes.txt
  tar -c src | novafs put /dev/shm/pm.img - /backup.tar")]
    Put(PutArgs),

    /// Copy a file out of the image to the host ('-' writes stdout).
    ///
    /// If HOSTFILE is an existing host directory the file keeps its name inside it.
    #[command(after_help = "\
Examples:
  novafs get /dev/shm/pm.img /notes.txt ./notes.txt
  novafs get /dev/shm/pm.img /logs/today /tmp/")]
    Get(GetArgs),

    /// Create a directory.
    #[command(after_help = "\
Examples:
  novafs mkdir /dev/shm/pm.img /logs
  novafs mkdir -p /dev/shm/pm.img /var/lib/app/data")]
    Mkdir(MkdirArgs),

    /// Remove a file or symlink; with -r also directories and everything below them.
    #[command(after_help = "\
Examples:
  novafs rm /dev/shm/pm.img /notes.txt
  novafs rm -r /dev/shm/pm.img /logs")]
    Rm(RmArgs),

    /// Rename or move a file, directory or symlink.
    ///
    /// If TO is an existing directory, FROM is moved into it (like mv(1)); use -T to rename
    /// over TO instead. An existing target file is replaced atomically.
    #[command(after_help = "\
Examples:
  novafs mv /dev/shm/pm.img /notes.txt /notes.old
  novafs mv /dev/shm/pm.img /notes.old /archive/")]
    Mv(MvArgs),

    /// Make a hard link LINK to TARGET, or with -s a symbolic link LINK containing TARGET.
    #[command(after_help = "\
Examples:
  novafs ln /dev/shm/pm.img /data/v1 /data/current
  novafs ln -s /dev/shm/pm.img /data/v1 /latest")]
    Ln(LnArgs),

    /// Check (and with -y repair) an image: superblocks, journal, inode table, every log, the
    /// directory tree, link counts, block ownership, sizes, lost files.
    ///
    /// Read-only by default (-n). With -y every repair goes through the persistence
    /// primitives in crash-safe order, lost files go to /lost+found as #<ino>, and the image is
    /// checked again afterwards. A progress bar is shown on a terminal for large images.
    #[command(after_help = FSCK_EXAMPLES)]
    Fsck(FsckArgs),

    /// Mount an image through FUSE and serve it until it is unmounted.
    ///
    /// Every FUSE request becomes one engine operation: each write, create, rename, ... is
    /// atomic and durable when the system call returns (fsync only fences). Requests run on
    /// several threads. Without -f the command returns once the mount is up and a detached
    /// process serves it. Unmounting (fusermount3 -u, umount, or SIGINT/SIGTERM to the
    /// serving process) unmounts the image cleanly.
    #[command(after_help = mount::MOUNT_EXAMPLES)]
    Mount(mount::MountArgs),

    /// Format a demo image, fill it, verify it across a remount and time each step.
    ///
    /// Builds a small tree (a few directories, 100 small files, one 8 MiB file written in 4 KiB
    /// writes, a hard link and a symlink), reads everything back and compares the bytes,
    /// renames and unlinks, unmounts, remounts (the mount must be clean) and verifies again.
    /// Exits with status 1 if any check fails. The image is left in place for inspection.
    #[command(after_help = "\
Examples:
  novafs demo
  novafs demo --image /mnt/pmem0/demo.img --size 1GiB")]
    Demo(DemoArgs),

    /// Crash-test the engine: every crash image the persistence model allows, checked.
    ///
    /// Runs each workload once on the traced backend, then at every fence and at the end of
    /// every operation builds the crash images x86 (ADR) allows: per cache line any prefix of
    /// its pending 8-byte stores, any subset of pending non-temporal stores; plus an eADR pass.
    /// Each image is mounted (recovery runs) and compared with the crash-free run: the state
    /// after the last completed operation, or before/after the one in flight. Exits 1 when any
    /// check fails, printing a command that replays it.
    ///
    /// Workload files hold one operation per line (# comments): mkdir P, create P,
    /// write P OFF LEN SEED, truncate P LEN, punch P OFF LEN, falloc P OFF LEN, link P Q,
    /// symlink TARGET P, unlink P, rmdir P, rename P Q, exchange P Q, fsync P, remount, unmount,
    /// map P OFF LEN [atomic], mwrite P OFF LEN SEED, persist P OFF LEN, msync P. Handles:
    /// open P H keeps P open as handle H (close H closes it); write@H OFF LEN SEED,
    /// append@H LEN SEED, truncate@H LEN, punch@H OFF LEN, falloc@H OFF LEN and fsync@H act
    /// through H (several handles on one file; H outlives a rename or unlink of P). Lines after
    /// '@setup' (until '@ops') prepare the tree without being crash-checked.
    #[command(after_help = "\
Examples:
  novafs crashtest                               # the seq1 set (every op on a prepared tree)
  novafs crashtest --builtin seq2 --json         # all pairs of ops
  novafs crashtest --builtin random --seed 7 --count 50 --length 6
  novafs crashtest --workload my.workload --max-images 65536")]
    Crashtest(CrashtestArgs),
}

#[derive(Args, Debug)]
struct CrashtestArgs {
    /// A workload file (instead of a built-in set)
    #[arg(long)]
    workload: Option<PathBuf>,
    /// Built-in set: seq1, seq2 or random
    #[arg(long, default_value = "seq1")]
    builtin: String,
    /// Run only the built-in workload of this name (as printed in failures)
    #[arg(long)]
    only: Option<String>,
    /// Seed for sampling and for random workloads
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Random workloads to generate
    #[arg(long, default_value_t = 20)]
    count: usize,
    /// Operations per random workload
    #[arg(long, default_value_t = 6)]
    length: usize,
    /// Enumerate a crash point exhaustively up to this many images, else sample this many
    #[arg(long, default_value_t = 4096)]
    max_images: usize,
    /// Worker threads (0 = one per core)
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Image size
    #[arg(long, default_value = "4MiB", value_parser = units::parse_size)]
    image_size: u64,
    /// Skip the eADR pass
    #[arg(long)]
    no_eadr: bool,
    /// Run the workloads in two-fence sessions (`MountOptions::one_fence = Some(false)`)
    /// instead of the default one-fence ones
    #[arg(long, conflicts_with = "data_crcs")]
    two_fence: bool,
    /// Commit data runs with checksums and one fence too (msync mode's commits)
    #[arg(long)]
    data_crcs: bool,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct MkfsArgs {
    /// Image file to create (an existing non-empty file needs --force)
    image: PathBuf,
    /// Image size: bytes, or with a suffix K/M/G/T, KiB/MiB/GiB/TiB (x1024) or KB/MB/GB/TB (x1000)
    #[arg(short, long, default_value = "1GiB", value_parser = units::parse_size)]
    size: u64,
    /// Treat the image as emulated persistent memory even if it is not on tmpfs
    #[arg(long)]
    force_emulated: bool,
    /// Format over an existing non-empty file (without it such a file is refused)
    #[arg(short, long)]
    force: bool,
}

#[derive(Args, Debug)]
struct ResizeArgs {
    /// Image file
    image: PathBuf,
    /// New size (e.g. 4GiB), or +N to add N bytes (e.g. +512MiB)
    size: String,
}

#[derive(Args, Debug)]
struct InfoArgs {
    /// Image file
    image: PathBuf,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct LsArgs {
    /// Image file
    image: PathBuf,
    /// Directory inside the image
    #[arg(default_value = "/")]
    path: PathBuf,
    /// Long listing: kind, mode, links, size, inode, name
    #[arg(short)]
    long: bool,
    /// Print one JSON array of entries (the fields of `stat --json`, plus name)
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct DfArgs {
    /// Image file (not mounted elsewhere: for a FUSE mount use df on the mount point)
    image: PathBuf,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct TreeArgs {
    /// Image file
    image: PathBuf,
    /// Directory inside the image
    #[arg(default_value = "/")]
    path: PathBuf,
    /// Descend at most this many levels
    #[arg(short = 'L', long)]
    level: Option<usize>,
    /// Print one nested JSON object (children under "children")
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct InspectArgs {
    /// Image file (read directly: it may be mounted by another process)
    image: PathBuf,
    /// Show inode N: its slot, attributes and every log entry decoded
    #[arg(long, value_name = "N", group = "what")]
    inode: Option<u64>,
    /// Show block N: what it is and which inode owns it (scans every inode)
    #[arg(long, value_name = "N", group = "what")]
    block: Option<u64>,
    /// Show the inode that PATH names (symlinks are not followed)
    #[arg(long, value_name = "PATH", group = "what")]
    path: Option<PathBuf>,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct StatArgs {
    /// Image file
    image: PathBuf,
    /// Path inside the image
    path: PathBuf,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct XattrArgs {
    /// Image file
    image: PathBuf,
    /// Path inside the image (symlinks are followed)
    path: PathBuf,
    /// Attribute name (e.g. user.origin)
    #[arg(short = 'n', long)]
    name: Option<String>,
    /// Set NAME to this value (0x... for hex bytes)
    #[arg(short = 'v', long, requires = "name")]
    value: Option<String>,
    /// Remove this attribute
    #[arg(short = 'x', long, conflicts_with_all = ["name", "value"])]
    remove: Option<String>,
    /// Print one JSON object of name -> value (text, or 0x-hex)
    #[arg(long, conflicts_with_all = ["value", "remove"])]
    json: bool,
}

#[derive(Args, Debug)]
struct CatArgs {
    /// Image file
    image: PathBuf,
    /// File inside the image
    path: PathBuf,
}

#[derive(Args, Debug)]
struct PutArgs {
    /// Image file
    image: PathBuf,
    /// Host file to copy in ('-' for stdin)
    hostfile: PathBuf,
    /// Destination inside the image
    path: PathBuf,
}

#[derive(Args, Debug)]
struct GetArgs {
    /// Image file
    image: PathBuf,
    /// File inside the image
    path: PathBuf,
    /// Host destination ('-' for stdout)
    hostfile: PathBuf,
}

#[derive(Args, Debug)]
struct MkdirArgs {
    /// Image file
    image: PathBuf,
    /// Directory to create inside the image
    path: PathBuf,
    /// Create missing parents; an existing directory is not an error
    #[arg(short, long)]
    parents: bool,
}

#[derive(Args, Debug)]
struct RmArgs {
    /// Image file
    image: PathBuf,
    /// Path inside the image
    path: PathBuf,
    /// Remove directories and their contents recursively
    #[arg(short, long)]
    recursive: bool,
}

#[derive(Args, Debug)]
struct MvArgs {
    /// Image file
    image: PathBuf,
    /// Existing path inside the image
    from: PathBuf,
    /// New path (or an existing directory to move FROM into)
    to: PathBuf,
    /// Treat TO as the new name even if it is an existing directory
    #[arg(short = 'T', long)]
    no_target_directory: bool,
}

#[derive(Args, Debug)]
struct LnArgs {
    /// Image file
    image: PathBuf,
    /// Existing file (hard link), or the text of the symlink (-s)
    target: PathBuf,
    /// The new name
    link: PathBuf,
    /// Make a symbolic link
    #[arg(short, long)]
    symbolic: bool,
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// Image file [default: /dev/shm/novafs-demo.img, or $TMPDIR/novafs-demo.img without /dev/shm]
    #[arg(long)]
    image: Option<PathBuf>,
    /// Image size (see `novafs mkfs --help` for the suffixes)
    #[arg(long, default_value = "256MiB", value_parser = units::parse_size)]
    size: u64,
}

fn run(command: Command) -> CliResult<()> {
    match command {
        Command::Mkfs(a) => commands::mkfs(&a.image, a.size, a.force_emulated, a.force),
        Command::Info(a) => commands::info(&a.image, a.json),
        Command::Ls(a) if a.json => commands::ls_json(&a.image, &a.path),
        Command::Ls(a) => commands::ls(&a.image, &a.path, a.long),
        Command::Df(a) => commands::df(&a.image, a.json),
        Command::Resize(a) => commands::resize(&a.image, &a.size),
        Command::Tree(a) => commands::tree(&a.image, &a.path, a.level, a.json),
        Command::Inspect(a) => {
            let target = match (a.inode, a.block, a.path) {
                (Some(i), _, _) => inspect::Target::Inode(i),
                (_, Some(b), _) => inspect::Target::Block(b),
                (_, _, Some(p)) => inspect::Target::Path(p),
                _ => inspect::Target::Superblock,
            };
            inspect::run(&a.image, target, a.json)
        }
        Command::Stat(a) => commands::stat(&a.image, &a.path, a.json),
        Command::Xattr(a) => commands::xattr(
            &a.image,
            &a.path,
            a.name.as_deref(),
            a.value.as_deref(),
            a.remove.as_deref(),
            a.json,
        ),
        Command::Cat(a) => commands::cat(&a.image, &a.path),
        Command::Put(a) => commands::put(&a.image, &a.hostfile, &a.path),
        Command::Get(a) => commands::get(&a.image, &a.path, &a.hostfile),
        Command::Mkdir(a) => commands::mkdir(&a.image, &a.path, a.parents),
        Command::Rm(a) => commands::rm(&a.image, &a.path, a.recursive),
        Command::Mv(a) => commands::mv(&a.image, &a.from, &a.to, a.no_target_directory),
        Command::Ln(a) => commands::ln(&a.image, &a.target, &a.link, a.symbolic),
        Command::Crashtest(a) => crashtest::run(&crashtest::Options {
            workload: a.workload,
            builtin: a.builtin,
            only: a.only,
            seed: a.seed,
            count: a.count,
            length: a.length,
            max_images: a.max_images,
            threads: a.threads,
            image_bytes: a.image_size,
            no_eadr: a.no_eadr,
            two_fence: a.two_fence,
            data_crcs: a.data_crcs,
            json: a.json,
        }),
        Command::Fsck(a) => match a.run() {
            0 => Ok(()),
            code => std::process::exit(code),
        },
        Command::Mount(a) => mount::run(&a),
        Command::Demo(a) => {
            let image = a.image.unwrap_or_else(demo::default_image);
            demo::run(&image, a.size)
        }
    }
}

/// Whether argv[0] names `mkfs.novafs`.
fn invoked_as_mkfs(argv0: Option<&OsString>) -> bool {
    invoked_as(argv0, "mkfs.novafs")
}

/// Whether argv[0] names `fsck.novafs`.
fn invoked_as_fsck(argv0: Option<&OsString>) -> bool {
    invoked_as(argv0, "fsck.novafs")
}

/// Whether argv[0] names `mount.novafs`.
fn invoked_as_mount(argv0: Option<&OsString>) -> bool {
    invoked_as(argv0, "mount.novafs")
}

fn invoked_as(argv0: Option<&OsString>, name: &str) -> bool {
    argv0
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n == name)
}

/// Parse fsck arguments: usage errors exit 16 (as e2fsck), help and version 0.
fn parse_fsck<P: Parser>(args: Vec<OsString>) -> Result<P, i32> {
    P::try_parse_from(args).map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            fsck::EXIT_USAGE
        } else {
            0
        }
    })
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if invoked_as_fsck(args.first()) {
        return match parse_fsck::<FsckCli>(args) {
            Ok(c) => exit(c.args.run()),
            Err(code) => exit(code),
        };
    }
    if args.get(1).is_some_and(|a| a == "fsck") {
        // `novafs fsck`: the e2fsck exit codes, usage errors included.
        return match parse_fsck::<Cli>(args) {
            Ok(Cli {
                command: Command::Fsck(a),
            }) => exit(a.run()),
            Ok(c) => exit(run(c.command).map_or(1, |()| 0)),
            Err(code) => exit(code),
        };
    }
    let result = if invoked_as_mkfs(args.first()) {
        let a = MkfsCli::parse_from(args).args;
        commands::mkfs(&a.image, a.size, a.force_emulated, a.force)
    } else if invoked_as_mount(args.first()) {
        mount::run(&MountCli::parse_from(args).args)
    } else {
        run(Cli::parse_from(args).command)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.is_quiet() {
                let _ = std::io::stdout().flush();
                let _ = writeln!(std::io::stderr(), "novafs: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definitions_are_consistent() {
        Cli::command().debug_assert();
        MkfsCli::command().debug_assert();
        FsckCli::command().debug_assert();
        MountCli::command().debug_assert();
    }

    #[test]
    fn argv0_detection() {
        assert!(invoked_as_mkfs(Some(&"mkfs.novafs".into())));
        assert!(invoked_as_mkfs(Some(&"/usr/sbin/mkfs.novafs".into())));
        assert!(!invoked_as_mkfs(Some(&"novafs".into())));
        assert!(!invoked_as_mkfs(Some(&"/x/mkfs.novafs/novafs".into())));
        assert!(!invoked_as_mkfs(None));
        assert!(invoked_as_fsck(Some(&"/sbin/fsck.novafs".into())));
        assert!(!invoked_as_fsck(Some(&"mkfs.novafs".into())));
        assert!(!invoked_as_fsck(Some(&"novafs".into())));
        assert!(invoked_as_mount(Some(&"/sbin/mount.novafs".into())));
        assert!(!invoked_as_mount(Some(&"novafs".into())));
    }

    #[test]
    fn mount_helper_arguments() {
        // mount(8) calls helpers as `mount.novafs SPEC DIR [-sfnv] [-o OPTIONS]`.
        let c = MountCli::try_parse_from([
            "mount.novafs",
            "/dev/shm/a.img",
            "/mnt/a",
            "-n",
            "-o",
            "ro,allow_other",
            "-f",
        ])
        .unwrap();
        assert!(c.args.foreground && c.args.no_mtab);
        assert_eq!(c.args.options, vec!["ro,allow_other".to_string()]);
        assert_eq!(c.args.mountpoint, PathBuf::from("/mnt/a"));
    }
}
