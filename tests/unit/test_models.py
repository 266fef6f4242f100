"""TIM-Net (avemotion.models): shapes, causality, receptive field, parameters, fusion, training, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from avemotion.models import (
    FusionClassifier,
    TIMNet,
    TIMNetClassifier,
    TIMNetConfig,
    count_parameters,
    timnet_parameter_count,
)


def _eval_model(cfg: TIMNetConfig, seed: int = 0, layout: str = "conv") -> TIMNet:
    # float64 so that "unchanged" can be checked exactly and "changed" is far above rounding noise.
    torch.manual_seed(seed)
    return TIMNet(cfg, layout).double().eval()


# --- shapes -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch", "frames", "features", "scales"),
    [(4, 88, 24, 7), (2, 146, 32, 8)],  # log-mel as in Table 3; Wav2Vec2 frame count, 8 scales (2^7 < 146)
)
@pytest.mark.parametrize("n_outputs", [1, 8])
def test_shapes(batch: int, frames: int, features: int, scales: int, n_outputs: int) -> None:
    cfg = TIMNetConfig(in_features=features, channels=16, scales=scales)
    model = TIMNetClassifier(cfg, n_outputs)
    x = torch.randn(batch, frames, features)
    assert model(x).shape == (batch, n_outputs)
    assert model.encoder(x).shape == (batch, 16)
    assert model.encoder.out_features == 16
    assert model.encoder.scale_features(x).shape == (batch, scales, 16)
    fwd, bwd = model.encoder.streams(x)
    assert len(fwd) == len(bwd) == scales
    assert all(h.shape == (batch, 16, frames) for h in fwd + bwd)


# --- causality and receptive field --------------------------------------------------------------------------


@pytest.mark.parametrize("layout", TIMNet.LAYOUTS)
def test_causality_every_scale(layout: str) -> None:
    cfg = TIMNetConfig(in_features=5, channels=8, scales=4)
    model = _eval_model(cfg, layout=layout)
    n_frames = 40
    x = torch.randn(1, n_frames, 5, dtype=torch.float64)
    fwd0, bwd0 = model.streams(x)
    for t in (0, 7, 20, n_frames - 1):
        x1 = x.clone()
        x1[:, t] += 1.0
        fwd1, bwd1 = model.streams(x1)
        for i in range(cfg.scales):
            # Forward stream: times before t are untouched, time t itself changes.
            assert torch.equal(fwd1[i][..., :t], fwd0[i][..., :t]), f"scale {i}: forward saw the future"
            assert (fwd1[i][..., t] - fwd0[i][..., t]).abs().max() > 1e-6
            # Backward stream runs on the reversed input: original time t is its step T-1-t.
            r = n_frames - 1 - t
            assert torch.equal(bwd1[i][..., :r], bwd0[i][..., :r]), f"scale {i}: backward saw its future"
            assert (bwd1[i][..., r] - bwd0[i][..., r]).abs().max() > 1e-6


@pytest.mark.parametrize("layout", TIMNet.LAYOUTS)
@pytest.mark.parametrize(("convs_per_block", "kernel_size"), [(3, 2), (2, 2), (2, 3)])
def test_receptive_field_every_scale(convs_per_block: int, kernel_size: int, layout: str) -> None:
    scales = 5
    cfg = TIMNetConfig(
        in_features=3, channels=8, scales=scales, kernel_size=kernel_size, convs_per_block=convs_per_block
    )
    # By hand: each causal conv with dilation d reaches (k-1)*d steps back; scale i's output has gone through
    # the L convs of every block 0..i (the 1x1 input conv and the gate add nothing).
    # L=3, k=2: 3*1 = 3, 3 + 3*2 = 9, 9 + 3*4 = 21, 21 + 3*8 = 45, 45 + 3*16 = 93.
    per_conv = [(kernel_size - 1) * 2**j for j in range(scales)]  # conv reach in block j
    fields = [convs_per_block * sum(per_conv[: i + 1]) for i in range(scales)]
    if (convs_per_block, kernel_size) == (3, 2):
        assert fields == [3, 9, 21, 45, 93]
    model = _eval_model(cfg, layout=layout)
    n_frames = fields[-1] + 10
    t = n_frames - 1
    x = torch.randn(1, n_frames, 3, dtype=torch.float64)
    fwd0, bwd0 = model.streams(x)

    def perturbed(time: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        x1 = x.clone()
        x1[:, time] += 1.0
        return model.streams(x1)

    for i, field in enumerate(fields):
        inside, _ = perturbed(t - field)  # oldest input scale i sees
        outside, _ = perturbed(t - field - 1)  # one step older: out of reach
        # Bitwise: an output that does not depend on the perturbed input is computed from identical numbers.
        # The oldest input's effect is real but small (it crosses every gate of blocks 0..i), ~1e-10 here.
        assert not torch.equal(inside[i][..., t], fwd0[i][..., t]), f"scale {i}: field < {field}"
        assert torch.equal(outside[i][..., t], fwd0[i][..., t]), f"scale {i}: field > {field}"

    # Backward stream, same field in its own time: its step r sees original times T-1-r ... T-1-r+field.
    r = n_frames - 1
    for i, field in enumerate(fields):
        _, inside = perturbed(field)
        _, outside = perturbed(field + 1)
        assert not torch.equal(inside[i][..., r], bwd0[i][..., r]), f"scale {i}: backward field < {field}"
        assert torch.equal(outside[i][..., r], bwd0[i][..., r]), f"scale {i}: backward field > {field}"


# --- the time-major layout: the same function as the convolution port ---------------------------------------


def _pair(cfg: TIMNetConfig, n_outputs: int = 8, dtype=torch.float64):
    """The same classifier (one seed) in both layouts."""
    models = []
    for layout in ("conv", "time_major"):
        torch.manual_seed(0)
        models.append(TIMNetClassifier(cfg, n_outputs, layout).to(dtype))
    return models


@pytest.mark.parametrize(
    ("kernel_size", "convs_per_block", "dropout"), [(2, 3, 0.1), (3, 2, 0.4), (2, 1, 0.0)]
)
def test_time_major_layout_trains_the_same_function(kernel_size, convs_per_block, dropout) -> None:
    """In training mode, from one generator state: the same outputs (the same dropout masks), the same
    gradient for every parameter, the same BatchNorm running statistics, and the generator left where the
    reference leaves it. Then the same in eval mode. float64: equal to rounding."""
    cfg = TIMNetConfig(24, 8, 4, kernel_size, convs_per_block, dropout)
    conv, time_major = _pair(cfg)
    assert conv.state_dict().keys() == time_major.state_dict().keys()
    x = torch.randn(6, 40, 24, dtype=torch.float64)
    outputs, after = [], []
    for model in (conv, time_major):
        torch.manual_seed(11)
        out = model(x)
        after.append(torch.rand(1))  # the next draw: the same only if both drew the same masks
        (out * torch.arange(8, dtype=torch.float64)).sum().backward()
        outputs.append(out)
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-12, atol=1e-12)
    assert torch.equal(after[0], after[1])
    for (name, a), b in zip(conv.named_parameters(), time_major.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-10, atol=1e-12, msg=name)
    for (name, a), b in zip(conv.named_buffers(), time_major.buffers(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12, msg=name)
    assert conv.encoder.forward_stream.blocks[0].norms[0].num_batches_tracked == 1
    if dropout > 0:  # the masks did act: the eval output (no dropout) differs from the training output
        conv.eval()
        assert (conv(x) - outputs[0]).abs().max() > 1e-3
    conv.eval(), time_major.eval()
    torch.testing.assert_close(time_major(x), conv(x), rtol=1e-12, atol=1e-12)
    fwd_a, bwd_a = conv.encoder.streams(x)
    fwd_b, bwd_b = time_major.encoder.streams(x)
    for a, b in zip(fwd_a + bwd_a, fwd_b + bwd_b, strict=True):
        assert b.shape == a.shape == (6, 8, 40)
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


def test_fusion_takes_the_layout_to_every_branch() -> None:
    cfgs = [TIMNetConfig(5, 4, 3), TIMNetConfig(7, 6, 2)]
    models = []
    for layout in ("conv", "time_major"):
        torch.manual_seed(0)
        models.append(FusionClassifier(cfgs, (8, 8), 8, 0.0, layout).double().eval())
    assert [e.layout for e in models[1].encoders] == ["time_major"] * 2
    x = [torch.randn(3, 20, 5, dtype=torch.float64), torch.randn(3, 30, 7, dtype=torch.float64)]
    torch.testing.assert_close(models[1](x), models[0](x), rtol=1e-12, atol=1e-12)


def test_time_major_under_bfloat16_autocast_stays_close_to_float32() -> None:
    """bfloat16 keeps 8 bits of mantissa: against the float32 reference (same weights, same masks) the
    outputs move by under 3 % and every gradient keeps its direction (cosine > 0.95)."""
    cfg = TIMNetConfig(24, 16, 5, 2, 3, 0.1)
    conv, time_major = _pair(cfg, dtype=torch.float32)
    x = torch.randn(16, 64, 24)
    outputs = []
    for model, bf16 in ((conv, False), (time_major, True)):
        torch.manual_seed(3)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        out.float().pow(2).sum().backward()
        outputs.append(out.float())
    rel = (outputs[1] - outputs[0]).norm() / outputs[0].norm()
    assert 0 < rel < 3e-2  # not bitwise equal: bfloat16 did run
    for (name, a), b in zip(conv.named_parameters(), time_major.parameters(), strict=True):
        if ".convs." in name and name.endswith(".bias"):
            # BatchNorm right after removes a conv bias: its true gradient is 0, only rounding is left.
            assert a.grad.abs().max() < 1e-4 and b.grad.abs().max() < 1e-2
            continue
        cosine = F.cosine_similarity(a.grad.flatten(), b.grad.flatten(), dim=0)
        assert cosine > 0.95, name


def test_compiled_streams_give_the_eager_function_and_the_same_masks() -> None:
    """``compile_streams``: full batches through torch.compile, a smaller batch and eval eager; each equal to
    the eager model (float32 rounding), outputs and gradients, with the masks drawn as eagerly."""
    cfg = TIMNetConfig(6, 4, 2, 2, 1, 0.3)
    eager, compiled = _pair(cfg, 1, dtype=torch.float32)
    eager.encoder.layout = "time_major"
    compiled.encoder.compile_streams(batch=8)
    with pytest.raises(ValueError, match="time_major"):
        TIMNet(cfg).compile_streams(8)
    for batch in (8, 5, 8):
        x = torch.randn(batch, 12, 6)
        outs = []
        for model in (eager, compiled):
            model.zero_grad()
            torch.manual_seed(batch)
            out = model(x)
            out.pow(2).sum().backward()
            outs.append(out)
        torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-6)
        for a, b in zip(eager.parameters(), compiled.parameters(), strict=True):
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6)
    eager.eval(), compiled.eval()
    x = torch.randn(8, 12, 6)
    torch.testing.assert_close(compiled(x), eager(x), rtol=1e-5, atol=1e-6)


def test_unknown_layout() -> None:
    with pytest.raises(ValueError, match="layout"):
        TIMNet(TIMNetConfig(3), "channels_last")


# --- parameters ---------------------------------------------------------------------------------------------


def test_parameter_count_small_config_by_hand() -> None:
    cfg = TIMNetConfig(in_features=3, channels=4, scales=2, kernel_size=2, convs_per_block=3)
    # F=3, C=4, S=2, k=2, L=3, n=2:
    #   input 1x1 conv      3*4 + 4                   = 16
    #   causal conv         4*4*2 + 4                 = 36
    #   its BatchNorm       4 + 4                     = 8
    #   block               3 * (36 + 8)              = 132
    #   stream              16 + 2*132                = 280
    #   two streams         2*280                     = 560
    #   scale weights                                 = 2
    #   head                4*2 + 2                   = 10
    #   total               560 + 2 + 10              = 572
    assert count_parameters(TIMNetClassifier(cfg, 2)) == 572
    assert timnet_parameter_count(cfg, 2) == 572
    assert count_parameters(TIMNet(cfg)) == timnet_parameter_count(cfg) == 562


@pytest.mark.parametrize(
    "cfg",
    [
        TIMNetConfig(in_features=24),  # LMS, Table 3
        TIMNetConfig(in_features=1024, scales=8),  # Wav2Vec2-L
        TIMNetConfig(in_features=512, channels=32, scales=5, convs_per_block=2, kernel_size=3),
    ],
)
@pytest.mark.parametrize("n_outputs", [1, 8])
def test_parameter_count_matches_formula(cfg: TIMNetConfig, n_outputs: int) -> None:
    assert count_parameters(TIMNetClassifier(cfg, n_outputs)) == timnet_parameter_count(cfg, n_outputs)


def test_parameter_count_log_mel_value() -> None:
    # The docstring's worked example: 2*(24*64+64 + 7*3*(2*64*64 + 3*64)) + 7 + (64*8+8) = 355,855.
    assert timnet_parameter_count(TIMNetConfig(in_features=24), 8) == 355_855


def test_streams_have_separate_weights() -> None:
    model = TIMNet(TIMNetConfig(in_features=4, channels=8, scales=3))
    fwd_ids = {id(p) for p in model.forward_stream.parameters()}
    bwd_ids = {id(p) for p in model.backward_stream.parameters()}
    assert fwd_ids.isdisjoint(bwd_ids)
    assert not torch.equal(model.forward_stream.proj.weight, model.backward_stream.proj.weight)


def test_count_parameters_trainable_only() -> None:
    model = TIMNetClassifier(TIMNetConfig(in_features=3, channels=4, scales=2), 2)
    model.encoder.requires_grad_(False)
    assert count_parameters(model) == 10  # the head alone
    assert count_parameters(model, trainable_only=False) == 572


# --- dynamic fusion -----------------------------------------------------------------------------------------


def test_scale_weights_init() -> None:
    torch.manual_seed(0)
    model = TIMNet(TIMNetConfig(in_features=24, scales=7))
    w = model.scale_weights
    assert w.shape == (7,)
    assert w.requires_grad
    assert (w.abs() <= 0.05).all()
    assert w.abs().max() > 0.0  # initialised, not zeros


def test_fused_vector_is_weighted_sum_of_time_averages() -> None:
    cfg = TIMNetConfig(in_features=6, channels=8, scales=4)
    model = _eval_model(cfg)
    x = torch.randn(3, 30, 6, dtype=torch.float64)
    fwd, bwd = model.streams(x)
    w = model.scale_weights
    manual = torch.zeros(3, 8, dtype=torch.float64)
    for i in range(cfg.scales):
        manual += w[i] * (fwd[i] + bwd[i]).mean(dim=-1)  # (B, C)
    fused = model(x)
    torch.testing.assert_close(fused, manual)
    # The official code adds the backward stream without flipping it back; the time average makes that moot.
    reflipped = sum(w[i] * (fwd[i] + bwd[i].flip(-1)).mean(dim=-1) for i in range(cfg.scales))
    torch.testing.assert_close(fused, reflipped)


def test_classifier_head_on_encoder_output() -> None:
    torch.manual_seed(0)
    model = TIMNetClassifier(TIMNetConfig(in_features=6, channels=8, scales=3), 8).double().eval()
    x = torch.randn(2, 20, 6, dtype=torch.float64)
    torch.testing.assert_close(model(x), model.encoder(x) @ model.head.weight.T + model.head.bias)


# --- training -----------------------------------------------------------------------------------------------


def test_overfits_tiny_batch() -> None:
    torch.manual_seed(0)
    x = torch.randn(16, 88, 24)
    y = torch.randint(0, 8, (16,))
    model = TIMNetClassifier(TIMNetConfig(in_features=24, scales=7), 8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(200):
        model.train()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 9:
            model.eval()
            with torch.no_grad():
                logits = model(x)
            accuracy = (logits.argmax(dim=1) == y).float().mean().item()
            eval_loss = F.cross_entropy(logits, y).item()
            if accuracy == 1.0 and eval_loss < 0.05:
                break
    assert accuracy == 1.0
    assert eval_loss < 0.05


def test_deterministic_under_seed() -> None:
    cfg = TIMNetConfig(in_features=24, channels=16, scales=5)
    x = torch.randn(2, 40, 24)
    outputs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = TIMNetClassifier(cfg, 8)
        model.train()  # dropout draws from the same seeded generator too
        outputs.append((model(x), model.eval()(x)))
    torch.testing.assert_close(outputs[0][0], outputs[1][0], rtol=0, atol=0)
    torch.testing.assert_close(outputs[0][1], outputs[1][1], rtol=0, atol=0)
    torch.manual_seed(124)
    other = TIMNetClassifier(cfg, 8).eval()
    assert not torch.equal(other(x), outputs[0][1])


# --- errors -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frames", "scales"),
    [(88, 8), (64, 7), (65, 8)],  # 2^7 = 128 >= 88; 2^6 = 64 >= 64; 128 >= 65
)
def test_sequence_too_short_for_scales(frames: int, scales: int) -> None:
    model = TIMNet(TIMNetConfig(in_features=4, channels=4, scales=scales))
    with pytest.raises(ValueError, match=rf"T={frames} is too short for TIMNetConfig\.scales={scales}"):
        model(torch.randn(1, frames, 4))


def test_sequence_just_long_enough() -> None:
    model = TIMNet(TIMNetConfig(in_features=4, channels=4, scales=7))
    assert model(torch.randn(1, 65, 4)).shape == (1, 4)  # 2^6 = 64 < 65


@pytest.mark.parametrize("shape", [(2, 88, 25), (88, 24), (2, 24, 88)])
def test_wrong_input_shape(shape: tuple[int, ...]) -> None:
    model = TIMNet(TIMNetConfig(in_features=24, channels=4, scales=3))
    with pytest.raises(ValueError, match=r"TIMNetConfig\.in_features"):
        model(torch.randn(*shape))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("in_features", 0),
        ("in_features", 2.5),
        ("channels", 0),
        ("channels", -64),
        ("channels", True),
        ("scales", 0),
        ("kernel_size", 1),
        ("convs_per_block", 0),
        ("dropout", -0.1),
        ("dropout", 1.0),
        ("dropout", "0.1"),
    ],
)
def test_bad_config_names_the_field(field: str, value: object) -> None:
    kwargs = {"in_features": 24, field: value}
    with pytest.raises(ValueError, match=rf"TIMNetConfig\.{field}"):
        TIMNetConfig(**kwargs)


@pytest.mark.parametrize("n_outputs", [0, -1, 2.0])
def test_bad_n_outputs(n_outputs: object) -> None:
    with pytest.raises(ValueError, match="n_outputs"):
        TIMNetClassifier(TIMNetConfig(in_features=4), n_outputs)


def test_config_is_frozen() -> None:
    cfg = TIMNetConfig(in_features=24)
    assert cfg.dilations == (1, 2, 4, 8, 16, 32, 64)
    with pytest.raises(AttributeError):
        cfg.scales = 8  # type: ignore[misc]
