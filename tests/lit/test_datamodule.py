"""SN7DataModule (sn7.lit.datamodule): prepare -> AOI split -> crop datasets -> loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sn7.data.transforms import Augment
from sn7.errors import ConfigError
from sn7.lit.datamodule import SN7DataModule
from sn7.testing.synthetic import make_sn7_root


def datamodule(cfg) -> SN7DataModule:
    dm = SN7DataModule(cfg.data, cfg.split, cfg.subset, cfg.augment, cfg.seed)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def four_aois(tmp_path_factory):
    """4 AOIs x 2 months of 64 x 96 px; read-only."""
    return make_sn7_root(
        tmp_path_factory.mktemp("four_aois"), aois=4, months=2, size=(64, 96), n_buildings=4
    )


def aois_of(dataset) -> set[str]:
    return set(dataset.rows["aoi"])


def images_of(dataset) -> set[tuple[str, str]]:
    return set(zip(dataset.rows["aoi"], dataset.rows["date"], strict=True))


def report_aois(dm) -> set[str]:
    from sn7.data.prepared import load_prepared

    split = load_prepared(dm.cfg.data.work_dir).split
    return set(split.loc[split["split"] == "test", "aoi"])


def test_training_never_sees_the_report_aoi(synthetic_root, train_cfg, tmp_path):
    dm = datamodule(train_cfg(synthetic_root.root, tmp_path))
    test = report_aois(dm)
    assert test and not test & (aois_of(dm.train_set) | aois_of(dm.val_set))
    assert not images_of(dm.train_set) & images_of(dm.val_set)
    # every month of a report AOI is held out (a split by image would leak near-duplicates)
    n_seen = sum(t.aoi not in test for t in synthetic_root.tiles.values())
    assert len(dm.val_set.rows) + len(dm.train_set.rows) == n_seen


@pytest.mark.parametrize(
    "overrides",
    [
        ["split.test_fraction=0.5"],
        ["split.folds=2", "split.fold=0"],
        ["split.folds=2", "split.fold=1"],
        ["split.folds=4", "split.fold=3"],
    ],
)
def test_every_split_method_keeps_the_roles_apart(four_aois, train_cfg, tmp_path, overrides):
    cfg = train_cfg(four_aois.root, tmp_path, "data.crop_size=32", *overrides)
    dm = datamodule(cfg)
    test = report_aois(dm)
    train, val = aois_of(dm.train_set), aois_of(dm.val_set)
    assert train and val and test and not (train | val) & test
    assert not images_of(dm.train_set) & images_of(dm.val_set)
    assert train | val | test == set(four_aois.aois)


def test_explicit_val_and_test_aois(four_aois, train_cfg, tmp_path):
    val, test = four_aois.aois[2], four_aois.aois[0]
    cfg = train_cfg(
        four_aois.root,
        tmp_path,
        "data.crop_size=32",
        f"split.val_aois=[{val}]",
        f"split.test_aois=[{test}]",
    )
    dm = datamodule(cfg)
    assert aois_of(dm.val_set) == {val}
    assert aois_of(dm.train_set) == set(four_aois.aois) - {val, test}


def test_crop_larger_than_a_tile_is_a_config_error(synthetic_root, train_cfg, tmp_path):
    cfg = train_cfg(synthetic_root.root, tmp_path, "data.crop_size=128")  # tiles are 96 x 128
    with pytest.raises(ConfigError, match=r"crop_size=128.*96 px"):
        datamodule(cfg)
    datamodule(train_cfg(synthetic_root.root, tmp_path, "data.crop_size=96"))  # exactly fits


def test_one_aoi_trains_and_selects_on_its_last_month(tmp_path, train_cfg):
    root = make_sn7_root(tmp_path / "root", aois=1, months=3)
    dm = datamodule(train_cfg(root.root, tmp_path / "run"))
    last = max(t.month for t in root.tiles.values()).replace("_", "-")  # manifest date
    assert set(dm.val_set.rows["date"]) == {last}
    assert last not in set(dm.train_set.rows["date"])
    assert not report_aois(dm)  # nothing to report on: evaluate another root


@pytest.mark.parametrize("case", ["one_aoi_one_month", "one_month", "every_aoi_in_val"])
def test_empty_val_or_train_split_is_a_config_error(tmp_path, train_cfg, case):
    months = 2 if case == "every_aoi_in_val" else 1
    n_aois = 1 if case == "one_aoi_one_month" else 3
    root = make_sn7_root(tmp_path / "root", aois=n_aois, months=months)
    overrides = {
        "one_aoi_one_month": [],
        "one_month": ["split.val_fraction=0.0"],  # no selection AOI and no month to spare
        "every_aoi_in_val": [  # nothing left to train on
            f"split.test_aois=[{root.aois[0]}]",
            f"split.val_aois=[{','.join(root.aois[1:])}]",
        ],
    }[case]
    cfg = train_cfg(root.root, tmp_path / "run", *overrides)
    with pytest.raises(ConfigError, match="at least 2 AOIs"):
        datamodule(cfg)


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_pos_fraction_out_of_range_is_a_config_error(synthetic_root, train_cfg, tmp_path, value):
    cfg = train_cfg(synthetic_root.root, tmp_path, f"data.pos_fraction={value}")
    with pytest.raises(ConfigError, match="pos_fraction"):
        datamodule(cfg)


def test_bands_without_matching_normalisation_is_a_config_error(
    synthetic_root, train_cfg, tmp_path
):
    cfg = train_cfg(synthetic_root.root, tmp_path, "data.bands=[1,2,3]")  # mean/std keep 4
    with pytest.raises(ConfigError, match="one value per band"):
        SN7DataModule(cfg.data, cfg.split, cfg.subset, cfg.augment, cfg.seed)


def test_loaders_yield_batches_of_the_configured_shape(synthetic_root, train_cfg, tmp_path):
    cfg = train_cfg(
        synthetic_root.root,
        tmp_path,
        "data.samples_per_epoch=10",
        "data.batch_size=4",
        "data.val_batch_size=3",
    )
    dm = datamodule(cfg)
    assert dm.spec.in_channels == 4 and dm.spec.crop_size == 64
    train = list(dm.train_dataloader())
    assert len(train) == 2  # 10 crops in batches of 4, the ragged last one dropped
    batch = train[0]
    assert batch["image"].shape == (4, 4, 64, 64) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (4, 64, 64) and batch["mask"].dtype == torch.uint8
    val = list(dm.val_dataloader())
    assert sum(len(b["mask"]) for b in val) == len(dm.val_set)  # nothing dropped in val
    assert len(val[0]["mask"]) == 3


def test_augment_choice_reaches_the_train_set_only(synthetic_root, train_cfg, tmp_path):
    """The augment choice changes train crops only: val crops are the same under augment=strong
    as under augment=none, and are the tile's pixels as read."""
    strong = datamodule(train_cfg(synthetic_root.root, tmp_path / "a", "augment=strong"))
    plain = datamodule(train_cfg(synthetic_root.root, tmp_path / "b", "augment=none"))
    assert strong.train_set.augment is not None and plain.train_set.augment is None
    assert len(strong.val_set) == len(plain.val_set) > 0
    for i in range(len(plain.val_set)):
        a, b = strong.val_set[i], plain.val_set[i]
        torch.testing.assert_close(a["image"], b["image"], rtol=0, atol=0)
        torch.testing.assert_close(a["mask"], b["mask"], rtol=0, atol=0)
        image, mask = plain.val_set.read_crop(*plain.val_set.index[i])
        np.testing.assert_array_equal(b["mask"].numpy(), mask)
        np.testing.assert_array_equal(b["image"].numpy(), plain.spec.normalize(image))


