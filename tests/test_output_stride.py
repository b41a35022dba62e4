"""Classifiers at output stride 32, 16 and 8 (classify/models.py): known feature-map sizes, exact
equivalence to the strided network at the strided grid, torchvision's own dilation as reference,
and checkpoints of another stride refused."""

from __future__ import annotations

import pytest
import torch
from torchvision import models as tvm

from sharpen_attention.classifiers import build_classifier, check_checkpoint
from sharpen_core.checkpoints import CheckpointMismatch
from sharpen_attention.attention import default_layers

pytestmark = pytest.mark.usefixtures("one_thread")


def _feature_sizes(model: torch.nn.Module, size: int) -> dict[str, tuple[int, int]]:
    """Spatial size of the "last" and "inner" attention layers and of the map before the head (meta device)."""
    layers = default_layers(model)
    modules = dict(model.named_modules())
    head_input = "layer4" if isinstance(model, tvm.ResNet) else "features"
    out: dict[str, tuple[int, int]] = {}
    hooks = [modules[name].register_forward_hook(lambda m, i, o, key=key: out.__setitem__(key, tuple(o.shape[-2:])))
             for key, name in [*layers.items(), ("head_input", head_input)]]
    with torch.no_grad():
        model.to("meta")(torch.empty(1, 3, size, size, device="meta"))
    for h in hooks:
        h.remove()
    return out


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "resnet101", "vgg19"])
def test_feature_map_sizes(arch):
    # 224 px: ResNet layer4 / layer3 at 7 / 14 (stride 32), 14 / 14 (16), 28 / 28 (8); VGG-19 conv5_4 before
    # pool5 at 14, 14, 28, conv4_4 at 28, and the map before the head (after pool5) at 7, 14, 28.
    expected = {
        "resnet": {32: (7, 14, 7), 16: (14, 14, 14), 8: (28, 28, 28)},
        "vgg19": {32: (14, 28, 7), 16: (14, 28, 14), 8: (28, 28, 28)},
    }["vgg19" if arch == "vgg19" else "resnet"]
    for stride, (last, inner, head) in expected.items():
        with torch.device("meta"):
            model = build_classifier(arch, 20, output_stride=stride)
        sizes = _feature_sizes(model, 224)
        assert sizes == {"last": (last, last), "inner": (inner, inner), "head_input": (head, head)}, (stride, sizes)


def _trunks(arch: str, stride: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The convolutional trunks (no head) of the strided and the dilated network, same random weights."""
    with torch.device("meta"):
        strided, dilated = build_classifier(arch, 5), build_classifier(arch, 5, output_stride=stride)
    if arch.startswith("resnet"):
        strided, dilated = (torch.nn.Sequential(*list(m.children())[:-2]) for m in (strided, dilated))
    else:
        strided, dilated = strided.features, dilated.features
    strided.to_empty(device="cpu")
    dilated.to_empty(device="cpu")
    torch.manual_seed(0)
    for m in strided.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                torch.nn.init.normal_(m.bias, std=0.1)
        elif isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.normal_(m.bias, std=0.1)
            m.running_mean.normal_(std=0.1)
            m.running_var.uniform_(0.5, 1.5)
    dilated.load_state_dict(strided.state_dict())
    return strided.eval(), dilated.eval()


@pytest.mark.parametrize("arch,stride", [("resnet18", 16), ("resnet18", 8), ("resnet50", 8), ("vgg19", 16),
                                         ("vgg19", 8)])
def test_dilated_network_equals_the_strided_one_on_its_grid(arch, stride):
    # Dilation replaces stride exactly: on every (32 / stride)-th pixel the dilated last feature map is
    # the strided network's (eval mode, same weights).
    strided, dilated = _trunks(arch, stride)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = strided(x), dilated(x)
    k = 32 // stride
    assert b.shape[-1] == a.shape[-1] * k and a.abs().amax() > 0
    torch.testing.assert_close(b[..., ::k, ::k], a, rtol=1e-4, atol=1e-4 * float(a.abs().amax()))


@pytest.mark.parametrize("stride,dilate", [(16, [False, False, True]), (8, [False, True, True])])
def test_resnet50_matches_torchvision_dilation(stride, dilate):
    with torch.device("meta"):
        ours = build_classifier("resnet50", 20, output_stride=stride)
        ref = tvm.resnet50(num_classes=20, replace_stride_with_dilation=dilate)
    convs = [(n, m.stride, m.dilation, m.padding) for n, m in ours.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs == [(n, m.stride, m.dilation, m.padding) for n, m in ref.named_modules()
                     if isinstance(m, torch.nn.Conv2d)]


def test_other_stride_is_refused():
    meta = {"arch": "resnet18", "num_classes": 20, "output_stride": 16}
    check_checkpoint(meta, "resnet18", 20, "ckpt.pt", 16)
    with pytest.raises(CheckpointMismatch, match="ckpt.pt: checkpoint is for output stride 16, but this run uses 32"):
        check_checkpoint(meta, "resnet18", 20, "ckpt.pt", 32)
    with pytest.raises(CheckpointMismatch, match="output stride 32, but this run uses 8"):
        check_checkpoint({"arch": "resnet18", "num_classes": 20}, "resnet18", 20, "old.pt", 8)  # before strides
    with pytest.raises(ValueError, match="classify.output_stride must be one of \\(32, 16, 8\\), got 4"):
        build_classifier("resnet18", 20, output_stride=4)


def test_training_records_the_stride_and_cues_use_it(tiny_voc, tmp_path):
    from classify.evaluate import evaluate_classifier
    from classify.train import train_classifier
    from sharpen_attention.attention import AttentionExtractor
    from sharpen_attention.classifiers import load_classifier
    from sharpen_core.checkpoints import load_checkpoint
    from sharpen_core.config import load_config

    sets = [f"data.root={tiny_voc}", "run.device=cpu", "data.num_workers=0", "classify.image_size=32",
            "classify.batch_size=2", "classify.epochs=1"]
    cfg = load_config(None, [*sets, "classify.output_stride=16"])
    train_classifier(cfg, "icasc", tmp_path, progress=False)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["output_stride"] == 16
    model, _ = load_classifier(tmp_path / "checkpoint.pt", 20)
    with AttentionExtractor(model, layers=("last",), mechanism="channel") as extract:
        assert extract(torch.zeros(1, 3, 32, 32), classes=[[0]]).maps["last"].shape == (1, 1, 2, 2)  # 32 / 16
    with pytest.raises(CheckpointMismatch, match="checkpoint is for output stride 16, but this run uses 32"):
        evaluate_classifier(load_config(None, sets), tmp_path / "checkpoint.pt", progress=False)
