import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from hetcv.models import back_model
from hetcv.train import (
    BN_RECALIBRATION_IMAGES,
    FEATURE_COLUMNS,
    Adam,
    InputPipeline,
    batch_norm_sample,
    fit_fold,
    held_out_table,
    learning_rate,
    training_batches,
)


def bright_half_images(n=96, seed=0):
    """Class 1: bright top half; class 0: bright bottom half; plus noise."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) // 4) % 2  # the held-out rows (every 4th) hold both classes
    images = rng.integers(0, 60, size=(n, 32, 32)).astype(np.uint8)
    images[labels == 1, :16] += 180
    images[labels == 0, 16:] += 180
    return images, labels


def fit(images, targets, task, n_outputs, seed=0, epochs=3):
    index = np.arange(len(images))
    return fit_fold(
        images,
        targets,
        index[index % 4 != 0],
        index[index % 4 == 0],
        task=task,
        n_outputs=n_outputs,
        arch="resnet18",
        pretrained="none",
        epochs=epochs,
        batch_size=16,
        lr=1e-3,
        seed=seed,
        device=torch.device("cpu"),
    )


def test_training_learns_an_easy_task_and_records_each_epoch():
    torch.set_num_threads(2)
    images, labels = bright_half_images()
    result = fit(images, labels, "classification", 2)
    assert list(result.history["epoch"]) == [1, 2, 3]
    assert result.history["heldout_accuracy"].iloc[-1] >= 0.9
    assert result.outputs.shape == (24, 2) and result.features.shape == (24, 512)
    assert (result.outputs.argmax(1) == labels[::4]).mean() >= 0.9


def fit_regression(arch="resnet18", pretrained="none", seed=0, epochs=4, lr=1e-3):
    """Targets 50 (bright bottom) and 150 (bright top); 48 training images, 12 steps."""
    images, labels = bright_half_images(n=64)
    targets = (labels * 100 + 50).astype(np.float32)
    index = np.arange(len(images))
    result = fit_fold(
        images,
        targets,
        index[index % 4 != 0],
        index[index % 4 == 0],
        task="regression",
        n_outputs=1,
        arch=arch,
        pretrained=pretrained,
        epochs=epochs,
        batch_size=16,
        lr=lr,
        seed=seed,
        device=torch.device("cpu"),
    )
    return result, targets[::4], images[index % 4 != 0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_regression_outputs_are_in_target_units(seed):
    result, held_out_targets, _ = fit_regression(seed=seed)
    prediction = result.outputs[:, 0]
    assert result.outputs.shape == (16, 1)
    # Predicting the training mean (100) everywhere gives an RMSE of exactly 50: a model that
    # learned the task must beat it, and must put each class on its own side of the midpoint.
    assert np.sqrt(np.mean((prediction - held_out_targets) ** 2)) < 50
    assert (
        prediction[held_out_targets == 50].mean() < 100 < prediction[held_out_targets == 150].mean()
    )
    assert "heldout_rmse" in result.history


def batch_norm_inputs(model, images):
    """Each BatchNorm layer's input over ``images``, captured in an eval-mode pass."""
    captured = {}
    hooks = [
        module.register_forward_hook(
            lambda m, args, out, name=name: captured.update({name: args[0]})
        )
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.BatchNorm2d)
    ]
    pipeline = InputPipeline(images, torch.device("cpu"))
    model.eval()
    with torch.no_grad():
        model(pipeline.batch(torch.arange(len(images))))
    for hook in hooks:
        hook.remove()
    return captured


def assert_batch_norm_matches_the_training_images(model, train_images):
    inputs = batch_norm_inputs(model, train_images)
    assert len(inputs) == 20  # every BatchNorm2d of ResNet18
    modules = dict(model.named_modules())
    for name, values in inputs.items():
        mean = values.mean(dim=(0, 2, 3))
        sd = values.var(dim=(0, 2, 3)).sqrt()
        norm = modules[name]
        # The held-out pass must see the statistics of the images the model was trained on.
        # Per layer, the median channel is off by at most 0.03 sd after recalibration (the
        # stored variance is unbiased where the recalibrating pass normalised with the biased
        # one, and deep 1×1 layers see only 48 values); stale statistics after 12 steps are
        # off by 0.1–2 sd in every layer but the first.
        mean_shift = ((norm.running_mean - mean).abs() / sd).median()
        sd_ratio = (norm.running_var.sqrt() / sd - 1).abs().median()
        assert mean_shift < 0.1 and sd_ratio < 0.1, (name, float(mean_shift), float(sd_ratio))


