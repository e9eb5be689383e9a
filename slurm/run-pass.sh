#!/bin/bash
# Run lmpi passes, in order, inside a Slurm allocation. Used by the *.sbatch
# files; usable by hand inside `salloc`: slurm/run-pass.sh copy delete dirtime
#
# Environment (all optional):
#   LMPI          path to the lmpi binary    (default: $LMPI_HOME/target/release/lmpi, else `lmpi` on PATH)
#   LMPI_HOME     the lmpi checkout          (default: $SLURM_SUBMIT_DIR)
#   LMPI_CONFIG   config file                (default: $LMPI_HOME/config/lmpi.toml)
#   LMPI_ARGS     extra lmpi options, e.g. "--source /lustre/old --target /lustre/new"
#   LMPI_LAUNCHER srun (default; needs PMIx, see README) or mpirun
set -u
home=${LMPI_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}
bin=${LMPI:-}
if [ -z "$bin" ]; then
    if [ -x "$home/target/release/lmpi" ]; then bin="$home/target/release/lmpi"; else bin=lmpi; fi
fi
config=${LMPI_CONFIG:-$home/config/lmpi.toml}
launcher=${LMPI_LAUNCHER:-srun}
job=${SLURM_JOB_ID:-none}
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

for pass in "$@"; do
    if [ "$stopping" = 1 ]; then
        echo "lmpi: job $job: stopped before pass $pass" >&2
        exit 4
    fi
    echo "lmpi: job $job: pass $pass with ${SLURM_NTASKS:-?} tasks on ${SLURM_JOB_NODELIST:-?}"
    case $launcher in
        srun) srun --mpi=pmix --cpu-bind=none --kill-on-bad-exit=1 "$bin" --pass "$pass" --config "$config" ${LMPI_ARGS:-} & ;;
        mpirun) mpirun --oversubscribe --bind-to none "$bin" --pass "$pass" --config "$config" ${LMPI_ARGS:-} & ;;
        *) echo "lmpi: LMPI_LAUNCHER must be srun or mpirun, not '$launcher'" >&2; exit 2 ;;
    esac
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
