//! Deterministic test/benchmark trees:
//!   gentree DIR [--dirs N] [--files N] [--size BYTES] [--symlinks N] [--big N] [--big-size BYTES] [--odd]
//! `--files` is per directory. Content depends only on the arguments, so every
//! tool in a benchmark copies the same bytes.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} wants a number, not {v}"))
        })
        .unwrap_or(default)
}

fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(root) = args
        .first()
        .filter(|a| !a.starts_with("--"))
        .map(PathBuf::from)
    else {
        eprintln!("usage: gentree DIR [--dirs N] [--files N] [--size BYTES] [--symlinks N] [--big N] [--big-size BYTES] [--odd]");
        std::process::exit(2);
    };
    let dirs = arg(&args, "--dirs", 10);
    let files = arg(&args, "--files", 100);
    let size = arg(&args, "--size", 4096) as usize;
    let symlinks = arg(&args, "--symlinks", 0);
    let big = arg(&args, "--big", 0);
    let big_size = arg(&args, "--big-size", 1 << 30);
    let odd = args.iter().any(|a| a == "--odd");
    std::fs::create_dir_all(&root)?;
    let mut buf = vec![0u8; size];
    for d in 0..dirs {
        let dir = root.join(format!("d{d:05}"));
        std::fs::create_dir_all(&dir)?;
        for f in 0..files {
            fill(&mut buf, d * 1_000_003 + f);
            std::fs::write(dir.join(format!("f{f:05}")), &buf)?;
        }
    }
    for s in 0..symlinks {
        let target = format!("d{:05}/f00000", s % dirs.max(1));
        let _ = std::os::unix::fs::symlink(target, root.join(format!("link{s:05}")));
    }
    let mut chunk = vec![0u8; 4 << 20];
    for b in 0..big {
        let mut f = std::fs::File::create(root.join(format!("big{b}")))?;
        let mut left = big_size;
        let mut i = 0u64;
        while left > 0 {
            fill(&mut chunk, (b << 32) + i);
            let n = left.min(chunk.len() as u64) as usize;
            f.write_all(&chunk[..n])?;
            left -= n as u64;
            i += 1;
        }
    }
    if odd {
        let o = root.join("odd");
        std::fs::create_dir_all(&o)?;
        for name in [
            &b"caf\xe9-latin1"[..],
            b"new\nline",
            b" spaced ",
            b"-dash",
            &[b'n'; 255],
        ] {
            std::fs::write(o.join(std::ffi::OsStr::from_bytes(name)), name)?;
        }
        std::fs::write(o.join("hard1"), b"linked")?;
        let _ = std::fs::hard_link(o.join("hard1"), o.join("hard2"));
        let f = std::fs::File::create(o.join("sparse"))?;
        f.set_len(64 << 20)?;
        let _ = std::os::unix::fs::symlink("/nowhere", o.join("dangling"));
    }
    Ok(())
}