def test_batch_norm_statistics_are_those_of_the_training_images():
    # Momentum-averaged statistics after 12 steps would still be ~30 % of the way from their
    # initial values (0 and 1) to the data's: eval mode would run another network.
    result, _, train_images = fit_regression()
    assert_batch_norm_matches_the_training_images(result.model, train_images)


def test_batch_norm_statistics_of_pretrained_weights_are_replaced(tmp_path):
    # Pretrained weights (ImageNet or a checkpoint) bring another data set's statistics.
    torch.manual_seed(4)
    donor = back_model("resnet18")
    for module in donor.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.fill_(3.0)
            module.running_var.fill_(9.0)
    checkpoint = tmp_path / "pretrained.pt"
    torch.save(donor.state_dict(), checkpoint)
    result, held_out_targets, train_images = fit_regression(pretrained=str(checkpoint))
    assert_batch_norm_matches_the_training_images(result.model, train_images)
    prediction = result.outputs[:, 0]
    assert np.sqrt(np.mean((prediction - held_out_targets) ** 2)) < 50


def test_vgg16_regression_head_learns_the_task():
    # VGG16 has no BatchNorm; its head has dropout, which the held-out pass must switch off.
    # Without BatchNorm it needs the smaller learning rate of config/paper.yaml to train.
    result, held_out_targets, _ = fit_regression(arch="vgg16", epochs=6, lr=1e-4)
    prediction = result.outputs[:, 0]
    assert np.sqrt(np.mean((prediction - held_out_targets) ** 2)) < 50
    assert (
        prediction[held_out_targets == 50].mean() < 100 < prediction[held_out_targets == 150].mean()
    )


def test_batch_norm_sample_is_all_rows_or_a_seeded_subset():
    rows = torch.arange(5000)
    assert torch.equal(batch_norm_sample(rows[:100], 0), rows[:100])
    subset = batch_norm_sample(rows, 0)
    assert len(subset) == BN_RECALIBRATION_IMAGES == len(set(subset.tolist()))
    assert torch.equal(subset, batch_norm_sample(rows, 0))
    assert not torch.equal(subset, batch_norm_sample(rows, 1))


def test_same_seed_gives_identical_features_on_cpu():
    images, labels = bright_half_images(n=32)
    first = fit(images, labels, "classification", 2, seed=5, epochs=1)
    again = fit(images, labels, "classification", 2, seed=5, epochs=1)
    other = fit(images, labels, "classification", 2, seed=6, epochs=1)
    assert np.array_equal(first.features, again.features)
    assert not np.array_equal(first.features, other.features)


