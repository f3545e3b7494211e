"""A local job's precision against this machine: `plan` and `submit` refuse fp16 where DeepSpeed's
CPU accelerator lacks it, before any worker starts (issue 17, item 13).

The refusal is tested with the feature probe patched (this machine may well have fp16); the probe
itself is tested on recorded /proc/cpuinfo flag lines and against DeepSpeed's own answer here.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from conftest_k8s import small_spec_data, spec_of
from launcher import hardware
from launcher.support import unsupported_features
from tests.conftest import base_spec

# /proc/cpuinfo flag lines, shortened to what matters: the AMD EPYC (Zen 4) of the issue has
# avx512_bf16 but no avx512_fp16; a Sapphire Rapids Xeon has both.
EPYC_FLAGS = "fpu sse sse2 avx avx2 avx512f avx512dq avx512bw avx512vl avx512_bf16 avx512_vnni"
XEON_FLAGS = EPYC_FLAGS + " amx_bf16 avx512_fp16 amx_tile"
# An AMD EPYC of the Zen 3 generation (as on some CI machines): AVX2, no AVX-512, so no oneDNN bf16.
ZEN3_FLAGS = "fpu sse sse2 avx avx2 fma f16c"


def write_cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: {flags}\n\nprocessor\t: 1\n"
                    f"flags\t\t: {flags}\n", encoding="utf-8")
    return path


@pytest.fixture
def cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Pretend to run on a CPU with the given flags; torch's answer (the fallback) is `torch_says`."""

    def use(flags: str | None, torch_says: bool, gpu: bool = False) -> None:
        cpuinfo = write_cpuinfo(tmp_path, flags) if flags is not None else tmp_path / "missing"
        monkeypatch.setattr(hardware, "CPUINFO", cpuinfo)
        monkeypatch.setattr(hardware, "accelerator_fp16_supported", lambda: torch_says)
        monkeypatch.setattr(hardware, "accelerator_bf16_native", lambda: torch_says)
        monkeypatch.setattr(hardware, "nvidia_gpu_present", lambda: gpu)
        hardware.fp16_supported.cache_clear()
        hardware.bf16_native.cache_clear()

    yield use
    hardware.fp16_supported.cache_clear()
    hardware.bf16_native.cache_clear()


def test_cpu_flags_are_read_from_the_flags_line(tmp_path: Path) -> None:
    flags = hardware.cpu_flags(write_cpuinfo(tmp_path, EPYC_FLAGS))
    assert flags is not None and "avx512_bf16" in flags and "avx512_fp16" not in flags
    assert hardware.cpu_flags(tmp_path / "no-such-file") is None


def test_epyc_without_avx512_fp16_has_no_fp16(cpu) -> None:
    cpu(EPYC_FLAGS, torch_says=False)
    assert not hardware.fp16_supported()
    assert hardware.precision_supported("bf16") and hardware.precision_supported("fp32")
    problem = hardware.precision_problem("fp16")
    assert problem is not None and problem.startswith("training.precision: fp16 is not supported")
    assert "use bf16 or fp32" in problem


def test_fp16_flags_settle_it_without_asking_torch(cpu) -> None:
    cpu(XEON_FLAGS, torch_says=False)
    assert hardware.fp16_supported()  # torch would have said no: it was not asked


def test_without_flags_the_probe_asks_what_deepspeed_asks(cpu) -> None:
    cpu(None, torch_says=True)  # e.g. an ARM or macOS machine, or a CUDA device
    assert hardware.fp16_supported()
    cpu(None, torch_says=False)
    assert not hardware.fp16_supported()


def test_the_probe_agrees_with_deepspeeds_accelerator_here() -> None:
    """The cheap flag reading must give DeepSpeed's own answer on this machine."""
    torch = pytest.importorskip("torch")
    hardware.fp16_supported.cache_clear()
    expected = torch.cuda.is_available() or bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    assert hardware.fp16_supported() == expected


def fp16_local_spec(**training: object) -> dict:
    data = copy.deepcopy(base_spec())
    data["training"].update({"precision": "fp16", **training})
    return data


