#!/usr/bin/env bash
# fio through the FUSE mount of novafs, side by side with bindfs over tmpfs (the FUSE baseline),
# tmpfs and the disk file system; metadata operations timed by a small program (not by fio,
# whose own work dominates per-file jobs).
#
# Usage: benches/fio.sh [RUNS]           (default 3 runs per cell; the median is shown)
# Environment:
#   NOVAFS_BIN   the novafs binary (default: built with `cargo build --release -p novafs-tools`)
#   DISK_DIR     a directory on the disk file system (default: a new one under /var/tmp)
#   RUNTIME      seconds per timed job (default 5)
#   SIZE         file size of the data jobs (default 256M)
#   NRFILES      files of the metadata jobs (default 5000)
#   THREADS      novafs mount threads (default: novafs's own default)
#
# Jobs (psync engine, one job at a time, fallocate=none everywhere):
#   randwrite-fsync  4 KiB random writes, fsync after each (time-based)
#   seqwrite-1m      sequential 1 MiB writes of SIZE, fsync at the end
#   randread-4k      4 KiB random reads of a SIZE file (time-based; fio drops the file's cached
#                    pages first, so most reads miss the page cache: the cost of a read request)
#   randread-4k-warm the same with the file read into the page cache first (pre_read) and not
#                    dropped: what a re-read costs where the page cache is kept
#   create/stat/rename/unlink  NRFILES empty files, each phase timed on its own by
#                    `tools/examples/metaops.rs` (open O_CREAT|O_EXCL + close, stat, rename,
#                    unlink)
# Prints a markdown table: IOPS (and MiB/s for the data jobs), median of RUNS, and the ratios
# novafs / bindfs and novafs / tmpfs.
# Needs: fio, bindfs, fusermount3, /dev/fuse, python3 (to read fio's JSON).
set -euo pipefail

RUNS=${1:-3}
RUNTIME=${RUNTIME:-5}
SIZE=${SIZE:-256M}
NRFILES=${NRFILES:-5000}
root=$(cd "$(dirname "$0")/.." && pwd)

for tool in fio bindfs fusermount3 python3; do
    command -v "$tool" >/dev/null || { echo "fio.sh: $tool is required" >&2; exit 2; }
done
[ -e /dev/fuse ] || { echo "fio.sh: /dev/fuse is missing" >&2; exit 2; }

BIN=${NOVAFS_BIN:-}
(cd "$root" && cargo build --release -q -p novafs-tools --example metaops)
METAOPS="${CARGO_TARGET_DIR:-$root/target}/release/examples/metaops"
if [ -z "$BIN" ]; then
    (cd "$root" && cargo build --release -q -p novafs-tools)
    BIN="${CARGO_TARGET_DIR:-$root/target}/release/novafs"
fi

work=$(mktemp -d /dev/shm/novafs-fio.XXXXXX)
mnt=$(mktemp -d /tmp/novafs-fio-mnt.XXXXXX)
bmnt=$(mktemp -d /tmp/novafs-fio-bindfs.XXXXXX)
own_disk=0
if [ -z "${DISK_DIR:-}" ]; then
    DISK_DIR=$(mktemp -d /var/tmp/novafs-fio-disk.XXXXXX)
    own_disk=1
fi
server=""
cleanup() {
    if mountpoint -q "$mnt" 2>/dev/null || grep -q " $mnt " /proc/mounts; then
        fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -u -z "$mnt" 2>/dev/null || true
    fi
    [ -n "$server" ] && wait "$server" 2>/dev/null || true
    if grep -q " $bmnt " /proc/mounts; then
        fusermount3 -u "$bmnt" 2>/dev/null || fusermount3 -u -z "$bmnt" 2>/dev/null || true
    fi
    rm -rf "$work"
    rmdir "$mnt" "$bmnt" 2>/dev/null || true
    [ "$own_disk" = 1 ] && rm -rf "$DISK_DIR"
    return 0
}
trap cleanup EXIT

"$BIN" mkfs "$work/fio.img" --size 2GiB >/dev/null
mount_opts=()
[ -n "${THREADS:-}" ] && mount_opts=(-o "threads=$THREADS")
"$BIN" mount -f "${mount_opts[@]}" "$work/fio.img" "$mnt" >"$work/mount.log" 2>&1 &
server=$!
for _ in $(seq 1 200); do
    grep -q " $mnt " /proc/mounts && break
    kill -0 "$server" 2>/dev/null || { cat "$work/mount.log" >&2; exit 1; }
    sleep 0.05
done
grep -q " $mnt " /proc/mounts || { echo "fio.sh: novafs did not mount" >&2; exit 1; }
mkdir -p "$work/tmpfs" "$work/bindfs-src"
bindfs "$work/bindfs-src" "$bmnt"

