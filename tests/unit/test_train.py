import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torchvision import models

from hetcv import held_out, train
from hetcv.columns import FEATURE_COLUMNS, feature_names
from hetcv.device import InputPipeline, batch_count, images_fit_on_device, training_batches
from hetcv.held_out import BN_RECALIBRATION_IMAGES, batch_norm_sample, evaluate, held_out_table
from hetcv.models import IMAGENET_MEAN, IMAGENET_STD, build_model
from hetcv.optimisation import (
    EarlyStopping,
    balanced_class_weights,
    make_optimizer,
    make_schedule,
    split_for_early_stopping,
)
from hetcv.train import fit_fold


def bright_half_images(n=96, seed=0):
    """Class 1: bright top half; class 0: bright bottom half; plus noise."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) // 4) % 2  # the held-out rows (every 4th) hold both classes
    images = rng.integers(0, 60, size=(n, 32, 32)).astype(np.uint8)
    images[labels == 1, :16] += 180
    images[labels == 0, 16:] += 180
    return images, labels


def fit(images, targets, task, n_outputs, seed=0, epochs=3, **options):
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
        **options,
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
    donor = models.resnet18(weights=None)
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


AUGMENT = {"flip": "horizontal", "rotation": 10, "crop": 0.9, "brightness": 0.1, "contrast": 0.1}


@pytest.mark.parametrize(
    "options",
    [{}, {"augment": AUGMENT, "weight_decay": 0.01, "schedule": "onecycle"}],
    ids=["paper", "augmented"],
)
def test_same_seed_gives_identical_features_on_cpu(options):
    images, labels = bright_half_images(n=32)
    first = fit(images, labels, "classification", 2, seed=5, epochs=1, **options)
    again = fit(images, labels, "classification", 2, seed=5, epochs=1, **options)
    other = fit(images, labels, "classification", 2, seed=6, epochs=1, **options)
    assert np.array_equal(first.features, again.features)
    assert not np.array_equal(first.features, other.features)


def test_a_last_batch_of_one_joins_the_previous_batch():
    batches = training_batches(33, 16, torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == [16, 17]
    assert sorted(torch.cat(batches).tolist()) == list(range(33))
    for n in range(1, 70):
        count = len(training_batches(n, 16, torch.Generator().manual_seed(n)))
        assert batch_count(n, 16) == count, n


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


def test_held_out_table_has_as_many_feature_columns_as_the_architecture():
    manifest = pd.DataFrame({"sample_id": ["a", "b"], "target": [0, 1]})
    features = np.ones((2, 1024), dtype=np.float32)  # DenseNet121
    outputs = np.zeros((2, 2))
    table = held_out_table(
        manifest, np.array([0, 1]), 2, 0, "classification", np.array([0, 1]), outputs, features
    )
    assert list(table.columns[-1024:]) == feature_names(1024)
    assert table.columns[-1] == "f1023" and "f1024" not in table


class Killed(Exception):
    """A job killed right after it saved a checkpoint."""


@pytest.mark.parametrize(
    "options",
    [
        {"arch": "vgg16"},
        {
            "arch": "resnet18",
            "augment": AUGMENT,
            "schedule": "onecycle",
            "weight_decay": 0.05,
            "class_weights": "balanced",
            "early_stopping": {"patience": 5, "validation_fraction": 0.25},
        },
    ],
    ids=["vgg16", "everything-on"],
)
def test_a_run_resumed_from_its_checkpoint_ends_like_an_uninterrupted_one(
    tmp_path, monkeypatch, options
):
    images, labels = bright_half_images(n=24)
    index = np.arange(24)
    settings = dict(
        task="classification",
        n_outputs=2,
        pretrained="none",
        epochs=3,
        batch_size=8,
        lr=1e-3,
        seed=3,
        device=torch.device("cpu"),
        **options,
    )
    train_rows, test_rows = index[index % 4 != 0], index[index % 4 == 0]
    straight = fit_fold(images, labels, train_rows, test_rows, **settings)
    checkpoint = tmp_path / "checkpoint.pt"
    save = train.save_checkpoint

    def save_then_die(path, tag, epoch, *args):
        save(path, tag, epoch, *args)
        if epoch == 2:
            raise Killed

    monkeypatch.setattr(train, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        fit_fold(
            images,
            labels,
            train_rows,
            test_rows,
            checkpoint=checkpoint,
            checkpoint_tag="same",
            checkpoint_every_s=0,
            **settings,
        )
    monkeypatch.undo()
    resumed = fit_fold(
        images,
        labels,
        train_rows,
        test_rows,
        checkpoint=checkpoint,
        checkpoint_tag="same",
        **settings,
    )
    assert list(resumed.history["epoch"]) == [1, 2, 3]
    pd.testing.assert_frame_equal(
        resumed.history.drop(columns="seconds"), straight.history.drop(columns="seconds")
    )
    assert np.array_equal(resumed.features, straight.features)
    assert np.array_equal(resumed.outputs, straight.outputs)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    stale = fit_fold(
        images,
        labels,
        train_rows,
        test_rows,
        checkpoint=checkpoint,
        checkpoint_tag="other settings",
        **{**settings, "epochs": 1},
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


def schedule_rates(schedule, total=100, peak=0.01):
    """The rate of each of ``total`` steps under hetcv's schedule (torch.optim.lr_scheduler)."""
    optimizer = make_optimizer([nn.Parameter(torch.zeros(1))], peak, 0.0, torch.device("cpu"))
    scheduler = make_schedule(optimizer, schedule, total)
    rates = []
    for _ in range(total):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return np.array(rates)


