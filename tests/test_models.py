"""The model zoo: every registered network, checked against its definition and the paper."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import torch
from torch import nn

from mfn_deploy.errors import MfnError
from mfn_deploy.models import InputSpec, ModelSpec, create, get_spec, names, register
from mfn_deploy.models.layers import GDConv
from mfn_deploy.models.trunk import Row, build_trunk
from mfn_deploy.stats import count_madds, count_params, model_stats

TABLE2 = [
    "mobilenet_v1",
    "shufflenet_g3",
    "mobilenet_v2",
    "mobilenet_v2_gdconv",
    "mobilefacenet",
    "mobilefacenet_112x96",
    "mobilefacenet_96x96",
    "mobilefacenet_m",
    "mobilefacenet_s",
    "mobilefacenet_relu",
    "mobilefacenet_x2",
]
# Networks with trained weights from elsewhere, registered after Table 2's.
PRETRAINED = ["mobilefacenet_tf"]
# Table 2's parameter column as the paper prints it: millions, two significant figures.
PAPER_PARAMS = {
    "mobilenet_v1": "3.2",
    "shufflenet_g3": "0.83",
    "mobilenet_v2": "2.1",
    "mobilenet_v2_gdconv": "2.1",
    "mobilefacenet": "0.99",
    "mobilefacenet_112x96": "0.99",
    "mobilefacenet_96x96": "0.99",
    "mobilefacenet_m": "0.92",
    "mobilefacenet_s": "0.84",
    "mobilefacenet_relu": "0.98",
    "mobilefacenet_x2": "1.1",
}
# Networks the paper's figure does not fit; each model card says why.
PAPER_PARAMS_EXCEPTIONS = {"shufflenet_g3", "mobilenet_v2", "mobilenet_v2_gdconv"}
CARDS = Path(__file__).resolve().parent.parent / "models" / "README.md"
EMBEDDING_DIM = {
    "mobilenet_v1": 1024,
    "shufflenet_g3": 960,
    "mobilenet_v2": 1280,
    "mobilenet_v2_gdconv": 1280,
    "mobilefacenet_m": 512,
    "mobilefacenet_tf": 192,
}


def test_registry_holds_every_table2_network_in_paper_order():
    assert names() == TABLE2 + PRETRAINED


@pytest.mark.parametrize("name", names())
def test_forward_shape_no_nan_and_deterministic(name):
    torch.manual_seed(0)
    model = create(name)
    assert not model.training
    x = torch.randn(2, 3, *model.input_spec.size)
    with torch.no_grad():
        a, b = model(x), model(x)
    assert a.shape == (2, EMBEDDING_DIM.get(name, 128))
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", names())
def test_every_conv_is_biasless_and_followed_by_batchnorm(name):
    model = create(name)
    leaves = [m for m in model.modules() if not list(m.children())]
    convs = [i for i, m in enumerate(leaves) if isinstance(m, nn.Conv2d)]
    assert convs
    for i in convs:
        assert leaves[i].bias is None
        assert isinstance(leaves[i + 1], nn.BatchNorm2d)


@pytest.mark.parametrize("name", names())
def test_activation_is_prelu_unless_the_variant_says_otherwise(name):
    acts = {type(m) for m in create(name).modules() if isinstance(m, nn.PReLU | nn.ReLU | nn.ReLU6)}
    expected = {
        "mobilenet_v1": {nn.ReLU},
        "shufflenet_g3": {nn.ReLU},
        "mobilenet_v2": {nn.ReLU6},
        "mobilenet_v2_gdconv": {nn.ReLU6},
        "mobilefacenet_relu": {nn.ReLU},
    }.get(name, {nn.PReLU})
    assert acts == expected


@pytest.mark.parametrize("name", names())
def test_model_carries_input_spec_and_paper_latency(name):
    model = create(name)
    spec = get_spec(name)
    assert model.input_spec == spec.input
    assert model.input_spec.channel_order == "RGB"
    assert model.input_spec.mean == 127.5
    assert model.input_spec.scale == 1 / 128
    assert model.paper_ms == spec.paper_ms
    assert spec.paper_ms is None if name in PRETRAINED else spec.paper_ms > 0


@pytest.mark.parametrize(
    ("name", "kernel"),
    [
        ("mobilefacenet", (7, 7)),
        ("mobilefacenet_112x96", (7, 6)),
        ("mobilefacenet_96x96", (6, 6)),
        ("mobilenet_v2_gdconv", (7, 7)),
    ],
)
def test_gdconv_kernel_is_derived_from_input_size(name, kernel):
    gd = [m for m in create(name).modules() if isinstance(m, GDConv)]
    assert len(gd) == 1
    conv = gd[0][0]
    assert conv.kernel_size == kernel
    assert conv.groups == conv.in_channels == conv.out_channels
    assert conv.padding == (0, 0)


def test_create_at_another_input_size_rederives_gdconv():
    model = create("mobilefacenet", input_size=(128, 96))
    gd = next(m for m in model.modules() if isinstance(m, GDConv))
    assert gd[0].kernel_size == (8, 6)
    assert model(torch.zeros(1, 3, 128, 96)).shape == (1, 128)


@pytest.mark.parametrize("size", [(100, 100), (112, 8), (0, 112)])
def test_input_size_the_network_cannot_take_is_refused(size):
    with pytest.raises(MfnError, match=r"cannot take input .*multiples of its total stride 16"):
        create("mobilefacenet", input_size=size)


def _independent_param_count(model: nn.Module) -> int:
    """Parameters from layer hyper-parameters alone, never from the tensors."""
    total = 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            total += m.out_channels * m.in_channels // m.groups * kh * kw
            total += m.out_channels if m.bias is not None else 0
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            total += 2 * m.num_features
        elif isinstance(m, nn.PReLU):
            total += m.num_parameters
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features + (m.out_features if m.bias is not None else 0)
        elif not list(m.children()):
            assert not list(m.parameters()), f"uncounted layer with parameters: {m}"
    return total


def _independent_madds(model) -> int:
    """Multiply-adds from hooks on each conv's real output size."""
    total = 0

    def hook(m, _inputs, out):
        nonlocal total
        kh, kw = m.kernel_size
        total += out[0].numel() * m.in_channels // m.groups * kh * kw

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(1, 3, *model.input_spec.size))
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("name", names())
def test_counters_agree_with_an_independent_count(name):
    model = create(name)
    assert count_params(model) == _independent_param_count(model)
    assert count_madds(model)[0] == _independent_madds(model)


