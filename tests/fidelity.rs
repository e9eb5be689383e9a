//! Every kind of entry keeps its xattrs and ACLs from its creation on, and
//! nothing the kernel clears on chown (a file capability, setuid) is lost
//! when only the owner changes on the source.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn sh(script: &str) {
    let o = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(o.status.success(), "{script}: {}", text(&o));
}

fn out(script: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(script).output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A file (capability, setuid, user/trusted xattrs, ACL), a symlink
/// (trusted xattr), a fifo (ACL, trusted xattr), a device (trusted xattr),
/// and a fifo under a default ACL that must not keep the inherited one.
fn build(src: &Path) {
    sh(&format!(
        "cd {} && echo data > f && chmod 4755 f && setcap cap_net_raw+ep f \
         && setfattr -n user.u -v 1 f && setfattr -n trusted.t -v 2 f && setfacl -m u:5:r f \
         && ln -s f l && setfattr -h -n trusted.x -v 1 l \
         && mkfifo ff && setfacl -m u:5:r ff && setfattr -n trusted.t -v 1 ff \
         && mknod nul c 1 3 && setfattr -n trusted.t -v 2 nul \
         && mkdir acl && setfacl -d -m u:1234:rwx acl && mkfifo acl/fifo && setfacl -b acl/fifo",
        src.display()
    ));
}

/// The copy pass leaves directory times to the dirtime pass; without it
/// rsync sees them whenever the copy crosses a second boundary.
fn copy_then_dirtime(launch: Launch, src: &Path, dst: &Path) {
    for p in ["copy", "dirtime"] {
        let (code, _, o) = pass(launch, p, src, dst, &[]);
        assert_eq!(code, 0, "{launch:?} {p}: {}", text(&o));
    }
}

fn converged(src: &Path, dst: &Path, what: &str) {
    let diff = rsync_diff(src, dst);
    assert!(
        diff.trim().is_empty(),
        "{what}: rsync -anicHAX says:\n{diff}"
    );
    assert!(
        out(&format!("getcap {}/f", dst.display())).contains("cap_net_raw"),
        "{what}: capability lost"
    );
    assert_eq!(
        out(&format!("stat -c %a {}/f", dst.display())).trim(),
        "4755",
        "{what}: setuid lost"
    );
    let acl = out(&format!("getfacl -c {}/acl/fifo", dst.display()));
    assert!(
        !acl.contains("user:1234"),
        "{what}: inherited ACL kept: {acl}"
    );
}

#[test]
fn xattrs_acls_and_capabilities_of_every_kind_survive_an_owner_change() {
    if !is_root() || !have("setcap") || !have("setfacl") || !have("rsync") {
        return;
    }
    let mut launches = vec![Launch::Alone];
    if have("mpirun") {
        launches.push(Launch::Mpirun(2));
    }
    for launch in launches {
        let (_t, src, dst) = src_and_dst();
        build(&src);
        copy_then_dirtime(launch, &src, &dst);
        converged(&src, &dst, "first copy");
        // Only the owner changes; the kernel clears the capability and
        // setuid on chown, so they are set again as an admin would.
        sh(&format!(
            "cd {} && chown 1234:1234 f && chmod 4755 f && setcap cap_net_raw+ep f \
             && chown -h 1234:1234 l ff nul",
            src.display()
        ));
        copy_then_dirtime(launch, &src, &dst);
        converged(&src, &dst, "after the owner changed");
    }
}