declare -A DIRS=([novafs]="$mnt" [bindfs]="$bmnt" [tmpfs]="$work/tmpfs" [disk]="$DISK_DIR")
TARGETS=(novafs bindfs tmpfs disk)
FIO_JOBS=(randwrite-fsync seqwrite-1m randread-4k randread-4k-warm)
META_JOBS=(create stat rename unlink)
JOBS=("${FIO_JOBS[@]}" "${META_JOBS[@]}")

# fio arguments of a job.
job_args() {
    local common=(--ioengine=psync --fallocate=none --numjobs=1 --group_reporting)
    case "$1" in
        randwrite-fsync) echo "${common[*]} --rw=randwrite --bs=4k --size=$SIZE --fsync=1 --time_based --runtime=$RUNTIME" ;;
        seqwrite-1m) echo "${common[*]} --rw=write --bs=1M --size=$SIZE --end_fsync=1" ;;
        randread-4k) echo "${common[*]} --rw=randread --bs=4k --size=$SIZE --time_based --runtime=$RUNTIME" ;;
        randread-4k-warm) echo "${common[*]} --rw=randread --bs=4k --size=$SIZE --time_based --runtime=$RUNTIME --pre_read=1 --invalidate=0" ;;
    esac
}

# "iops mib_per_s" of a fio JSON result (the direction the job measures).
extract() {
    python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
j = d["jobs"][0]
side = j["write"] if j["write"]["iops"] > 0 else j["read"]
print("%.1f %.1f" % (side["iops"], side["bw"] / 1024.0))
' "$1"
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

declare -A IOPS BW
for job in "${FIO_JOBS[@]}"; do
    for t in "${TARGETS[@]}"; do
        dir="${DIRS[$t]}/fio-$job"
        iops_runs=()
        bw_runs=()
        for run in $(seq 1 "$RUNS"); do
            rm -rf "$dir"
            mkdir -p "$dir"
            out="$work/$t-$job-$run.json"
            # shellcheck disable=SC2046
            fio --name="$job" --directory="$dir" $(job_args "$job") \
                --output-format=json --output="$out" >/dev/null
            read -r i b < <(extract "$out")
            iops_runs+=("$i")
            bw_runs+=("$b")
            echo "  $job on $t, run $run: $i IOPS, $b MiB/s" >&2
        done
        rm -rf "$dir"
        IOPS[$t,$job]=$(printf '%s\n' "${iops_runs[@]}" | median)
        BW[$t,$job]=$(printf '%s\n' "${bw_runs[@]}" | median)
    done
done
for t in "${TARGETS[@]}"; do
    dir="${DIRS[$t]}/meta"
    declare -A runs=()
    for run in $(seq 1 "$RUNS"); do
        rm -rf "$dir"
        mkdir -p "$dir"
        read -r c st rn u < <("$METAOPS" "$dir" "$NRFILES")
        echo "  metaops on $t, run $run: create $c, stat $st, rename $rn, unlink $u ops/s" >&2
        runs[create]+="$c "
        runs[stat]+="$st "
        runs[rename]+="$rn "
        runs[unlink]+="$u "
    done
    rm -rf "$dir"
    for job in "${META_JOBS[@]}"; do
        # shellcheck disable=SC2086
        IOPS[$t,$job]=$(printf '%s\n' ${runs[$job]} | median)
    done
    unset runs
done

echo
echo "fio $(fio --version | sed 's/^fio-//'), $RUNS run(s) per cell (median), kernel $(uname -r), $(nproc) cores;"
echo "novafs: FUSE mount of a 2 GiB image on /dev/shm (media mode emulated); bindfs $(bindfs --version 2>/dev/null | head -1 | awk '{print $2}') over a /dev/shm directory; disk: $(df -T "$DISK_DIR" | awk 'NR==2 {print $2 " on " $1}')"
echo
echo "| job | novafs (FUSE) | bindfs over tmpfs (FUSE) | tmpfs | disk | novafs / bindfs | novafs / tmpfs |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for job in "${JOBS[@]}"; do
    row="| $job |"
    for t in "${TARGETS[@]}"; do
        i=${IOPS[$t,$job]}
        case "$job" in
            randwrite-fsync|seqwrite-1m|randread-4k*)
                row+=" $(printf '%.0f IOPS, %.1f MiB/s' "$i" "${BW[$t,$job]}") |" ;;
            *) row+=" $(printf '%.0f ops/s' "$i") |" ;;
        esac
    done
    for base in bindfs tmpfs; do
        row+=" $(awk -v a="${IOPS[novafs,$job]}" -v b="${IOPS[$base,$job]}" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }') |"
    done
    echo "$row"
done
