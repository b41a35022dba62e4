"""Attention maps (docs/method.md §1): known answers, agreement with pytorch-grad-cam, one pass = per-class loop,
differentiability (gradcheck), hygiene (hooks, mode, .grad, memory) and bad-input errors."""

from __future__ import annotations

import copy
import gc
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm

from sharpen_attention.attention import AttentionExtractor, attention_maps, default_layers, max_normalize, weighted_map
from sharpen_attention.mechanisms import MECHANISMS, channel_weights, gradcam_weights, gradcampp_weights

NUM = 20


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return tvm.resnet18(weights=None, num_classes=NUM).eval()


@pytest.fixture(scope="module")
def vgg() -> nn.Module:
    torch.manual_seed(1)
    return tvm.vgg19(weights=None, num_classes=NUM).eval()


@pytest.fixture(scope="module")
def slim_vgg(vgg: nn.Module) -> nn.Module:
    """VGG-19's features with a small classifier: the same layers, without 100M-parameter matmuls per class."""
    model = copy.deepcopy(vgg)
    model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 32), nn.ReLU(inplace=True), nn.Linear(32, NUM))
    return model.eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
               for m in model.modules())


# ---------------------------------------------------------------- layers

def test_default_layers_resnet_and_vgg19(resnet: nn.Module, vgg: nn.Module) -> None:
    assert default_layers(resnet) == {"last": "layer4", "inner": "layer3"}
    layers = default_layers(vgg)
    assert layers == {"last": "features.35", "inner": "features.26"}
    feats = vgg.features
    # conv5_4 -> ReLU -> last pool; conv4_4 -> ReLU -> 4th pool
    convs = [i for i, m in enumerate(feats) if isinstance(m, nn.Conv2d)]
    assert convs[15] == 34 and convs[11] == 25  # conv5_4 and conv4_4 are the 16th and 12th convs
    assert isinstance(feats[35], nn.ReLU) and isinstance(feats[36], nn.MaxPool2d)
    assert isinstance(feats[26], nn.ReLU) and isinstance(feats[27], nn.MaxPool2d)
    wrapped = nn.Sequential(resnet)
    assert default_layers(wrapped) == {"last": "0.layer4", "inner": "0.layer3"}


def test_inner_layer_has_twice_the_resolution(resnet: nn.Module, vgg: nn.Module, images: torch.Tensor) -> None:
    for model in (resnet, vgg):
        r = attention_maps(model, images, classes=0, layers=("last", "inner"))
        assert r.maps["inner"].shape[-1] == 2 * r.maps["last"].shape[-1]


# ---------------------------------------------------------------- pure functions, hand-computed answer

def _hand_net() -> nn.Module:
    """x (1, 1, 1, 2) -> 1x1 conv with 2 channels (weights 1 and 2) -> ReLU = A -> flatten -> linear (2 classes).

    With x = [1, 2]: A_0 = [1, 2], A_1 = [2, 4]; g^c_k = the linear row reshaped (2 channels x 2 pixels).
    """
    net = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))
        net[3].weight.copy_(torch.tensor([[3.0, -1.0, -2.0, -2.0],     # class 0: g_0 = [3, -1], g_1 = [-2, -2]
                                          [-1.0, -1.0, 1.0, 0.5]]))  # class 1: g_0 = [-1, -1], g_1 = [1, 0.5]
    return net.eval()


HAND = {
    # class 0: Grad-CAM α = (1, -2) -> ReLU([1 - 4, 2 - 8]) = 0; channel α = (1.5, 0) -> [1.5, 3];
    # Grad-CAM++ (Σ A = 3, 6): α_0 = 3 / (2 + 3·3) = 3/11, α_1 = 0 -> [3/11, 6/11].
    # class 1: Grad-CAM α = (-1, 0.75) -> [0.5, 1]; channel α = (0, 0.75) -> [1.5, 3];
    # Grad-CAM++ α_1 = 1/(2 + 6) + 0.5/(2 + 3) = 0.225 -> [0.45, 0.9].
    "gradcam": [[0.0, 0.0], [0.5, 1.0]],
    "channel": [[1.5, 3.0], [1.5, 3.0]],
    "gradcampp": [[3 / 11, 6 / 11], [0.45, 0.9]],
}


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_hand_computed_maps(mechanism: str) -> None:
    net = _hand_net()
    x = torch.tensor([1.0, 2.0]).view(1, 1, 1, 2)
    r = attention_maps(net, x, layers="1", mechanism=mechanism, normalize=False)
    expected = torch.tensor(HAND[mechanism]).view(1, 2, 1, 2)
    torch.testing.assert_close(r.maps["1"], expected)
    torch.testing.assert_close(r.logits, torch.tensor([[3 - 2 - 4 - 8.0, -1 - 2 + 2 + 2.0]]))
    normed = attention_maps(net, x, layers="1", mechanism=mechanism).maps["1"]
    torch.testing.assert_close(normed, max_normalize(expected))


