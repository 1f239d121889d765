"""Shared fixtures: tiny phantom cohorts and a tiny trained bundle, made once per test session."""

import contextlib
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# One thread per process: tests start worker processes beside pytest on a 2-core machine, and
# oversubscribed BLAS/OpenMP threads make everything several times slower there.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Networks small enough that a training step takes a fraction of a second on one CPU core.
TINY = ["--preset", "small", "--image-size", "32", "--generator-width", "8", "--generator-blocks", "1",
        "--batch-size", "2"]


def run_cli_process(*args, timeout=300):
    """`python -m duiit ARGS` in a subprocess, exactly as a user runs it."""
    return subprocess.run([sys.executable, "-m", "duiit", *map(str, args)], capture_output=True, text=True, encoding="utf-8",
                          timeout=timeout, cwd=ROOT, env=os.environ.copy())


def run_torchrun(*args, processes=2, timeout=300):
    """`python -m torch.distributed.run --nproc_per_node N ARGS` on a free local port (parallel test runs do
    not collide), one CPU thread per process, with the project on PYTHONPATH."""
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # torchrun leaves a log folder in the temporary folder: give it one that goes away afterwards.
    with tempfile.TemporaryDirectory(prefix="duiit-torchrun-") as scratch:
        return subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr",
             "127.0.0.1", "--master_port", str(port), *map(str, args)],
            capture_output=True, text=True, encoding="utf-8", timeout=timeout, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TMPDIR": scratch})


def run_cli(*args):
    """The same entry point as `duiit ARGS` (cli.main), in this process: saves a torch import per call."""
    from duiit.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit_:  # argparse errors
            code = exit_.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def mr_cohort(tmp_path_factory):
    from duiit.phantom import write_phantom_cohort
    return write_phantom_cohort(tmp_path_factory.mktemp("mr_cohort"), n_ct=6, n_source=6, source="MR",
                                shape=(12, 32, 32))


def tiny_network():
    """The networks of the in-process training tests: TINY's generator, with a small discriminator and predictor."""
    from duiit.networks import NetworkConfig
    return NetworkConfig(image_size=32, generator_width=8, generator_blocks=1, discriminator_width=8,
                         discriminator_layers=2, predictor_width=8, predictor_depth=2)


@pytest.fixture(scope="session")
def cohort(mr_cohort):
    """mr_cohort as a classification cohort at tiny_network()'s size (split seed 0); read-only for the tests."""
    from duiit.cohort import build_cohort
    from duiit.manifest import read_manifest
    return build_cohort(read_manifest(mr_cohort), "MR", "CT", "classification", tiny_network().image_size, seed=0)


@pytest.fixture(scope="session")
def trained_bundle(mr_cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "model.duiit"
    result = run_cli("train", "--manifest", mr_cohort, "--source", "MR", "--task", "classification",
                     "--method", "duiit", "-o", out, "--iterations", "6", "--warmup", "0.2", *TINY)
    assert result.returncode == 0, result.stderr
    return out
