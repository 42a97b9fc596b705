//! Truncating the image file while it is mounted (DESIGN §2, "A truncated image"). A child
//! process mounts an image, then shrinks the image file behind the mount's back (as another
//! program or an administrator could: the mount's lock is advisory) and touches a page past
//! the new end, through the engine (`read_at`), through a direct-access mapping's addresses,
//! or by a store (`write_at` of a page the engine must copy). The kernel raises SIGBUS; the
//! media layer's handler must recognise the novafs region and exit with a clear message and
//! the distinct status `IMAGE_FAULT_EXIT`, instead of the process dying of a bare SIGBUS.
//! (A SIGBUS outside novafs regions keeps its default action: the media layer's unit test
//! `raw::tests::a_foreign_sigbus_keeps_its_default_action`, which needs `unsafe` to fault.)

use std::process::Command;

use novafs::{FormatOptions, Fs, MapMode, MountOptions};
use novafs_engine::media::IMAGE_FAULT_EXIT;

const CHILD_ENV: &str = "NOVAFS_TRUNCATE_CHILD";
const TEST: &str = "a_truncated_image_gives_a_clear_error_not_a_bare_sigbus";

fn child(spec: &str) -> ! {
    let (how, img) = spec.split_once(':').unwrap();
    let img = std::path::Path::new(img);
    let fs = Fs::open(img, &MountOptions::default()).unwrap();
    let f = fs
        .open_options()
        .read(true)
        .write(true)
        .open("/data")
        .unwrap();
    let m = f.map(0, 64 * 4096, MapMode::Sync).unwrap();
    // Shrink the image to its first block, behind the mount's back.
    std::fs::OpenOptions::new()
        .write(true)
        .open(img)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let r = match how {
        "read" => f.read_at(&mut buf, 10 * 4096).map(|_| ()),
        "mapping" => m.read_at(&mut buf, 20 * 4096).map(|_| ()),
        "write" => f.write_at(&[7u8; 100], 30 * 4096 + 5).map(|_| ()),
        _ => unreachable!(),
    };
    println!("NOT REACHED: {how} returned {r:?}");
    std::process::exit(0);
}

#[test]
fn a_truncated_image_gives_a_clear_error_not_a_bare_sigbus() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child(&spec);
    }
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    for how in ["read", "mapping", "write"] {
        let img = dir.path().join(format!("{how}.img"));
        let fs = Fs::format(&img, 16 << 20, &FormatOptions::default()).unwrap();
        fs.write("/data", &vec![0x5A; 64 * 4096]).unwrap();
        fs.unmount().unwrap();
        let out = Command::new(std::env::current_exe().unwrap())
            .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, format!("{how}:{}", img.display()))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprintln!("{how}: child {:?}, stderr: {stderr}", out.status);
        assert_eq!(
            out.status.code(),
            Some(IMAGE_FAULT_EXIT),
            "{how}: the child must exit with the image-fault status, not die of a signal \
             ({:?})\nstdout: {stdout}\nstderr: {stderr}",
            out.status
        );
        assert!(
            stderr.contains("novafs: fatal: bus error (SIGBUS)")
                && stderr.contains("the image file was truncated or shrunk while mounted"),
            "{how}: the message names the cause: {stderr}"
        );
        let region = if how == "mapping" {
            "of a direct-access mapping of the image"
        } else {
            "of the mapped image"
        };
        assert!(stderr.contains(region), "{how}: {stderr}");
        assert!(!stdout.contains("NOT REACHED"), "{stdout}");
    }
}
