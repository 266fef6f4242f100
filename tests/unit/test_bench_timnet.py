"""The TIM-Net speed benchmark: its shapes, its FLOP count (checked by hand), and a tiny run."""

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


def test_a_tiny_run_reports_both_loops_and_their_ratio():
    torch.set_num_threads(1)
    peak, rows = bench_timnet.run(clips=16, epochs=1, selected=[(88, 6)])
    (row,) = rows
    assert peak > 0 and row.shape == "88x6" and row.clips == 16
    assert abs(row.speedup - row.plain_s_per_epoch / row.ours_s_per_epoch) < 1e-12
    assert abs(row.ours_samples_per_s - 16 / row.ours_s_per_epoch) < 1e-9
    assert abs(row.ours_share_of_peak - row.ours_gflops / peak) < 1e-12
    assert "| 88x6 | 7 |" in bench_timnet.render(rows, peak)


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