def test_channel_weighted_ignores_negative_gradients() -> None:
    """The negative-gradient channel that Grad-CAM counts and channel-weighted attention ignores."""
    g = torch.tensor([[3.0, -1.0], [-2.0, -2.0]]).view(1, 1, 2, 1, 2)
    a = torch.tensor([[1.0, 2.0], [2.0, 4.0]]).view(1, 2, 1, 2)
    torch.testing.assert_close(gradcam_weights(a, g), torch.tensor([[[1.0, -2.0]]]))
    torch.testing.assert_close(channel_weights(a, g), torch.tensor([[[1.5, 0.0]]]))
    torch.testing.assert_close(gradcampp_weights(a, g), torch.tensor([[[3 / 11, 0.0]]]))
    torch.testing.assert_close(weighted_map(a, channel_weights(a, g)), torch.tensor([1.5, 3.0]).view(1, 1, 1, 2))
    # pytorch-grad-cam's variant with eps in the denominator tends to ours as eps -> 0
    torch.testing.assert_close(gradcampp_weights(a, g, eps=1e-12), gradcampp_weights(a, g))


# ---------------------------------------------------------------- the registry

def _largest_gradient(acts: torch.Tensor, grads: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """A made-up mechanism: ``α^c_k = max_ij g^c_kij``."""
    return grads.amax(dim=(-2, -1))


@pytest.fixture
def maxgrad(monkeypatch: pytest.MonkeyPatch) -> str:
    """One registry entry, nothing else: the extractor, the config check and the leaderboard know it."""
    from sharpen_attention.mechanisms import NATIVE, REGISTRY, Mechanism

    monkeypatch.setitem(REGISTRY, "maxgrad", Mechanism("maxgrad", NATIVE, "channel weight = largest gradient",
                                                       weights=_largest_gradient))
    return "maxgrad"


def test_a_registry_entry_drives_the_extractor(maxgrad: str) -> None:
    # hand net: class 0 α = (3, -2) -> ReLU([3 - 4, 6 - 8]) = 0; class 1 α = (-1, 1) -> [-1 + 2, -2 + 4] = [1, 2]
    r = attention_maps(_hand_net(), torch.tensor([1.0, 2.0]).view(1, 1, 1, 2), layers="1", mechanism=maxgrad,
                       normalize=False)
    torch.testing.assert_close(r.maps["1"], torch.tensor([[0.0, 0.0], [1.0, 2.0]]).view(1, 2, 1, 2))


def test_a_registry_entry_drives_the_config_check_and_the_leaderboard(maxgrad: str) -> None:
    from pipeline.leaderboard import leaderboard
    from pipeline.plan import check_run_config
    from sharpen_core.config import ConfigError, load_config

    check_run_config(load_config(None, [f'run.cue_sets=["baseline:{maxgrad}", "baseline:layercam"]']))
    with pytest.raises(ConfigError, match=r"run.cue_sets entry 'baseline:smoothcam': unknown mechanism 'smoothcam'; "
                                          r"expected one of: gradcam, gradcampp, channel, maxgrad \(native\) or "
                                          r"scorecam, layercam, .*gradcamelementwise \(pytorch-grad-cam\)"):
        check_run_config(load_config(None, ['run.cue_sets=["baseline:smoothcam"]']))
    board = leaderboard([{"classifier": "baseline", "mechanism": m, "cue_miou": v}
                         for m, v in ((maxgrad, 0.5), ("layercam", 0.6), ("smoothcam", 0.4))])
    assert [(e["mechanism"], e["kind"]) for e in board] == [
        ("layercam", "pytorch-grad-cam; element-wise: ReLU(gradient) × activation"),
        (maxgrad, "native; channel weight = largest gradient"), ("smoothcam", "unknown")]


def test_registry_entries_are_whole() -> None:
    from sharpen_attention.mechanisms import GRAD_CAM, NATIVE, REGISTRY, Mechanism

    assert MECHANISMS == ("gradcam", "gradcampp", "channel")
    assert all(name == m.name and (m.weights is not None) == m.native for name, m in REGISTRY.items())
    with pytest.raises(ValueError, match="kind"):
        Mechanism("x", "torchcam", "?", weights=_largest_gradient)
    with pytest.raises(ValueError, match="cam_class"):
        Mechanism("x", GRAD_CAM, "?", weights=_largest_gradient)
    with pytest.raises(ValueError, match="cam_class"):
        Mechanism("x", NATIVE, "?")


# ---------------------------------------------------------------- agreement with pytorch-grad-cam

@pytest.mark.parametrize("arch", ["resnet", "vgg"])
@pytest.mark.parametrize("mechanism", ["gradcam", "gradcampp"])
def test_matches_pytorch_grad_cam(arch: str, mechanism: str, request: pytest.FixtureRequest,
                                  images: torch.Tensor) -> None:
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = request.getfixturevalue(arch)
    cam_class = pgc.GradCAM if mechanism == "gradcam" else pgc.GradCAMPlusPlus
    classes = torch.tensor([[3, 11], [7, 0]])
    # pytorch-grad-cam puts 1e-6 in Grad-CAM++'s denominator; docs/method.md has none: compare like for like
    # layers in forward order: pytorch-grad-cam lists activations in the order the layers run
    ours = attention_maps(model, images, classes=classes, layers=("inner", "last"), mechanism=mechanism,
                          normalize=False, gradcampp_eps=1e-6)
    modules = dict(model.named_modules())
    keys = list(ours.layers)
    target_layers = [modules[ours.layers[k]] for k in keys]
    for j in range(classes.shape[1]):
        targets = [ClassifierOutputTarget(int(c)) for c in classes[:, j]]
        with cam_class(model=model, target_layers=target_layers) as cam:  # both layers, one pass per class
            cam(images, targets)
            for i, key in enumerate(keys):
                acts = cam.activations_and_grads.activations[i].numpy()
                grads = cam.activations_and_grads.gradients[i].numpy()
                ref = np.maximum(cam.get_cam_image(images, target_layers[i], targets, acts, grads, False), 0)
                got = ours.maps[key][:, j].numpy()
                assert got.shape == ref.shape == acts.shape[:1] + acts.shape[2:]
                scale = float(np.abs(ref).max())
                assert scale > 0
                np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * scale)
    assert _no_hooks(model)


