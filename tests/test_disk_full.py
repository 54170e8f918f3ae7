"""Full disks, file-size limits and read-only file systems (issue 9).

Real faults where the machine allows: a small tmpfs (needs root; skipped otherwise) filled to
the last pages, the same tmpfs remounted read-only, and RLIMIT_FSIZE (EFBIG from the kernel).
Everywhere: ENOSPC injected at the write layer (``infovae.io._write_all``). Each time the error is
one line naming the path and the reason, the previous checkpoint is intact, status.json says
"failed" with the reason where it can be written, and the run resumes to bitwise the same
weights once the fault is gone.
"""
from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import infovae.io
from infovae.cli.main import cli
from infovae.runs import read_status

TINY = ["-z", "2", "-o", "encoder.hidden=8", "-o", "decoder.hidden=8", "-r", "mmd=10", "--batch-size", "64",
        "--checkpoint-every", "1", "--quiet"]


def invoke(*args):
    res = CliRunner().invoke(cli, [str(a) for a in args])
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    return res


def one_line(res, *fragments):
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code != 0 and len(lines) == 1 and lines[0].startswith("Error:"), res.output
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    assert invoke("train", "--steps", 4, *TINY, "--out", run).exit_code == 0
    return load_file(str(run / "model.safetensors"))


def assert_resumes_to(run, reference):
    res = invoke("train", "--resume", run, "--steps", 4, "--quiet")
    assert res.exit_code == 0, res.output
    got = load_file(str(run / "model.safetensors"))
    assert got.keys() == reference.keys() and all(torch.equal(got[k], reference[k]) for k in reference)
    assert read_status(run)["status"] == "complete"
    assert not [p for p in run.rglob("*.tmp")]


@pytest.fixture
def tmpfs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({p.stderr.strip() or p.returncode}); the injected faults still run")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(directory: Path, leave_bytes: int) -> Path:
    """Fill the file system of ``directory`` to the last byte, then give back ``leave_bytes``."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(chunk)
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    for size in (4096, 1):  # finish the last partial chunk
        try:
            with open(filler, "ab") as fh:
                while True:
                    fh.write(b"\0" * size)
                    fh.flush()
        except OSError:
            pass
    os.truncate(filler, filler.stat().st_size - leave_bytes)
    return filler


def test_disk_full_on_a_real_tmpfs(tmpfs, reference):
    run = tmpfs / "run"
    assert invoke("train", "--steps", 2, *TINY, "--out", run).exit_code == 0
    checkpoint = (run / "checkpoint.safetensors").read_bytes()
    filler = fill(tmpfs, leave_bytes=8192)
    one_line(invoke("train", "--resume", run, "--steps", 4, "--quiet"), "No space left on device", str(run))
    assert (run / "checkpoint.safetensors").read_bytes() == checkpoint
    status = read_status(run)
    assert status["status"] == "failed" and "No space left on device" in status["error"] and status["step"] == 2
    filler.unlink()
    assert_resumes_to(run, reference)


def test_read_only_file_system(tmpfs):
    run = tmpfs / "run"
    assert invoke("train", "--steps", 2, *TINY, "--out", run).exit_code == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    try:
        one_line(invoke("sample", run, "-n", 4), "Read-only file system", str(run / "samples"))
        one_line(invoke("evaluate", run, "--metrics", "kl"), "not writable", "--no-save")
        one_line(invoke("plot", run, "--no-samples"), "Read-only file system", "figure.png")
        one_line(invoke("train", "--resume", run, "--steps", 4, "--quiet"), "Read-only file system")
        one_line(invoke("train", "--steps", 2, *TINY, "--out", tmpfs / "new"), "Read-only file system")
        assert invoke("evaluate", run, "--metrics", "kl", "--limit", 16, "--no-save").exit_code == 0  # reading still works
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_injected_enospc_at_the_write_layer(tmp_path, monkeypatch, reference):
    run = tmp_path / "run"
    assert invoke("train", "--steps", 2, *TINY, "--out", run).exit_code == 0
    checkpoint = (run / "checkpoint.safetensors").read_bytes()
    real_write_all = infovae.io._write_all

    def no_space_for_big_files(fd, data):
        if len(data) > 2048:  # safetensors files fail; status.json and metric lines still fit
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write_all(fd, data)

    monkeypatch.setattr(infovae.io, "_write_all", no_space_for_big_files)
    one_line(invoke("train", "--resume", run, "--steps", 4, "--quiet"), "No space left on device (ENOSPC)", "model.safetensors")
    assert (run / "checkpoint.safetensors").read_bytes() == checkpoint
    status = read_status(run)
    assert status["status"] == "failed" and "ENOSPC" in status["error"] and status["step"] == 2
    assert not [p for p in run.rglob("*.tmp")]
    monkeypatch.setattr(infovae.io, "_write_all", real_write_all)
    assert_resumes_to(run, reference)


def test_file_size_limit_efbig(tmp_path, reference):
    run = tmp_path / "run"
    assert invoke("train", "--steps", 2, *TINY, "--out", run).exit_code == 0
    checkpoint = (run / "checkpoint.safetensors").read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.getsignal(signal.SIGXFSZ)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # as the CLI does: EFBIG instead of a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        res = invoke("train", "--resume", run, "--steps", 4, "--quiet")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    one_line(res, "File too large (EFBIG)", str(run))
    assert (run / "checkpoint.safetensors").read_bytes() == checkpoint
    assert read_status(run)["status"] == "failed"
    assert_resumes_to(run, reference)