def test_mobilefacenet_matches_the_paper_size_and_cost():
    s = model_stats("mobilefacenet")
    assert s.params == pytest.approx(0.99e6, rel=0.02)
    assert s.madds == pytest.approx(221e6, rel=0.02)
    assert s.size_mb == pytest.approx(4.0, abs=0.1)
    assert s.embedding_dim == 128


def test_variants_differ_from_the_primary_network_as_the_paper_says():
    base = model_stats("mobilefacenet")
    assert model_stats("mobilefacenet_m").params < base.params  # no final linear 1x1
    assert model_stats("mobilefacenet_s").params < model_stats("mobilefacenet_m").params
    x2 = model_stats("mobilefacenet_x2")  # t doubled in the last group only: see its card
    assert base.params < x2.params
    assert base.madds < x2.madds < 1.05 * base.madds
    assert model_stats("mobilefacenet_96x96").madds < model_stats("mobilefacenet_112x96").madds
    assert model_stats("mobilefacenet_112x96").madds < base.madds


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(MfnError) as e:
        create("mobilefacenett")
    msg = str(e.value)
    assert "unknown model 'mobilefacenett'" in msg
    for n in TABLE2:
        assert n in msg
    assert "\n" not in msg


def test_registry_refuses_duplicate_names():
    spec = get_spec("mobilefacenet")
    with pytest.raises(ValueError, match="already registered"):
        register(
            ModelSpec(
                name="mobilefacenet",
                title="dup",
                table=spec.table,
                input=InputSpec(112, 112),
                act="prelu",
                paper_ms=1,
                paper_params="1.0",
            )
        )
    assert get_spec("mobilefacenet") is spec


@pytest.mark.parametrize("name", TABLE2)
def test_parameters_match_the_paper_within_its_rounding(name):
    """Table 2 rounds to two significant figures and does not say whether BatchNorm
    and PReLU count: its figure, give or take half a unit of the last printed digit,
    must meet the range from the convolution weights alone to every trainable tensor.
    """
    printed = PAPER_PARAMS[name]
    assert get_spec(name).paper_params == printed
    paper = float(printed) * 1e6
    half = 0.5 * 10 ** Decimal(printed).as_tuple().exponent * 1e6
    model = create(name)
    conv_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))
    fits = conv_weights < paper + half and count_params(model) >= paper - half
    assert fits == (name not in PAPER_PARAMS_EXCEPTIONS)
    assert get_spec(name).matches_paper_params(model) == fits
    if not fits:
        card = CARDS.read_text().split(f"## `{name}`")[1].split("\n## ")[0]
        assert f"against the paper's {printed}M" in card, "the model card must say why"


def test_x2_doubles_t_in_the_last_bottleneck_group_only():
    base, x2 = get_spec("mobilefacenet").table, get_spec("mobilefacenet_x2").table
    changed = [(a, b) for a, b in zip(base, x2, strict=True) if a != b]
    assert changed == [(Row("bottleneck", 2, 128, 2, 1), Row("bottleneck", 4, 128, 2, 1))]
    # the last bottleneck group is the row just before the 1x1 conv that feeds GDConv
    assert [r.op for r in base].index("conv1x1") == base.index(changed[0][0]) + 1
    s = model_stats("mobilefacenet_x2")
    assert (s.params, s.madds) == (1_141_888, 227_613_696)


def test_a_depthwise_row_must_keep_its_channels():
    table = (Row("conv3x3", None, 16, 1, 2), Row("dwconv3x3", None, 32, 1, 1))
    with pytest.raises(ValueError, match="row 1: dwconv3x3 keeps its 16 input channels"):
        build_trunk(table, (32, 32), "relu")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"act": "gelu"}, "act 'gelu'; valid: prelu, relu, relu6"),
        ({"table": (Row("conv5x5", None, 8, 1, 1),)}, "row 0: unknown operator 'conv5x5'"),
        ({"table": (Row("conv3x3", 2, 8, 1, 1),)}, "row 0: t is the expansion factor"),
    ],
)
def test_registry_refuses_an_invalid_variant(change, message):
    fields = {
        "name": "broken",
        "title": "broken",
        "table": get_spec("mobilefacenet").table,
        "input": InputSpec(112, 112),
        "act": "prelu",
        "paper_ms": 1,
        "paper_params": "1.0",
    }
    with pytest.raises(ValueError, match=message):
        register(ModelSpec(**(fields | change)))
    assert "broken" not in names()
