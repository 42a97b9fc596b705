//! Run one fuzz target natively (stable toolchain, a debugger, debug assertions) on saved
//! inputs, and dump the image an `image_walk`/`fsck` input describes for `novafs inspect`.
//!
//! ```sh
//! cargo run -p novafs-fuzz-targets --example replay -- image_walk fuzz/regressions/image_walk/*
//! cargo run -p novafs-fuzz-targets --example replay -- --dump INPUT OUT.img   # then: novafs inspect OUT.img
//! ```
//! Prints `ok` per input that returns; a finding panics with the target's message.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, input, out] if flag == "--dump" => {
            let data = std::fs::read(input).expect("read the input");
            std::fs::write(out, novafs_fuzz_targets::image::patched(&data)).expect("write");
            println!("{out}: the patched seed image of {input}");
        }
        [target, inputs @ ..] if !inputs.is_empty() => {
            let Some(&(_, run)) = novafs_fuzz_targets::TARGETS
                .iter()
                .find(|(name, _)| name == target)
            else {
                eprintln!("unknown target {target}");
                std::process::exit(2);
            };
            for input in inputs {
                let data = std::fs::read(input).expect("read the input");
                run(&data);
                println!("ok {input}");
            }
        }
        _ => {
            eprintln!("usage: replay TARGET INPUT... | replay --dump INPUT OUT.img");
            std::process::exit(2);
        }
    }
}
