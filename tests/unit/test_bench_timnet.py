"""The TIM-Net speed benchmark: its shapes, its FLOP count (checked by hand), and a tiny run."""

import pytest
import torch

from avemotion import bench_timnet


def test_shapes_are_every_timnet_the_study_trains():
    assert sorted(bench_timnet.shapes()) == sorted(
        [(88, 24), (88, 780), (88, 179), (88, 35), (88, 6), (88, 512), (146, 1024)]
    )
    assert bench_timnet.scales_for(88) == 7 and bench_timnet.scales_for(146) == 8


def test_flops_per_sample_match_a_hand_count():
    t, f, c, scales, k = 88, 24, 64, 7, 2
    proj = 2 * f * c * t  # 1x1 conv F -> C
    causal = 2 * c * c * k * t  # one dilated conv, C -> C, kernel 2
    stream = proj + scales * 3 * causal
    weighting = 2 * scales * c  # the learned weighted sum over scales (an einsum: a matmul)
    forward = 2 * stream + weighting + 2 * c * 8  # two streams, the scale weighting, the 8-class head
    # Backward: gradients of inputs and weights (2x forward), except no input gradient into the data.
    expected = 3 * forward - 2 * proj
    assert round(forward / 1e6, 1) == 61.1  # MFLOP per sample, the anchor figure measured elsewhere
    assert bench_timnet.flops_per_sample(t, f) == expected


@pytest.mark.parametrize(
    ("precision", "how"), [("float32", "float32, conv"), ("bfloat16", "bfloat16, time_major")]
)
def test_a_tiny_run_reports_both_loops_and_their_ratio(precision, how):
    torch.set_num_threads(1)
    speed = bench_timnet.Speed(cpu_precision=precision, compile=False)
    peak, rows = bench_timnet.run(clips=16, epochs=1, selected=[(88, 6)], speed=speed)
    (row,) = rows
    assert peak > 0 and row.shape == "88x6" and row.clips == 16
    assert (row.precision, row.compiled) == (precision, False)
    assert abs(row.speedup - row.plain_s_per_epoch / row.ours_s_per_epoch) < 1e-12
    assert abs(row.float32_speedup - row.plain_s_per_epoch / row.ours_float32_s_per_epoch) < 1e-12
    assert abs(row.ours_samples_per_s - 16 / row.ours_s_per_epoch) < 1e-9
    assert abs(row.ours_share_of_peak - row.ours_gflops / peak) < 1e-12
    assert abs(row.plain_share_of_peak - row.plain_gflops / peak) < 1e-12
    assert row.ours_first_epoch_extra_s >= 0
    assert f"| 88x6 | 7 | {how} |" in bench_timnet.render(rows, peak, 2 * peak)


def test_learnable_task_needs_time_and_the_check_trains_both_precisions():
    frames = 88
    x, y, x_test, y_test = bench_timnet.learnable_task(frames=frames, dims=8, clips=512)
    assert x.shape == (512, frames, 8) and x_test.shape == (128, frames, 8)
    assert y.shape == (512,) and y_test.shape == (128,) and set(y.tolist()) == set(range(8))
    # Class c is a sinusoid of period 4 + 2c frames in the first quarter of the dims (2 of 8): its power
    # spectrum, averaged over the class's clips, peaks at frequency bin frames / (4 + 2c); the other dims
    # are noise with no peak there.
    for c in range(8):
        signal = x[y == c, :, :2].mean(dim=2)  # (N_c, T)
        power = torch.fft.rfft(signal, dim=1).abs().pow(2).mean(dim=0)
        assert abs(int(power[1:].argmax()) + 1 - frames / (4 + 2 * c)) <= 1, c
        noise = torch.fft.rfft(x[y == c, :, 4:].mean(dim=2), dim=1).abs().pow(2).mean(dim=0)
        assert power[1:].max() > 3 * noise[1:].max()
    torch.set_num_threads(1)
    rows = bench_timnet.accuracy_check(88, 6, clips=32, epochs=2, speed=bench_timnet.Speed("bfloat16", False))
    assert [(r.precision, r.layout) for r in rows] == [("float32", "conv"), ("bfloat16", "time_major")]
    assert all(0 <= r.test_accuracy <= 1 and r.final_train_loss > 0 and r.epochs == 2 for r in rows)
    assert "| 88x6 | bfloat16 | time_major | no | 2 |" in bench_timnet.render_accuracy(rows)


def test_stacked_rows_compare_model_samples_per_second_with_one_model():
    torch.set_num_threads(1)
    rows = bench_timnet.measure_stack(88, 6, clips=16, epochs=1, ks=(1, 3), device=torch.device("cpu"))
    assert [r.models for r in rows] == [1, 3] and rows[0].speedup == 1.0
    assert abs(rows[1].model_samples_per_s - 3 * 16 / rows[1].s_per_epoch) < 1e-9
    assert abs(rows[1].speedup - rows[1].model_samples_per_s / rows[0].model_samples_per_s) < 1e-12
    assert "| 88x6 | cpu | 3 |" in bench_timnet.render_stack(rows)


def test_step_gemms_are_the_counted_flops_but_head_and_scale_weighting():
    t, f, c, scales = 88, 24, 64, 7
    gemm_flops = sum(2 * m * n * p * times for (m, n, p), times in bench_timnet.step_gemms(t, f))
    head_and_weighting = 2 * scales * c + 2 * c * 8  # forward; backward doubles it
    per_sample = bench_timnet.flops_per_sample(t, f) - 3 * head_and_weighting
    assert gemm_flops / bench_timnet.BATCH == per_sample
