"""Run a command on GPUs of its own: ``gpu_slot.py --gpus N --device DEVICE -- command ...``.

Snakemake counts the resource ``gpu`` (``--resources gpu=4`` runs at most four GPU jobs at once) but never says
WHICH GPU a job gets (it does not set CUDA_VISIBLE_DEVICES), so on a multi-GPU workstation every job would use
GPU 0. This wrapper takes N free GPUs of the machine (an exclusive ``flock`` on
``.snakemake/gpu-slots/gpu<i>.lock`` in the working directory, held by the command until it exits), sets
CUDA_VISIBLE_DEVICES to them and replaces itself with the command. When no GPU is free (more GPU jobs than
GPUs, e.g. without ``--resources gpu=N``) it waits for one.

It does nothing but run the command when N is 0, when CUDA_VISIBLE_DEVICES is already set (SLURM sets it for
every allocation) or when DEVICE pins a GPU (``cuda:1``). The number of GPUs is that of ``/dev/nvidia<i>``
devices; ``LORM_GPU_COUNT`` overrides it, ``LORM_GPU_LOCK_DIR`` the lock folder.
"""

from __future__ import annotations

import argparse
import fcntl
import glob
import os
import re
import sys
import time

POLL_SECONDS = 5.0


def gpu_count() -> int:
    if os.environ.get("LORM_GPU_COUNT"):
        return int(os.environ["LORM_GPU_COUNT"])
    return len(glob.glob("/dev/nvidia[0-9]*"))


def take_slots(wanted: int, total: int, lock_dir: str) -> tuple[list[int], list[int]]:
    """Lock ``wanted`` free GPU slots (waiting if necessary); returns (GPU indices, open lock fds)."""
    os.makedirs(lock_dir, exist_ok=True)
    told = False
    while True:
        indices, fds = [], []
        for index in range(total):
            fd = os.open(os.path.join(lock_dir, f"gpu{index}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            indices.append(index)
            fds.append(fd)
            if len(indices) == wanted:
                return indices, fds
        for fd in fds:  # not enough free GPUs: release what we have and try again
            os.close(fd)
        if not told:
            print(f"gpu_slot: waiting for {wanted} free GPU(s) of {total}", file=sys.stderr, flush=True)
            told = True
        time.sleep(POLL_SECONDS)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, required=True, help="GPUs the job needs (its Snakemake resource gpu)")
    parser.add_argument("--device", default="auto", help="the job's runtime.device")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- command and its arguments")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")

    total = gpu_count()
    pinned = re.fullmatch(r"cuda:\d+", args.device) is not None
    if args.gpus > 0 and total > 0 and not pinned and os.environ.get("CUDA_VISIBLE_DEVICES") is None:
        wanted = min(args.gpus, total)
        lock_dir = os.environ.get("LORM_GPU_LOCK_DIR", os.path.join(".snakemake", "gpu-slots"))
        indices, fds = take_slots(wanted, total, lock_dir)
        for fd in fds:
            os.set_inheritable(fd, True)  # the command holds the locks until it exits
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in indices)
        print(f"gpu_slot: CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']}", file=sys.stderr, flush=True)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
