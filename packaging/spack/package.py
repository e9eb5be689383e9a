# Spack recipe for lmpi. Put it in a site repository as
# <repo>/packages/lmpi/package.py, then `spack install lmpi ^openmpi` (or the
# site's MPI). Set `git` below to where the site mirrors lmpi.
#
# SPDX-License-Identifier: (Apache-2.0 OR MIT)

import os

from spack.package import *


class Lmpi(CargoPackage):
    """Clone very large (Lustre) filesystems as one MPI job: a live copy pass,
    a downtime final pass (optionally over the changes `lmpi track` recorded)
    and a read-only verify pass, with graceful stop and resume under Slurm."""

    git = "https://git.example.org/hpc/lmpi.git"  # the site's mirror

    license("MIT OR Apache-2.0")

    version("main", branch="main")

    # The mpi crate's build script runs bindgen (libclang) over mpi.h and
    # asks the MPI compiler wrapper (mpicc -show) how to link.
    depends_on("rust@1.80:", type="build")
    depends_on("llvm+clang", type="build")
    depends_on("pkgconfig", type="build")
    depends_on("git", type="build")  # build.rs: the commit for --version
    depends_on("mpi")
    # liblustreapi is loaded at run time when present ([lustre] library or
    # $LMPI_LUSTREAPI): no build dependency on Lustre.

    def setup_build_environment(self, env):
        env.set("LIBCLANG_PATH", self.spec["llvm"].prefix.lib)
        env.set("MPICC", self.spec["mpi"].mpicc)

    @run_after("install")
    def install_extras(self):
        """The man page and completions come out of the binary itself, so
        they always match the options it takes; the config and the Slurm
        scripts go to share/lmpi."""
        lmpi = Executable(self.prefix.bin.lmpi)
        man1 = self.prefix.share.man.man1
        mkdirp(man1)
        lmpi("man", output=join_path(man1, "lmpi.1"))
        completions = {
            "bash": join_path(self.prefix.share, "bash-completion", "completions", "lmpi"),
            "zsh": join_path(self.prefix.share, "zsh", "site-functions", "_lmpi"),
            "fish": join_path(self.prefix.share, "fish", "vendor_completions.d", "lmpi.fish"),
        }
        for shell, path in completions.items():
            mkdirp(os.path.dirname(path))
            lmpi("completions", shell, output=path)
        share = self.prefix.share.lmpi
        mkdirp(share)
        install_tree("slurm", join_path(share, "slurm"))
        install_tree("config", join_path(share, "config"))
        install_tree("docs", join_path(share, "docs"))

    def setup_run_environment(self, env):
        # The Slurm scripts find the binary through LMPI (slurm/run-pass.sh).
        env.set("LMPI", self.prefix.bin.lmpi)
        env.set("LMPI_HOME", self.prefix.share.lmpi)