def test_onecycle_rises_to_its_peak_over_a_quarter_of_the_steps_then_falls_to_zero():
    rates = schedule_rates("onecycle", total=100)
    assert rates[0] == pytest.approx(0.0004)  # as PyTorch's OneCycleLR's start: peak / 25
    assert rates[25] == pytest.approx(0.01) and rates.max() == pytest.approx(0.01)
    assert rates[25 + 75 // 2] == pytest.approx(0.005, rel=0.05)  # half way down the cosine
    assert 0 < rates[99] < 1e-5  # the last step's: nearly 0
    assert (np.diff(rates[:26]) > 0).all() and (np.diff(rates[25:]) < 0).all()
    assert set(schedule_rates("constant")) == {0.01}


@pytest.mark.parametrize("total", range(1, 9))
def test_onecycle_works_for_the_shortest_runs(total):
    rates = schedule_rates("onecycle", total=total)
    assert len(rates) == total and rates[0] == pytest.approx(0.0004)
    assert np.isfinite(rates).all() and (rates >= 0).all() and rates.max() <= 0.01 + 1e-12


def test_the_optimiser_is_torch_optims_adam_or_adamw_with_weight_decay():
    parameters = [nn.Parameter(torch.zeros(3))]
    adam = make_optimizer(parameters, 0.01, 0.0, torch.device("cpu"))
    adamw = make_optimizer(parameters, 0.01, 0.05, torch.device("cpu"))
    assert type(adam) is torch.optim.Adam and adam.param_groups[0]["weight_decay"] == 0
    assert type(adamw) is torch.optim.AdamW and adamw.param_groups[0]["weight_decay"] == 0.05


def test_weight_decay_is_decoupled_from_the_gradient():
    """AdamW shrinks a weight by lr × decay per step even where the gradient is zero."""
    weight = nn.Parameter(torch.ones(4))
    optimizer = make_optimizer([weight], 0.1, 0.5, torch.device("cpu"))
    weight.grad = torch.zeros(4)
    optimizer.step()
    torch.testing.assert_close(weight.detach(), torch.full((4,), 1 - 0.1 * 0.5))


# ---------------------------------------------------------------------------------------------
# The input pipeline and evaluation (the same functions run on the GPU)


@pytest.mark.parametrize("channels", [1, 3])
def test_pipeline_batches_are_normalised_three_channel_images(channels):
    rng = np.random.default_rng(0)
    shape = (10, 8, 8) if channels == 1 else (10, 3, 8, 8)
    images = rng.integers(0, 256, size=shape, dtype=np.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    pipeline = InputPipeline(images, torch.device("cpu"), mean, std)
    batch = pipeline.batch(torch.tensor([7, 2]))
    pixels = torch.from_numpy(images[[7, 2]]).float() / 255
    if channels == 1:
        pixels = pixels.unsqueeze(1).expand(-1, 3, -1, -1)
    expected = (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert batch.shape == (2, 3, 8, 8) and batch.dtype == torch.float32
    torch.testing.assert_close(batch, expected)
    assert pipeline.resident and pipeline.index_device == torch.device("cpu")


def test_pipeline_augments_before_normalising():
    images = np.full((4, 8, 8), 255, dtype=np.uint8)
    pipeline = InputPipeline(images, torch.device("cpu"))
    seen = {}

    def augment(pixels):
        seen["pixels"] = pixels.clone()
        return pixels * 0  # black

    batch = pipeline.batch(torch.arange(4), augment)
    assert seen["pixels"].shape == (4, 1, 8, 8) and float(seen["pixels"].max()) == 1.0
    black = -torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(batch[:, :, 0, 0], black.expand(4, 3))


def test_images_are_kept_on_the_gpu_when_they_take_a_quarter_of_its_free_memory_or_less():
    gigabyte = 2**30
    assert images_fit_on_device(int(2.5 * gigabyte), 100 * gigabyte)  # 50,000 grey at 224 px
    assert images_fit_on_device(25 * gigabyte, 100 * gigabyte)
    assert not images_fit_on_device(25 * gigabyte + 1, 100 * gigabyte)


def test_evaluation_in_batches_equals_one_pass_over_all_images(monkeypatch):
    monkeypatch.setattr(held_out, "EVAL_BATCH_SIZE", 7)
    images, _ = bright_half_images(n=40)
    torch.manual_seed(0)
    model = build_model("resnet18", 2, "none", 32).eval()
    pipeline = InputPipeline(images, torch.device("cpu"))
    rows = torch.tensor([5, 3, 39, 0, *range(10, 30)])
    outputs, features = evaluate(model, pipeline, rows, torch.autocast("cpu", enabled=False))
    with torch.no_grad():
        expected_outputs, expected_features = model(pipeline.batch(rows))
    assert outputs.shape == (24, 2) and features.shape == (24, 512)
    torch.testing.assert_close(outputs, expected_outputs)
    torch.testing.assert_close(features, expected_features)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_an_epoch_and_an_extraction_never_wait_for_the_gpu():
    """CUDA only: torch raises on any synchronising call (``.item()``, a device-to-host copy,
    indexing with host tensors) between the start and the end of an epoch."""
    device = torch.device("cuda")
    images, labels = bright_half_images(n=64)
    torch.manual_seed(0)
    model = build_model("resnet18", 2, "none", 32).to(device)
    pipeline = InputPipeline(images, device)
    assert pipeline.resident
    y = torch.as_tensor(labels).to(device)
    optimizer = make_optimizer(model.parameters(), 1e-3, 0.0, device)
    scheduler = make_schedule(optimizer, "onecycle", 8)
    batches = training_batches(64, 16, torch.Generator().manual_seed(0))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16)
    from hetcv.augment import BatchAugment

    augment = BatchAugment(AUGMENT, device, 0)
    loss_fn = nn.CrossEntropyLoss()
    train.train_epoch(model, pipeline, batches, y, loss_fn, optimizer, scheduler, autocast)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        on_device = torch.cat(batches).to(device)  # what train_epoch copies once
        for rows in on_device.split(16):
            with autocast:
                loss = loss_fn(model(pipeline.batch(rows, augment))[0].float(), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        evaluate(model, pipeline, torch.arange(64).to(device), autocast)
    finally:
        torch.cuda.set_sync_debug_mode(0)


# ---------------------------------------------------------------------------------------------
# Class weights and early stopping


def test_balanced_class_weights_are_n_over_classes_times_count():
    weights = balanced_class_weights(np.array([0, 0, 0, 1, 2, 2]), n_classes=4)
    # n / (present classes × count): 6 / (3 × 3), 6 / (3 × 1), 6 / (3 × 2); class 3 absent: 1.
    np.testing.assert_allclose(weights, [2 / 3, 2, 1, 1])


def test_class_weights_weight_the_loss_and_are_recorded():
    images, labels = bright_half_images(n=48)
    labels = labels.copy()
    labels[(labels == 1) & (np.arange(48) % 12 >= 8)] = 0  # 1 in 3 of the images is class 1
    result = fit(images, labels, "classification", 2, epochs=1, class_weights="balanced")
    train_labels = labels[np.arange(48) % 4 != 0]
    expected = balanced_class_weights(train_labels, 2)
    assert expected[1] > 1 > expected[0]
    recorded = result.history["class_weights"].iloc[0]
    assert recorded == "balanced (" + " ".join(f"{w:.4g}" for w in expected) + ")"
    plain = fit(images, labels, "classification", 2, epochs=1)
    assert (plain.history["class_weights"] == "none").all()
    assert not np.array_equal(plain.features, result.features)


def test_the_inner_validation_split_never_takes_held_out_rows():
    targets = np.repeat([0, 1], 50)
    train_index, test_index = np.arange(0, 100, 2), np.arange(1, 100, 2)
    fit_rows, validation = split_for_early_stopping(
        targets, train_index, "classification", {"validation_fraction": 0.2, "patience": 2}, 0
    )
    assert len(validation) == 10 and len(fit_rows) == 40
    assert set(validation).isdisjoint(test_index) and set(fit_rows).isdisjoint(test_index)
    assert sorted([*fit_rows, *validation]) == list(train_index)
    assert (targets[validation] == 1).sum() == 5  # stratified
    off = split_for_early_stopping(targets, train_index, "classification", None, 0)
    assert list(off[0]) == list(train_index) and len(off[1]) == 0


def test_early_stopping_keeps_the_epoch_with_the_lowest_validation_loss():
    images, labels = bright_half_images(n=64)
    stopping = {"patience": 2, "validation_fraction": 0.25}
    result = fit(images, labels, "classification", 2, epochs=8, early_stopping=stopping)
    history = result.history
    losses = history["validation_loss"].to_numpy()
    kept = int(history.loc[history["kept"], "epoch"].iloc[0])
    assert kept == history["epoch"].iloc[int(np.argmin(losses))]
    last = int(history["epoch"].iloc[-1])
    assert last == 8 or last - kept == 2  # stopped two epochs after the best, or ran out
    assert (history["validation_samples"] == 12).all() and (history["train_samples"] == 36).all()
    # The kept model is the one whose held-out features were written.
    pipeline = InputPipeline(images, torch.device("cpu"), result.model.mean, result.model.std)
    index = torch.arange(0, 64, 4)
    _, features = evaluate(result.model, pipeline, index, torch.autocast("cpu", enabled=False))
    np.testing.assert_allclose(features.numpy(), result.features, rtol=1e-5, atol=1e-6)


def test_early_stopping_stops_after_patience_epochs_without_a_lower_loss():
    stopper = EarlyStopping(patience=2)
    model = nn.Linear(2, 1)
    for epoch, loss in enumerate([1.0, 0.5, 0.7, 0.6], start=1):
        stopper.update(epoch, loss, model, torch.zeros(1), torch.zeros(1))
        assert stopper.should_stop(epoch) == (epoch == 4)
    assert stopper.best_epoch == 2 and stopper.best_loss == 0.5
    assert not EarlyStopping(patience=1).should_stop(5)  # nothing recorded yet
    nan = EarlyStopping(patience=1)
    assert not nan.update(1, float("nan"), model, None, None) and nan.best_state is None
