"""The depth from the head's edge: the same map whatever the modality's contrast, and networks that use it."""

import dataclasses

import pytest
import torch

from duiit.head_depth import head_depth, outside_head
from duiit.networks import PRESETS, NetworkConfig, PatchDiscriminator

from conftest import TINY, run_cli
from test_structure import head_like_slice, render

AIR, SCALP, SKULL, BRAIN = 0, 1, 2, 3
T1_LIKE = [-1.0, 0.8, -0.9, 0.0, -0.4]   # air, scalp, skull, brain, lesion in network units
CT_LIKE = [-1.0, -0.5, 0.9, -0.45, -0.35]


def test_a_dark_skull_inside_a_closed_scalp_is_inside_the_head():
    tissue = head_like_slice()
    outside = outside_head(render(tissue, T1_LIKE))[0, 0]
    assert torch.equal(outside, tissue == AIR)


def test_depth_counts_rings_from_the_edge_the_same_for_mr_and_ct_contrast():
    tissue = head_like_slice()
    t1_depth = head_depth(render(tissue, T1_LIKE), 6)[0, 0]
    ct_depth = head_depth(render(tissue, CT_LIKE), 6)[0, 0]
    assert torch.equal(t1_depth, ct_depth)
    assert (t1_depth[tissue == AIR] == 0).all()
    centre = tissue.shape[0] // 2
    profile = t1_depth[centre, :centre + 1]           # from the left border to the centre
    first = int((tissue[centre] != AIR).nonzero()[0])  # the outermost head pixel on that row
    expected = torch.clamp(torch.arange(centre + 1) - first + 1, 0, 6) / 6
    assert torch.allclose(profile, expected.float()), profile
    assert torch.equal(t1_depth, head_depth(render(tissue, T1_LIKE), 6)[0, 0])  # no state between calls


def test_an_open_scalp_lets_the_outside_into_a_dark_skull():
    tissue = head_like_slice()
    tissue[:, :tissue.shape[1] // 2 - 15][tissue[:, :tissue.shape[1] // 2 - 15] == SCALP] = AIR  # cut the scalp
    outside = outside_head(render(tissue, T1_LIKE))[0, 0]
    assert outside[tissue == SKULL].any() and not outside[tissue == BRAIN].any()


def test_a_discriminator_with_the_depth_channel_takes_one_image():
    tiny = NetworkConfig(image_size=32, discriminator_width=4, discriminator_layers=2)
    for config in (tiny, PRESETS["small"], PRESETS["reference"]):
        depth_config = dataclasses.replace(config, discriminator_head_depth=5)
        discriminator = PatchDiscriminator(depth_config)
        assert discriminator.model[0].in_channels == 2
        images = torch.rand(2, 1, config.image_size, config.image_size) * 2 - 1
        assert discriminator(images).shape == PatchDiscriminator(config)(images).shape, config


def test_a_discriminator_judges_with_the_depth_map_it_is_given():
    """A scalp drawn as air: by its own outline the skull is the head's edge; by the MR's it lies under air."""
    tissue = head_like_slice()
    mr = render(tissue, T1_LIKE)
    scalp_as_air = tissue.clone()
    scalp_as_air[tissue == SCALP] = AIR
    fake_ct = render(scalp_as_air, CT_LIKE)
    own, from_mr = head_depth(fake_ct, 5), head_depth(mr, 5)
    assert (own[0, 0][tissue == SCALP] == 0).all() and (from_mr[0, 0][tissue == SCALP] > 0).all()
    discriminator = PatchDiscriminator(NetworkConfig(image_size=48, discriminator_width=4, discriminator_layers=2,
                                                     discriminator_head_depth=5))
    assert torch.equal(discriminator(fake_ct), discriminator(fake_ct, own))
    assert not torch.equal(discriminator(fake_ct), discriminator(fake_ct, from_mr))


def test_training_with_and_without_the_depth_channel(mr_cohort, tmp_path):
    """--head-depth reaches the discriminators (the checkpoint holds them); the bundle translates as before."""
    import SimpleITK as sitk

    from duiit.bundle import load_bundle
    from duiit.checkpoint import load_checkpoint
    from duiit.translate import translate_volume
    source = sitk.ReadImage(str(mr_cohort.parent / "mr_00.nii.gz"))
    for rings, channels, extra in (("4", 2, ["--depth-from-input", "--lambda-identity", "0"]), ("0", 1, [])):
        out = tmp_path / f"model{rings}.duiit"
        result = run_cli("train", "--manifest", mr_cohort, "--source", "MR", "--task", "classification",
                         "--method", "cyclegan", "-o", out, "--iterations", "3", "--checkpoint-every", "3",
                         "--head-depth", rings, *extra, *TINY)
        assert result.returncode == 0, result.stderr
        bundle = load_bundle(out)
        assert bundle.network.discriminator_head_depth == int(rings)
        training = bundle.header["training"]
        assert (training["depth_from_input"], training["lambda_identity"]) == ((True, 0) if extra else (False, 0.5))
        state = load_checkpoint(out.with_name(out.name + ".ckpt"), {})
        assert state["modules"]["discriminators"]["target.model.0.weight"].shape[1] == channels
        ct = translate_volume(bundle, source, device="cpu").ct
        assert ct.GetSize() == source.GetSize() and ct.GetOrigin() == source.GetOrigin()
        hu = sitk.GetArrayFromImage(ct)
        assert -1024 <= hu.min() and hu.max() <= 3071 and hu.std() > 1


@pytest.mark.parametrize("arguments, message", [(["--head-depth", "-1"], "--head-depth -1"),
                                                (["--depth-from-input"], "needs --head-depth"),
                                                (["--lambda-identity", "-1"], "--lambda-identity -1")])
def test_a_depth_or_identity_weight_out_of_range_is_refused(mr_cohort, tmp_path, arguments, message):
    result = run_cli("train", "--manifest", mr_cohort, "--source", "MR", "--task", "classification",
                     "-o", tmp_path / "model.duiit", *arguments, *TINY)
    assert result.returncode != 0 and message in result.stderr
    assert not (tmp_path / "model.duiit").exists()