# ---------------------------------------------------------------- one pass == per-class loop, closed form

@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_one_pass_equals_per_class_loop(resnet: nn.Module, slim_vgg: nn.Module, images: torch.Tensor,
                                        mechanism: str) -> None:
    for model in (resnet, slim_vgg):
        layers = ("last", "inner")
        with AttentionExtractor(model, layers, mechanism) as extract:
            full = extract(images, normalize=False)
            assert full.classes.shape == (2, NUM)
            looped = AttentionExtractor(model, layers, mechanism, vjp="loop")(images, normalize=False)
            legacy = AttentionExtractor(model, layers, mechanism, vjp="is_grads_batched")(images, normalize=False)
            chunked = AttentionExtractor(model, layers, mechanism, class_chunk=7)(images, normalize=False)
            for c in (5, NUM - 1):
                single = extract(images, classes=c, normalize=False)
                for key in layers:
                    torch.testing.assert_close(single.maps[key][:, 0], full.maps[key][:, c], rtol=1e-4, atol=1e-6)
            for key in layers:
                assert full.maps[key].shape[:2] == (2, NUM)
                torch.testing.assert_close(looped.maps[key], full.maps[key], rtol=1e-4, atol=1e-6)
                torch.testing.assert_close(legacy.maps[key], full.maps[key], rtol=1e-4, atol=1e-6)
                torch.testing.assert_close(chunked.maps[key], full.maps[key], rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(full.logits, model(images))


def test_all_classes_in_one_batched_backward(resnet: nn.Module, images: torch.Tensor) -> None:
    """vmap: each convolution / batch norm of layer4 runs its backward once for all 20 classes, not once per class."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.calls: Counter[str] = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            self.calls[str(func.overloadpacket)] += 1
            return func(*args, **(kwargs or {}))

    counts = {}
    for vjp in ("vmap", "loop"):
        with Count() as c:
            AttentionExtractor(resnet, ("last", "inner"), vjp=vjp)(images)
        counts[vjp] = (c.calls["aten.convolution_backward"], c.calls["aten.native_batch_norm_backward"])
    assert counts["vmap"] == (5, 5)  # layer4: 5 convolutions and 5 batch norms, closed form above it
    assert counts["loop"] == (5 * NUM, 5 * NUM)


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_closed_form_equals_autograd(resnet: nn.Module, images: torch.Tensor, mechanism: str) -> None:
    classes = torch.tensor([[1, 2, 19], [4, 4, 0]])
    ext = AttentionExtractor(resnet, "last", mechanism)
    assert set(ext._heads) == {"layer4"}
    auto = AttentionExtractor(resnet, "last", mechanism, closed_form=False)
    assert not auto._heads
    a = ext(images, classes, normalize=False).maps["last"]
    b = auto(images, classes, normalize=False).maps["last"]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # differentiable: the same parameter gradients through the closed-form weights
    grads = []
    for e in (ext, auto):
        m = e(images, classes, create_graph=True).maps["last"]
        grads.append(torch.autograd.grad(m.square().sum(), [resnet.fc.weight, resnet.layer4[1].conv2.weight]))
    for g1, g2 in zip(*grads):
        assert g1.abs().sum() > 0
        torch.testing.assert_close(g1, g2, rtol=1e-3, atol=1e-6)


def test_closed_form_detection_is_structural() -> None:
    class Custom(tvm.ResNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) * 2

    model = Custom(tvm.resnet.BasicBlock, [1, 1, 1, 1], num_classes=3)
    assert not AttentionExtractor(model, "last")._heads
    with pytest.raises(ValueError, match="closed_form"):
        AttentionExtractor(model, "last", closed_form=True)
    plain = tvm.resnet18(weights=None, num_classes=3)
    plain.fc = nn.Sequential(nn.Dropout(0.5), nn.Linear(512, 3))
    assert not AttentionExtractor(plain, "last")._heads


# ---------------------------------------------------------------- differentiability

class _Tiny(nn.Module):
    """conv -> ReLU (hooked, 'act') -> conv -> ReLU -> GAP -> linear; weights are plain tensors for gradcheck."""

    def __init__(self, w1: torch.Tensor, w2: torch.Tensor, w3: torch.Tensor) -> None:
        super().__init__()
        self.act = nn.ReLU()
        self.w1, self.w2, self.w3 = w1, w2, w3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act(F.conv2d(x, self.w1, padding=1))
        h = F.relu(F.conv2d(a, self.w2, padding=1))
        return F.linear(h.mean(dim=(2, 3)), self.w3)


def _tiny_params(seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(3, 2, 3, 3), (4, 3, 3, 3), (5, 4)]
    return tuple(torch.randn(s, generator=g, dtype=torch.float64).requires_grad_() for s in shapes)


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_gradcheck_differentiable_maps(mechanism: str) -> None:
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    w1, w2, w3 = _tiny_params()
    net = _Tiny(w1, w2, w3)
    ext = AttentionExtractor(net, "act", mechanism)

    def maps(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, w3: torch.Tensor) -> torch.Tensor:
        net.w1, net.w2, net.w3 = w1, w2, w3
        return ext(x, classes=[[0, 3], [4, 1]], create_graph=True).maps["act"]

    assert torch.autograd.gradcheck(maps, (x.requires_grad_(), w1, w2, w3), eps=1e-6, atol=1e-5)
    assert _no_hooks(net)


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_weight_only_parameter_gets_gradient(mechanism: str) -> None:
    """w3 (the head) reaches the map only through the gradient weights α; w1 through A as well."""
    w1, w2, w3 = _tiny_params(1)
    net = _Tiny(w1, w2, w3)
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    r = attention_maps(net, x, classes=None, layers="act", mechanism=mechanism, create_graph=True)
    assert r.maps["act"].requires_grad and r.logits.requires_grad
    loss = r.maps["act"].sum() + 0.0 * r.logits.sum()
    g1, g2, g3 = torch.autograd.grad(loss, (w1, w2, w3))
    assert g3.abs().sum() > 0 and g2.abs().sum() > 0 and g1.abs().sum() > 0
    inference = attention_maps(net, x, layers="act", mechanism=mechanism)
    assert not inference.maps["act"].requires_grad and not inference.logits.requires_grad
    torch.testing.assert_close(inference.maps["act"], r.maps["act"].detach())


def test_train_mode_batchnorm_differentiable(resnet: nn.Module, images: torch.Tensor) -> None:
    """ICASC training: train-mode BatchNorm, batched double backward into the parameters."""
    model = copy.deepcopy(resnet).train()
    r = attention_maps(model, images, classes=[[1], [2, 3]], layers=("last", "inner"), create_graph=True)
    loss = r.maps["inner"].mean() + r.maps["last"].mean() + F.cross_entropy(r.logits, torch.tensor([1, 2]))
    params = [model.fc.weight, model.layer3[0].conv1.weight, model.layer4[0].bn1.weight]
    grads = torch.autograd.grad(loss, params)
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    assert model.training
    looped = AttentionExtractor(model, ("last", "inner"), vjp="loop")
    model.layer1[0].bn1.momentum = 0.0  # keep the statistics equal between the two calls below
    for key in ("last", "inner"):
        torch.testing.assert_close(
            looped(images, classes=[[1], [2, 3]]).maps[key],
            AttentionExtractor(model, ("last", "inner"))(images, classes=[[1], [2, 3]]).maps[key],
            rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- hygiene

def test_hooks_mode_and_grads_left_alone(resnet: nn.Module, images: torch.Tensor) -> None:
    resnet = copy.deepcopy(resnet)
    sentinel = {p: torch.full_like(p, 0.5) for p in list(resnet.parameters())[:3]}
    for p, s in sentinel.items():
        p.grad = s
    try:
        for mode in (True, False):
            resnet.train(mode)
            modes = [m.training for m in resnet.modules()]
            for create_graph in (False, True):
                r = attention_maps(resnet, images, layers=("last", "inner"), mechanism="gradcampp",
                                   create_graph=create_graph)
                assert r.maps["inner"].requires_grad == create_graph
                assert [m.training for m in resnet.modules()] == modes
                assert _no_hooks(resnet)
                for p in resnet.parameters():
                    assert p.grad is sentinel.get(p)
    finally:
        resnet.eval()
        for p in resnet.parameters():
            p.grad = None

    with AttentionExtractor(resnet, ("last", "inner")) as extract:
        assert not _no_hooks(resnet)
        plain = resnet(images)  # an ordinary forward inside the block is unaffected
        torch.testing.assert_close(plain, extract(images).logits)
    assert _no_hooks(resnet)
    with pytest.raises(RuntimeError, match="boom"):
        with AttentionExtractor(resnet, "inner"):
            raise RuntimeError("boom")
    assert _no_hooks(resnet)
    with pytest.raises(ValueError, match="out of range"):
        with AttentionExtractor(resnet, "inner") as extract:
            extract(images, classes=NUM)
    assert _no_hooks(resnet)


def _live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


@pytest.mark.parametrize("create_graph", [False, True])
def test_no_memory_growth(resnet: nn.Module, create_graph: bool) -> None:
    x = torch.randn(2, 3, 32, 32)
    with AttentionExtractor(resnet, ("last", "inner"), "gradcampp") as extract:
        for _ in range(2):
            r = extract(x, create_graph=create_graph)
        del r
        before = _live_tensors()
        for _ in range(3):
            r = extract(x, create_graph=create_graph)
            if create_graph:
                torch.autograd.grad(r.maps["inner"].sum(), resnet.fc.weight)
        del r
        after = _live_tensors()
    assert after <= before
    assert _no_hooks(resnet)


def test_frozen_model_no_grad_and_inference_mode(resnet: nn.Module, images: torch.Tensor) -> None:
    ref = attention_maps(resnet, images, layers=("last", "inner"), mechanism="gradcam")
    for p in resnet.parameters():
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            frozen = attention_maps(resnet, images, layers=("last", "inner"), mechanism="gradcam")
        with torch.inference_mode():
            x = images.clone()
            inf = attention_maps(resnet, x, layers=("last", "inner"), mechanism="gradcam")
    finally:
        for p in resnet.parameters():
            p.requires_grad_(True)
    for key in ("last", "inner"):
        torch.testing.assert_close(frozen.maps[key], ref.maps[key])
        torch.testing.assert_close(inf.maps[key], ref.maps[key])


def test_autocast_cpu_bfloat16(resnet: nn.Module, images: torch.Tensor) -> None:
    ref = attention_maps(resnet, images, classes=[[0, 1], [2, 3]], layers=("last", "inner"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = attention_maps(resnet, images, classes=[[0, 1], [2, 3]], layers=("last", "inner"))
        diff = attention_maps(resnet, images, classes=[[0, 1], [2, 3]], layers=("last", "inner"),
                              create_graph=True)
    assert amp.logits.dtype == torch.bfloat16
    for key in ("last", "inner"):
        assert amp.maps[key].dtype == torch.float32
        assert torch.isfinite(amp.maps[key]).all()
        assert (amp.maps[key] - ref.maps[key]).abs().mean() < 0.05
        torch.testing.assert_close(diff.maps[key].detach(), amp.maps[key])
    grad = torch.autograd.grad(diff.maps["inner"].sum() + diff.maps["last"].sum(), resnet.layer4[0].conv1.weight)[0]
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


# ---------------------------------------------------------------- classes, size, normalisation

def test_class_forms_and_padding(resnet: nn.Module, images: torch.Tensor) -> None:
    with AttentionExtractor(resnet, "inner", "channel") as extract:
        full = extract(images).maps["inner"]
        r = extract(images, classes=[[3], [5, 9]])
        assert r.classes.tolist() == [[3, -1], [5, 9]]
        torch.testing.assert_close(r.maps["inner"][0, 0], full[0, 3])
        assert r.maps["inner"][0, 1].abs().max() == 0  # padding
        torch.testing.assert_close(r.maps["inner"][1], full[1, [5, 9]])
        one = extract(images, classes=torch.tensor([4, 6]))
        assert one.classes.tolist() == [[4], [6]]
        torch.testing.assert_close(one.maps["inner"][:, 0], full[[0, 1], [4, 6]])

        def gt_and_confusing(logits: torch.Tensor) -> torch.Tensor:
            gt = torch.tensor([1, 2])
            masked = logits.clone()
            masked[torch.arange(2), gt] = -float("inf")
            return torch.stack([gt, masked.argmax(1)], dim=1)

        conf = extract(images, classes=gt_and_confusing)
        assert conf.classes[:, 0].tolist() == [1, 2]
        torch.testing.assert_close(conf.maps["inner"][:, 1], full[torch.arange(2), conf.classes[:, 1]])


@pytest.mark.parametrize("vjp", ["vmap", "is_grads_batched", "loop"])
def test_layer_the_logits_ignore_gives_zero_maps(vjp: str) -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.act, self.side, self.fc = nn.Conv2d(3, 4, 3), nn.ReLU(), nn.ReLU(), nn.Linear(4, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = self.act(self.conv(x))
            self.side(a)  # a branch the logits do not use
            return self.fc(a.mean(dim=(2, 3)))

    for create_graph in (False, True):
        r = attention_maps(Net(), torch.randn(2, 3, 8, 8), layers=("act", "side"), mechanism="gradcampp",
                           vjp=vjp, class_chunk=2, create_graph=create_graph)
        assert r.maps["side"].shape == r.maps["act"].shape == (2, 5, 6, 6)
        assert r.maps["side"].abs().max() == 0 and r.maps["act"].abs().max() > 0


def test_size_and_normalisation(vgg: nn.Module, images: torch.Tensor) -> None:
    r = attention_maps(vgg, images, classes=[[0, 1], [2, 3]], layers=("last", "inner"), size="input")
    assert set(r.maps) == {"last", "inner"}
    for m in r.maps.values():
        assert m.shape == (2, 2, 64, 64) and m.device == images.device
        peak = m.amax(dim=(-2, -1))
        assert ((peak - 1).abs() < 1e-4).all() and m.min() >= 0
    raw = attention_maps(vgg, images, classes=[[0, 1], [2, 3]], layers="last", normalize=False, size=(5, 7))
    assert raw.maps["last"].shape == (2, 2, 5, 7)


# ---------------------------------------------------------------- bad input

def test_bad_input_errors(resnet: nn.Module, images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="unknown layer 'layer5'.*layer4.*Available: .*conv1"):
        AttentionExtractor(resnet, "layer5")
    with pytest.raises(ValueError, match="mechanism"):
        AttentionExtractor(resnet, "last", mechanism="cam")
    with pytest.raises(ValueError, match="no default attention layers"):
        AttentionExtractor(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), "last")
    ext = AttentionExtractor(resnet, "last")
    with pytest.raises(ValueError, match="out of range: the model has 20 classes"):
        ext(images, classes=[[0, 20], [1, 2]])
    with pytest.raises(ValueError, match="out of range"):
        ext(images, classes=torch.tensor([-3, 1]))
    with pytest.raises(ValueError, match=r"shape \(B, C, H, W\)"):
        ext(images[0])
    with pytest.raises(ValueError, match="1 channels, the model expects 3"):
        ext(images[:, :1])
    with pytest.raises(TypeError, match="floating-point"):
        ext(images.to(torch.uint8))
    with pytest.raises(ValueError, match="classes given for 3 images"):
        ext(images, classes=[[0], [1], [2]])
    with pytest.raises(ValueError, match="not differentiable"):
        AttentionExtractor(resnet, "last", mechanism="layercam")(images, create_graph=True)
    assert _no_hooks(resnet)


# ---------------------------------------------------------------- adapter

def test_adapter_mechanisms(resnet: nn.Module, images: torch.Tensor) -> None:
    pytest.importorskip("pytorch_grad_cam")
    classes = [[3, 5], [7, 1]]
    # LayerCAM = ReLU(Σ_k ReLU(g) A) and HiResCAM = ReLU(Σ_k g A): check them against our own gradients
    ext = AttentionExtractor(resnet, "inner", closed_form=False)
    with ext._hooks():
        ext._capture = {}
        with torch.enable_grad():
            logits = resnet(images)
        acts = ext._capture["layer3"]
        ext._capture = None
    idx = torch.tensor(classes)
    grads = ext._vjp(logits, [acts], ["layer3"], idx, False)["layer3"]
    a = acts.detach().unsqueeze(1)
    expected = {"layercam": (grads.relu() * a).sum(2).relu(), "hirescam": (grads * a).sum(2).relu()}
    before = [p.grad for p in resnet.parameters()]
    for mechanism in ("layercam", "hirescam", "xgradcam", "eigencam"):
        r = attention_maps(resnet, images, classes=classes, layers="inner", mechanism=mechanism, normalize=False)
        assert r.maps["inner"].shape == (2, 2, 4, 4) and r.logits.shape == (2, NUM)
        assert torch.isfinite(r.maps["inner"]).all() and r.maps["inner"].min() >= 0
        if mechanism in expected:
            torch.testing.assert_close(r.maps["inner"], expected[mechanism], rtol=1e-4, atol=1e-7)
        assert _no_hooks(resnet) and all(p.grad is g for p, g in zip(resnet.parameters(), before))
    # pytorch-grad-cam sets eval mode and calls backward: both are undone
    model = copy.deepcopy(resnet).train()
    model.zero_grad(set_to_none=True)
    sentinel = torch.ones_like(model.fc.weight)
    model.fc.weight.grad = sentinel
    r = attention_maps(model, images, classes=[[0, -1], [1, 2]], layers="last", mechanism="layercam")
    assert r.maps["last"][0, 1].abs().max() == 0
    assert all(m.training for m in model.modules()) and _no_hooks(model)
    assert model.fc.weight.grad is sentinel and model.layer1[0].conv1.weight.grad is None


# ---------------------------------------------------------------- last vs inner layer (cues.layer)

class _TwoStage(nn.Module):
    """Hand-set: ``layer1`` = ReLU(1x1 conv U) of the input (the inner layer), ``layer2`` = ReLU(1x1 conv V)
    of it (the last layer), global average pooling, linear head W. No bias anywhere."""

    def __init__(self, u: torch.Tensor, v: torch.Tensor, w: torch.Tensor) -> None:
        super().__init__()
        self.layer1 = nn.Sequential(nn.Conv2d(u.shape[1], u.shape[0], 1, bias=False), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(v.shape[1], v.shape[0], 1, bias=False), nn.ReLU())
        self.fc = nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            self.layer1[0].weight.copy_(u[:, :, None, None])
            self.layer2[0].weight.copy_(v[:, :, None, None])
            self.fc.weight.copy_(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer2(self.layer1(x)).mean(dim=(2, 3)))


def _two_stage() -> tuple[_TwoStage, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    u, v, w = torch.randn(4, 3, generator=g), torch.randn(5, 4, generator=g), torch.randn(3, 5, generator=g)
    x = torch.randn(1, 3, 6, 6, generator=g, dtype=torch.float64)
    model = _TwoStage(u, v, w).double().eval()
    return model, u.double(), v.double(), w.double(), x


def test_last_layer_of_gap_linear_head_gradcam_is_cam_and_gradcampp_is_channel_rescaled() -> None:
    """docs/method.md §1 "Layers": at the last layer of a GAP + linear model g^c_kij = W[c,k]/Z everywhere, so Grad-CAM
    is CAM (divided by Z), and Grad-CAM++'s weights are the channel-weighted ones times the per-channel factor
    Z/(2 + S_k·W[c,k]/Z), S_k = Σ_ij A_kij: written out by hand here."""
    model, u, v, w, x = _two_stage()
    assert default_layers(model) == {"last": "layer2", "inner": "layer1"}
    a1 = torch.einsum("mi,bihw->bmhw", u, x).relu()
    a2 = torch.einsum("km,bmhw->bkhw", v, a1).relu()  # (1, 5, 6, 6), the last layer
    z = 36.0
    classes = [[0, 1, 2]]
    cam = torch.einsum("ck,bkhw->bchw", w, a2).relu() / z  # CAM (Zhou et al.), scaled by 1/Z
    got = {m: attention_maps(model, x, classes=classes, layers="last", mechanism=m, normalize=False).maps["last"]
           for m in MECHANISMS}
    torch.testing.assert_close(got["gradcam"], cam, rtol=1e-10, atol=1e-12)
    # channel: α = ReLU(W)/Z; Grad-CAM++ with g = W/Z constant: α = Σ_ij g/(2 + S_k g) for g > 0 = Z·g/(2 + S_k g)
    g = w / z
    s = a2.sum(dim=(2, 3))[0]  # S_k
    alpha_channel = g.relu()
    alpha_pp = torch.where(g > 0, z * g / (2 + s * g), torch.zeros_like(g))
    torch.testing.assert_close(got["channel"], torch.einsum("ck,bkhw->bchw", alpha_channel, a2).relu())
    torch.testing.assert_close(got["gradcampp"], torch.einsum("ck,bkhw->bchw", alpha_pp, a2).relu())


def test_inner_layer_gradients_vary_so_gradcampp_and_channel_differ() -> None:
    """At the inner layer the last layer's ReLU gates the gradient per position: g^c_mij = (1/Z) Σ_k W[c,k] V[k,m]
    [V·A1 > 0]_kij, computed by hand here; Grad-CAM++ and channel-weighted maps then differ (not a rescaling)."""
    model, u, v, w, x = _two_stage()
    a1 = torch.einsum("mi,bihw->bmhw", u, x).relu()[0]  # (4, 6, 6), the inner layer
    gate = (torch.einsum("km,mhw->khw", v, a1) > 0).double()  # (5, 6, 6)
    z = 36.0
    grads = torch.einsum("ck,km,khw->cmhw", w, v, gate) / z  # (3 classes, 4, 6, 6)
    assert not torch.allclose(grads, grads.mean(dim=(2, 3), keepdim=True))  # varies in space
    s = a1.sum(dim=(1, 2))  # S_m
    alpha_channel = grads.relu().mean(dim=(2, 3))
    ratio = torch.where(grads > 0, 1 / (2 + s[None, :, None, None] * grads), torch.zeros_like(grads))
    alpha_pp = (ratio * grads.relu()).sum(dim=(2, 3))
    alpha_gradcam = grads.mean(dim=(2, 3))
    expected = {m: torch.einsum("cm,mhw->chw", alpha, a1).relu()[None]
                for m, alpha in (("gradcam", alpha_gradcam), ("channel", alpha_channel), ("gradcampp", alpha_pp))}
    got = {m: attention_maps(model, x, classes=[[0, 1, 2]], layers="inner", mechanism=m, normalize=False).maps["inner"]
           for m in MECHANISMS}
    for m in MECHANISMS:
        torch.testing.assert_close(got[m], expected[m], rtol=1e-9, atol=1e-12)
    # the normalised maps really differ, beyond any per-map scale
    pp, ch = max_normalize(got["gradcampp"]), max_normalize(got["channel"])
    assert (pp - ch).abs().max() > 0.05


def test_adapter_skips_padding_columns_in_eval_mode(resnet: nn.Module, images: torch.Tensor) -> None:
    """Ragged classes: the second column's pass runs only the image that has a class there, and every map
    equals the one computed for that image alone."""
    pytest.importorskip("pytorch_grad_cam")
    seen: list[int] = []
    handle = resnet.conv1.register_forward_hook(lambda m, i, o: seen.append(int(o.shape[0])))
    try:
        r = attention_maps(resnet, images, classes=[[3, -1], [7, 5]], layers="inner", mechanism="layercam",
                           normalize=False)
    finally:
        handle.remove()
    assert seen == [2, 1]  # the first pass (logits and column 0) on both images, column 1 on image 1 only
    alone0 = attention_maps(resnet, images[:1], classes=[[3]], layers="inner", mechanism="layercam", normalize=False)
    alone1 = attention_maps(resnet, images[1:], classes=[[7, 5]], layers="inner", mechanism="layercam",
                            normalize=False)
    torch.testing.assert_close(r.maps["inner"][0, :1], alone0.maps["inner"][0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(r.maps["inner"][1], alone1.maps["inner"][0], rtol=1e-5, atol=1e-7)
    assert r.maps["inner"][0, 1].abs().max() == 0


def test_adapter_draws_no_progress_bars_of_its_own(resnet: nn.Module, images: torch.Tensor, capsys) -> None:
    """ScoreCAM's per-image tqdm bar (pytorch-grad-cam draws it unconditionally) is silenced, and restored after."""
    pgc = pytest.importorskip("pytorch_grad_cam")
    import pytorch_grad_cam.score_cam as score_cam

    small = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    before = score_cam.tqdm
    r = attention_maps(small, images, classes=[[0], [2]], layers="1", mechanism="scorecam", normalize=False)
    assert r.maps["1"].shape == (2, 1, 64, 64) and score_cam.tqdm is before and pgc is not None
    err = capsys.readouterr().err
    assert "it/s" not in err and "%|" not in err


@pytest.mark.parametrize("mechanism", ["gradcam", "gradcampp", "channel"])
def test_weight_grad_false_keeps_the_maps_and_drops_the_second_order_path(mechanism):
    # Same maps; with weight_grad=False the inner map depends on layer4 and the head only through
    # α, which is then a constant: no gradient reaches them, while layer1 (through A) still gets one.
    from sharpen_attention.classifiers import build_classifier

    torch.manual_seed(0)
    model = build_classifier("resnet18", 5).eval()
    x = torch.randn(2, 3, 64, 64)
    with AttentionExtractor(model, layers=("last", "inner"), mechanism=mechanism) as extract:
        full = extract(x, classes=[[1, 2], [0, 3]], create_graph=True, normalize=False)
        cheap = extract(x, classes=[[1, 2], [0, 3]], create_graph=True, normalize=False, weight_grad=False)
    for key in ("last", "inner"):
        torch.testing.assert_close(cheap.maps[key], full.maps[key], rtol=1e-5, atol=1e-6)
    params = [model.layer4[1].conv2.weight, model.fc.weight, model.layer1[0].conv1.weight]
    g_full = torch.autograd.grad(full.maps["inner"].sum(), params, allow_unused=True)
    g_cheap = torch.autograd.grad(cheap.maps["inner"].sum(), params, allow_unused=True)
    assert all(g is not None and g.abs().sum() > 0 for g in g_full)
    assert g_cheap[0] is None and g_cheap[1] is None and g_cheap[2].abs().sum() > 0
