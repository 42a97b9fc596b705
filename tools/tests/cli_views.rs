//! `novafs inspect`, `df`, `tree`, `ls --json` and the help texts.

use std::path::Path;
use std::process::Command;

use novafs::{FormatOptions, Fs};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_novafs");

fn json(args: &[&str], image: &Path) -> Value {
    let o = Command::new(BIN).args(args).arg(image).output().unwrap();
    assert!(o.status.success(), "novafs {args:?}: {o:?}");
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {o:?}"))
}

fn text(args: &[&str]) -> String {
    let o = Command::new(BIN).args(args).output().unwrap();
    assert!(o.status.success(), "novafs {args:?}: {o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn inspect_df_tree_and_ls_json() {
    let dir = tempfile::tempdir_in(if Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    })
    .unwrap();
    let img = dir.path().join("v.img");
    let fs = Fs::format(&img, 16 << 20, &FormatOptions::default()).unwrap();
    fs.create_dir_all("/docs/old").unwrap();
    fs.write("/docs/a.txt", b"hello inspect").unwrap();
    fs.symlink("a.txt", "/docs/link").unwrap();
    let ino = fs.metadata("/docs/a.txt").unwrap().ino();
    fs.unmount().unwrap();

    // The superblock view.
    let v = json(&["inspect", "--json"], &img);
    assert_eq!(v["superblock"]["blocks_total"], 4096);
    assert_eq!(v["superblock"]["magic"], "NOVAFS");
    assert_eq!(v["superblock"]["replica_matches"], true);
    assert_eq!(v["mount_state"]["clean"], true);

    // An inode by path and by number: its log decoded.
    let by_path = json(&["inspect", "--json", "--path", "/docs/a.txt"], &img);
    let by_ino = json(&["inspect", "--json", "--inode", &ino.to_string()], &img);
    assert_eq!(by_path, by_ino);
    assert_eq!(by_path["kind"], "file");
    let entries = by_path["log_entries"].as_array().unwrap();
    let write = entries
        .iter()
        .find(|e| e["type"] == "write")
        .expect("a write entry");
    assert_eq!(write["size"], 13);
    let data_block = write["block"].as_u64().unwrap();
    let dir_log = json(&["inspect", "--json", "--path", "/docs"], &img);
    let names: Vec<&str> = dir_log["log_entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "dir_add")
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["old", "a.txt", "link"]);

    // A block: its owner.
    let b = json(
        &["inspect", "--json", "--block", &data_block.to_string()],
        &img,
    );
    assert_eq!(b["owners"][0]["ino"], ino);
    assert_eq!(b["owners"][0]["as"], "file data");
    let b0 = json(&["inspect", "--json", "--block", "0"], &img);
    assert_eq!(b0["owner"], "superblock (primary)");
    let o = Command::new(BIN)
        .args(["inspect", "--block", "99999999"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(!o.status.success());

    // df
    let d = json(&["df", "--json"], &img);
    assert_eq!(d["size_bytes"], 16 << 20);
    assert!(d["used_bytes"].as_u64().unwrap() > 0);
    assert_eq!(d["inodes_used"], 5);
    let t = text(&["df", img.to_str().unwrap()]);
    assert!(t.contains("Avail") && t.contains("16 MiB"), "{t}");

    // tree
    let tr = json(&["tree", "--json"], &img);
    assert_eq!(tr["children"][0]["name"], "docs");
    let docs: Vec<&str> = tr["children"][0]["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(docs, ["a.txt", "link", "old"]);
    let t = text(&["tree", img.to_str().unwrap()]);
    assert!(
        t.contains("link -> a.txt") && t.contains("2 directories, 2 files"),
        "{t}"
    );
    let t1 = text(&["tree", "-L", "1", img.to_str().unwrap()]);
    assert!(!t1.contains("a.txt"), "{t1}");

    // ls --json
    let l = json(&["ls", "--json"], &img);
    assert_eq!(l[0]["name"], "docs");
    assert_eq!(l[0]["kind"], "dir");
}

#[test]
fn help_texts_have_examples() {
    for cmd in ["mount", "inspect", "df", "tree", "fsck", "mkfs"] {
        let h = text(&[cmd, "--help"]);
        assert!(h.contains("Examples:"), "novafs {cmd} --help:\n{h}");
    }
    let h = text(&["mount", "--help"]);
    assert!(
        h.contains("allow_other") && h.contains("fusermount3 -u"),
        "{h}"
    );
}