def test_three_band_input_feeds_three_channels(synthetic_root, train_cfg, tmp_path):
    cfg = train_cfg(
        synthetic_root.root,
        tmp_path,
        "data.bands=[1,2,3]",
        "data.mean=[0.3,0.3,0.3]",
        "data.std=[0.2,0.2,0.2]",
    )
    dm = datamodule(cfg)
    assert dm.spec.alpha_channel is None and cfg.model.in_ch == 3
    assert dm.train_set[0]["image"].shape == (3, 64, 64)
    assert dm.val_set[0]["image"].shape == (3, 64, 64)


def test_workers_start_after_opencv_ran_in_the_parent(
    synthetic_root, train_cfg, tmp_path, augment_cfg
):
    """A forked DataLoader worker must not hang when this process already used OpenCV's thread
    pool (an earlier num_workers=0 run, a notebook previewing augmentations, a sweep)."""
    cfg = train_cfg(
        synthetic_root.root, tmp_path, "data.num_workers=1", "data.persistent_workers=false"
    )
    dm = datamodule(cfg)
    big = np.zeros((4, 1024, 1024), np.uint8)
    Augment(augment_cfg(affine_p=1.0), 3, 4)(
        big, big[0]
    )  # a parallel cv2.warpAffine in this process
    dm.train_set[0]  # and an open raster handle, which the worker must not share
    loader = dm.train_dataloader()
    assert loader.num_workers == 1
    loader.timeout = 30  # a hung worker fails the test instead of blocking the suite
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 4, 64, 64)
    assert torch.isfinite(batch["image"]).all()

    # and each worker runs torch and OpenCV on one thread (the training step keeps the cores)
    probe = dm._loader(ThreadCounts(), 1, train=False)
    probe.timeout = 30
    assert next(iter(probe)).tolist() == [[1, 1]]


class ThreadCounts(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> torch.Tensor:
        import cv2

        return torch.tensor([torch.get_num_threads(), cv2.getNumThreads()])
