#!/bin/bash
# Run lmpi passes, in order, inside a Slurm allocation. Used by the *.sbatch
# files; usable by hand inside `salloc`:
#   slurm/run-pass.sh copy delete dirtime [-- LMPI-OPTIONS...]
# Options after `--` go to every pass as they are (one argument each: no
# word splitting, no globbing); `sbatch slurm/copy.sbatch --source "/a b" ...`
# hands its own arguments on here that way.
#
# Environment (all optional):
#   LMPI          the lmpi binary    (default: $LMPI_HOME/target/release/lmpi if built, else `lmpi` on PATH)
#   LMPI_HOME     the lmpi checkout or install (default: the directory above this script)
#   LMPI_CONFIG   config file        (default: $LMPI_HOME/config/lmpi.toml, else /etc/lmpi/lmpi.toml,
#                                     else none: built-in defaults and the options)
#   LMPI_ARGS     more lmpi options, split as the shell splits quoted words but never expanded:
#                 LMPI_ARGS="--source /lustre/old --target '/lustre/new proj' --exclude '*.tmp'"
#                 (quotes and backslashes work as in the shell; $, ` and globs are kept literally)
#   LMPI_THREADS  I/O threads per rank (default: $SLURM_CPUS_PER_TASK, i.e. the job's --cpus-per-task;
#                 not passed when the options already have --threads)
#   LMPI_LAUNCHER srun (default) or mpirun
#   LMPI_MPI      srun's MPI plugin (default: pmix; `srun --mpi=list` shows the site's)
set -u
here=$(cd "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
home=${LMPI_HOME:-$(dirname -- "$here")}
job=${SLURM_JOB_ID:-none}
die() { echo "lmpi: job $job: $*" >&2; exit 2; }

passes=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do passes+=("$1"); shift; done
[ $# -gt 0 ] && shift
args=("$@")
[ ${#passes[@]} -gt 0 ] || die "usage: run-pass.sh PASS... [-- LMPI-OPTIONS...]"
if [ -n "${LMPI_ARGS:-}" ]; then
    # xargs splits on blanks and honours '...', "..." and \ as the shell
    # does, but runs nothing and expands nothing; an unmatched quote fails.
    xargs -r printf '' <<<"$LMPI_ARGS" 2>/dev/null || die "LMPI_ARGS: unmatched quote in: $LMPI_ARGS"
    mapfile -d '' -t more < <(xargs -r printf '%s\0' <<<"$LMPI_ARGS")
    args=("${more[@]}" "${args[@]}")
fi

bin=${LMPI:-}
if [ -z "$bin" ]; then
    if [ -x "$home/target/release/lmpi" ]; then bin="$home/target/release/lmpi"; else bin=lmpi; fi
fi
command -v "$bin" >/dev/null || die "no lmpi binary: '$bin' (set LMPI, or put lmpi on PATH)"
config=${LMPI_CONFIG:-}
if [ -z "$config" ]; then
    for c in "$home/config/lmpi.toml" /etc/lmpi/lmpi.toml; do
        if [ -f "$c" ]; then config=$c; break; fi
    done
fi
[ -n "$config" ] && args=(--config "$config" "${args[@]}")
threads=${LMPI_THREADS:-${SLURM_CPUS_PER_TASK:-}}
case " ${args[*]} " in *" --threads "* | *" --threads="*) threads= ;; esac
[ -n "$threads" ] && args+=(--threads "$threads")

launcher=${LMPI_LAUNCHER:-srun}
case $launcher in
    srun)
        run=(srun "--mpi=${LMPI_MPI:-pmix}" --cpu-bind=none --kill-on-bad-exit=1)
        # srun (22.05 and later) does not take the job's --cpus-per-task by itself.
        [ -n "${SLURM_CPUS_PER_TASK:-}" ] && run+=("--cpus-per-task=$SLURM_CPUS_PER_TASK")
        ;;
    mpirun) run=(mpirun --oversubscribe --bind-to none) ;;
    *) die "LMPI_LAUNCHER must be srun or mpirun, not '$launcher'" ;;
esac
# Root runs under mpirun need these; harmless otherwise.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# A signalled mpirun (scancel signals it too) sends its ranks SIGCONT, then
# SIGTERM and SIGKILL each this many seconds later (Open MPI's default: 1, too
# short for lmpi's graceful stop), and forwards no output until then: 2 x 10 s
# stays under Slurm's default KillWait (30 s), or the summary is lost. A rank
# that crashes makes mpirun wait as long before ending the others.
export OMPI_MCA_odls_base_sigkill_timeout=${OMPI_MCA_odls_base_sigkill_timeout:-10}

# scancel signals this shell too. Keep it alive until the ranks have finished
# their graceful stop, or Slurm would kill them mid-file when we exit.
stopping=0
trap 'stopping=1; echo "lmpi: job $job: stop requested, waiting for ranks to finish in-flight work" >&2' TERM INT

echo "lmpi: job $job: $("$bin" --version 2>/dev/null || echo "$bin"), ${config:-no config file}, ${run[*]}"
for pass in "${passes[@]}"; do
    if [ "$stopping" = 1 ]; then
        echo "lmpi: job $job: stopped before pass $pass" >&2
        exit 4
    fi
    echo "lmpi: job $job: pass $pass with ${SLURM_NTASKS:-?} tasks on ${SLURM_JOB_NODELIST:-?}"
    "${run[@]}" "$bin" --pass "$pass" "${args[@]}" &
    pid=$!
    wait "$pid"; rc=$?
    # A trapped signal interrupts `wait`; wait again for the real status.
    while kill -0 "$pid" 2>/dev/null; do wait "$pid"; rc=$?; done
    # A signalled mpirun exits 1 whatever its ranks did; their summary above
    # says how they ended.
    if [ "$stopping" = 1 ] && [ "$launcher" = mpirun ] && [ "$rc" -eq 1 ]; then rc=4; fi
    if [ "$rc" -eq 4 ]; then
        echo "lmpi: job $job: pass $pass STOPPED (exit status 4); later passes not run; resubmit to resume" >&2
        exit 4
    fi
    if [ "$rc" -ne 0 ]; then
        echo "lmpi: job $job: pass $pass FAILED with exit status $rc; later passes not run" >&2
        exit "$rc"
    fi
    echo "lmpi: job $job: pass $pass done"
done