def test_plan_refuses_fp16_where_the_cpu_lacks_it(cpu, run_cli, write_spec) -> None:
    cpu(EPYC_FLAGS, torch_says=False)
    result = run_cli("plan", str(write_spec(fp16_local_spec())))
    assert result.code == 2
    assert "chosen:" in result.out  # the plan itself is still shown
    assert "training.precision: fp16 is not supported on this machine" in result.err
    assert "use bf16 or fp32" in result.err


def test_submit_refuses_fp16_before_any_worker_starts(cpu, run_cli, write_spec, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from launcher.targets import local

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("workers were started")

    monkeypatch.setattr(local, "prepare", must_not_run)
    monkeypatch.setattr(local, "start_agents", must_not_run)
    cpu(EPYC_FLAGS, torch_says=False)
    result = run_cli("submit", str(write_spec(fp16_local_spec())), "--runs-dir", str(tmp_path / "runs"))
    assert result.code == 2
    assert "training.precision: fp16 is not supported on this machine" in result.err
    assert not (tmp_path / "runs").exists()


def test_validate_warns_but_accepts(cpu, run_cli, write_spec) -> None:
    cpu(EPYC_FLAGS, torch_says=False)
    result = run_cli("validate", str(write_spec(fp16_local_spec())))
    assert result.code == 0
    assert "training.precision: fp16" in result.err


@pytest.mark.parametrize("case", ["bf16-local", "fp16-kubernetes", "fp16-ray-ddp"])
def test_what_this_cpu_does_not_limit(cpu, case: str) -> None:
    cpu(EPYC_FLAGS, torch_says=False)
    if case == "bf16-local":
        data = fp16_local_spec(precision="bf16")
    elif case == "fp16-kubernetes":  # GPU pods: this machine's CPU is irrelevant
        data = small_spec_data()
        data["training"]["precision"] = "fp16"
    else:  # Ray with ZeRO stage 0 trains with plain DDP, not a DeepSpeed engine
        data = fp16_local_spec(zero={"stage": 0})
        data["backend"] = "ray"
    assert unsupported_features(spec_of(data)) == []


def test_bf16_kernels_need_avx512_or_avx_ne_convert(cpu) -> None:
    cpu(ZEN3_FLAGS, torch_says=True)  # settled by the flags: torch is not asked
    assert not hardware.bf16_native()
    note = hardware.precision_note("bf16")
    assert note is not None and note.startswith("training.precision: bf16 runs without bf16 kernels")
    assert "Use precision: fp32" in note
    assert hardware.precision_note("fp32") is None and hardware.precision_supported("bf16")
    for flags in (EPYC_FLAGS, XEON_FLAGS, ZEN3_FLAGS + " avx_ne_convert"):
        cpu(flags, torch_says=False)
        assert hardware.bf16_native(), flags
        assert hardware.precision_note("bf16") is None


def test_a_gpu_or_an_unknown_cpu_is_left_to_torch(cpu) -> None:
    cpu(ZEN3_FLAGS, torch_says=True, gpu=True)  # a GPU node with an AVX2 host: CUDA does the bf16 work
    assert hardware.bf16_native()
    cpu(None, torch_says=False)  # no flags line (ARM, macOS): torch's oneDNN answer
    assert not hardware.bf16_native()


def test_the_bf16_probe_agrees_with_torch_here() -> None:
    torch = pytest.importorskip("torch")
    hardware.bf16_native.cache_clear()
    expected = torch.cuda.is_available() or bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert hardware.bf16_native() == expected


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_slow_bf16_is_noted_but_accepted(cpu, run_cli, write_spec, command: str) -> None:
    cpu(ZEN3_FLAGS, torch_says=False)
    bf16 = run_cli(command, str(write_spec(fp16_local_spec(precision="bf16"))))
    assert bf16.code == 0 and "note: training.precision: bf16 runs without bf16 kernels" in bf16.err
    fp32 = run_cli(command, str(write_spec(fp16_local_spec(precision="fp32"))))
    assert fp32.code == 0 and "bf16 kernels" not in fp32.err
    cluster = small_spec_data()  # GPU pods: this machine's CPU is irrelevant
    cluster["training"]["precision"] = "bf16"
    assert "bf16 kernels" not in run_cli(command, str(write_spec(cluster))).err
