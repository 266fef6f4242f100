"""The multimodal fusion model: one TIM-Net per modality, concatenated, then a 3-layer perceptron."""

from __future__ import annotations

import pytest
import torch

from avemotion.models import FusionClassifier, TIMNet, TIMNetConfig, count_parameters, timnet_parameter_count


def _branches():
    # a face branch (88 frames x 12 dims, 4 scales) and a speech branch (146 frames x 6 dims, 5 scales)
    return [
        TIMNetConfig(in_features=12, channels=8, scales=4),
        TIMNetConfig(in_features=6, channels=4, scales=5),
    ]


def _inputs(batch=3):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(batch, 88, 12, generator=g), torch.randn(batch, 146, 6, generator=g)]


def test_shapes_and_parameter_count_by_hand():
    torch.manual_seed(0)
    model = FusionClassifier(_branches(), hidden=(16, 10), n_outputs=8, dropout=0.1)
    assert model(_inputs()).shape == (3, 8)
    # MLP on the 8 + 4 = 12 concatenated channels: 12*16+16, 16*10+10, 10*8+8
    mlp = (12 * 16 + 16) + (16 * 10 + 10) + (10 * 8 + 8)
    encoders = sum(timnet_parameter_count(cfg) for cfg in _branches())
    assert count_parameters(model) == encoders + mlp == encoders + 466
    linears = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(12, 16), (16, 10), (10, 8)]


def test_head_sees_the_concatenation_of_each_branch_encoder():
    torch.manual_seed(0)
    model = FusionClassifier(_branches(), hidden=(16, 10), n_outputs=2, dropout=0.0).eval()
    x = _inputs()
    with torch.no_grad():
        fused = torch.cat([enc(xi) for enc, xi in zip(model.encoders, x, strict=True)], dim=1)
        h = fused
        for layer in model.head:
            h = layer(h)
        assert torch.equal(model(x), h)
        # each encoder is a plain TIM-Net of its own configuration
        alone = TIMNet(_branches()[1])
        alone.load_state_dict(model.encoders[1].state_dict())
        assert torch.equal(alone.eval()(x[1]), fused[:, 8:])


def test_a_branch_influences_the_output_only_through_its_own_encoder():
    torch.manual_seed(0)
    model = FusionClassifier(_branches(), hidden=(16, 10), n_outputs=8, dropout=0.0).eval()
    x = [t.requires_grad_() for t in _inputs()]
    model(x).sum().backward()
    assert x[0].grad.abs().sum() > 0 and x[1].grad.abs().sum() > 0
    # gradients reach every branch's weights
    loss = model(_inputs()).pow(2).sum()
    model.zero_grad()
    loss.backward()
    for enc in model.encoders:
        assert enc.forward_stream.proj.weight.grad.abs().sum() > 0


def test_trains_end_to_end_on_a_signal_only_one_branch_carries():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    n = 64
    y = torch.arange(n) % 2
    face = torch.randn(n, 88, 12, generator=g)
    speech = torch.randn(n, 146, 6, generator=g)
    speech[:, :, 0] += 2.0 * y[:, None]  # only the speech branch tells the classes apart
    model = FusionClassifier(_branches(), hidden=(16, 10), n_outputs=2, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model([face, speech]), y)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model([face, speech]).argmax(1) == y).float().mean()
    assert loss.item() < 0.2 and accuracy == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"branches": _branches()[:1]}, "at least 2 branches"),
        ({"hidden": (16,)}, "2 hidden widths"),
        ({"hidden": (16, 0)}, "fusion hidden width"),
        ({"n_outputs": 0}, "n_outputs"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_settings_name_what_is_wrong(kwargs, message):
    args = {"branches": _branches(), "hidden": (16, 10), "n_outputs": 8, "dropout": 0.1} | kwargs
    with pytest.raises(ValueError, match=message):
        FusionClassifier(**args)


def test_wrong_number_of_inputs():
    model = FusionClassifier(_branches(), hidden=(16, 10), n_outputs=8, dropout=0.1)
    with pytest.raises(ValueError, match="expected 2 modality inputs, got 1"):
        model(_inputs()[:1])