def test_a_last_batch_of_one_joins_the_previous_batch():
    batches = training_batches(33, 16, torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == [16, 17]
    assert sorted(torch.cat(batches).tolist()) == list(range(33))


@pytest.mark.parametrize(
    ("task", "classes", "outputs", "expected"),
    [
        (
            "classification",
            np.array([0, 1]),
            np.array([[0.0, np.log(3)], [np.log(3), 0.0]]),
            {
                "prediction": [0.75, 0.25],
                "predicted_label": [1, 0],
                "correct": [True, True],
                "probability_0": [0.25, 0.75],
                "probability_1": [0.75, 0.25],
            },
        ),
        (
            "regression",
            np.array([]),
            np.array([[2.5], [0.0]]),
            {"prediction": [2.5, 0.0], "sq_error": [1.5**2, 0.0]},
        ),
    ],
)
def test_held_out_table_schema_and_values(task, classes, outputs, expected):
    manifest = pd.DataFrame({"sample_id": ["a", "b", "c"], "target": [0, 1, 0]})
    features = np.arange(2 * 512, dtype=np.float32).reshape(2, 512)
    table = held_out_table(manifest, np.array([1, 2]), 300, 3, task, classes, outputs, features)
    assert list(table.columns[:4]) == ["sample_id", "n", "fold", "target"]
    assert list(table.columns[-512:]) == FEATURE_COLUMNS
    assert list(table["sample_id"]) == ["b", "c"] and set(table["fold"]) == {3}
    assert set(table["n"]) == {300}
    for column, values in expected.items():
        assert np.allclose(table[column].astype(float), values), column
    assert table["f511"].dtype == np.float32 and table["f511"].iloc[1] == 1023


def test_a_run_resumed_from_its_checkpoint_ends_like_an_uninterrupted_one(tmp_path):
    images, labels = bright_half_images(n=24)
    index = np.arange(24)
    settings = dict(
        task="classification",
        n_outputs=2,
        arch="vgg16",
        pretrained="none",
        batch_size=8,
        lr=1e-3,
        seed=3,
        device=torch.device("cpu"),
    )
    train, test = index[index % 4 != 0], index[index % 4 == 0]
    straight = fit_fold(images, labels, train, test, epochs=2, **settings)
    checkpoint = tmp_path / "checkpoint.pt"
    # A job killed after its first epoch left this checkpoint behind (same settings tag).
    fit_fold(
        images,
        labels,
        train,
        test,
        epochs=1,
        checkpoint=checkpoint,
        checkpoint_tag="same",
        checkpoint_every_s=0,
        **settings,
    )
    resumed = fit_fold(
        images,
        labels,
        train,
        test,
        epochs=2,
        checkpoint=checkpoint,
        checkpoint_tag="same",
        **settings,
    )
    assert list(resumed.history["epoch"]) == [1, 2]
    assert np.array_equal(resumed.features, straight.features)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    stale = fit_fold(
        images,
        labels,
        train,
        test,
        epochs=1,
        checkpoint=checkpoint,
        checkpoint_tag="other settings",
        **settings,
    )
    assert list(stale.history["epoch"]) == [1]


def test_checkpoints_wait_for_their_interval(tmp_path):
    images, labels = bright_half_images(n=24)
    index = np.arange(24)
    settings = dict(task="classification", n_outputs=2, arch="resnet18", pretrained="none")
    settings.update(epochs=2, batch_size=8, lr=1e-3, seed=0, device=torch.device("cpu"))
    train, test = index[index % 4 != 0], index[index % 4 == 0]
    hourly, every_epoch = tmp_path / "hourly.pt", tmp_path / "every_epoch.pt"
    fit_fold(images, labels, train, test, checkpoint=hourly, checkpoint_every_s=3600, **settings)
    fit_fold(images, labels, train, test, checkpoint=every_epoch, checkpoint_every_s=0, **settings)
    assert not hourly.exists()
    assert torch.load(every_epoch, weights_only=False)["epoch"] == 2


def test_onecycle_rises_to_its_peak_over_a_quarter_of_the_steps_then_falls_to_zero():
    rates = np.array([learning_rate(step, 100, 0.01, "onecycle") for step in range(101)])
    assert rates[0] == pytest.approx(0.0004)  # PyTorch OneCycleLR's start: peak / 25
    assert rates[25] == pytest.approx(0.01) and rates.max() == pytest.approx(0.01)
    assert rates[25 + 75 // 2] == pytest.approx(0.005, rel=0.05)  # half way down the cosine
    assert rates[100] == pytest.approx(0.0, abs=1e-12)
    assert (np.diff(rates[:26]) > 0).all() and (np.diff(rates[25:]) < 0).all()
    assert {learning_rate(step, 100, 0.01, "constant") for step in range(100)} == {0.01}


def test_adam_takes_the_steps_of_torch_optim_adam():
    torch.manual_seed(0)
    ours, reference = nn.Linear(6, 3), nn.Linear(6, 3)
    reference.load_state_dict(ours.state_dict())
    ours.bias.requires_grad_(False)  # a parameter without a gradient is left alone
    reference.bias.requires_grad_(False)
    adam = Adam(list(ours.parameters()), lr=0.01)
    torch_adam = torch.optim.Adam([reference.weight], lr=0.01)
    inputs = torch.randn(20, 6)
    for step in range(6):
        for model, optimiser in ((ours, adam), (reference, torch_adam)):
            optimiser.zero_grad()
            (model(inputs) ** 2).mean().backward()
            if optimiser is adam:
                adam.lr = 0.01 * (1 + step)  # a schedule sets the rate between steps
            else:
                torch_adam.param_groups[0]["lr"] = 0.01 * (1 + step)
            optimiser.step()
    assert torch.allclose(ours.weight, reference.weight, rtol=1e-6, atol=1e-7)
    assert torch.equal(ours.bias, reference.bias)
    restored = Adam(list(ours.parameters()), lr=0.01)
    restored.load_state_dict(adam.state_dict())
    assert restored.steps == 6 and torch.equal(restored.exp_avg_sq[0], adam.exp_avg_sq[0])
