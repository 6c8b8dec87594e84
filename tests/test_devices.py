"""Every hardware-dependent choice, forced both ways with a device report that says what a
CPU machine is not (autopeft.devices), and a trial on the CPU saying so."""

from __future__ import annotations

from autopeft.devices import DeviceReport, choose_device, precision, quantization_unavailable, reads_cuda_memory

CPU = DeviceReport()
ONE_GPU = DeviceReport(cuda_devices=1, bf16_supported=True, bitsandbytes=True)


def test_a_trial_trains_on_the_gpu_ray_assigned_it() -> None:
    # Ray narrows CUDA_VISIBLE_DEVICES to the assigned GPU: it is the process's first device.
    narrowed = DeviceReport(cuda_devices=1, ray_gpu_ids=("3",), visible_devices="3")
    assert choose_device(narrowed).device == "cuda:0" and choose_device(narrowed).gpu_ids == ("3",)
    # Ray told not to narrow (all four visible): the assigned id is the index, not cuda:0 by habit.
    every = DeviceReport(cuda_devices=4, ray_gpu_ids=("2",), visible_devices="0,1,2,3")
    assert choose_device(every).device == "cuda:2"
    assert choose_device(DeviceReport(cuda_devices=4, ray_gpu_ids=("1",))).device == "cuda:1"
    assert choose_device(ONE_GPU).device == "cuda:0"  # no Ray: the first visible device


def test_without_cuda_a_trial_trains_on_the_cpu_and_says_why() -> None:
    assert choose_device(CPU).device == "cpu" and "no CUDA device" in choose_device(CPU).reason
    # A GPU declared to Ray on a machine without one (the simulated cluster of the tests).
    simulated = choose_device(DeviceReport(ray_gpu_ids=("1",)))
    assert simulated.device == "cpu" and simulated.gpu_ids == ("1",) and "GPU 1" in simulated.reason


def test_four_bit_weights_need_cuda_and_bitsandbytes() -> None:
    assert "CUDA GPU" in quantization_unavailable(CPU)
    assert "bitsandbytes" in quantization_unavailable(DeviceReport(cuda_devices=1))
    assert quantization_unavailable(ONE_GPU) is None


def test_peak_memory_is_cudas_on_a_gpu_and_the_resident_set_on_the_cpu() -> None:
    assert reads_cuda_memory("cuda:1") and not reads_cuda_memory("cpu")


def test_bf16_falls_back_to_fp32_only_on_a_gpu_without_it() -> None:
    assert precision("bf16", ONE_GPU, "cuda:0") == ("bf16", "as asked")
    old = DeviceReport(cuda_devices=1, bf16_supported=False)
    assert precision("bf16", old, "cuda:0")[0] == "fp32" and "Ampere" in precision("bf16", old, "cuda:0")[1]
    assert precision("bf16", CPU, "cpu")[0] == "bf16"  # slower on most CPUs, but what was asked
    assert precision("fp32", ONE_GPU, "cuda:0")[0] == "fp32"


def test_the_probe_reads_this_machine() -> None:
    import torch

    report = DeviceReport.probe()
    assert report.cuda_devices == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert report.ray_gpu_ids == ()  # not in a Ray worker
