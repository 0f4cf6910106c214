"""Datasets: bundled shapes, synthetic conditioning, file round trips, batches, splits, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from condlab.errors import UsageError
from condlab.load.data import (
    list_datasets,
    load_dataset,
    make_batches,
    parse_spec,
    train_test_split,
)

# name -> (N, features, task, num_classes)
BUNDLED = {
    "digits": (1797, 64, "classification", 10),
    "iris": (150, 4, "classification", 3),
    "wine": (178, 13, "classification", 3),
    "breast_cancer": (569, 30, "classification", 2),
    "diabetes": (442, 10, "regression", None),
}


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_shapes_and_tasks(name):
    n, d, task, k = BUNDLED[name]
    ds = load_dataset(name)
    assert ds.X.shape == (n, d) and ds.X.dtype == torch.float64  # scikit-learn's precision
    assert ds.task == task and ds.num_classes == k and ds.name == name
    if task == "classification":
        assert ds.y.dtype == torch.long and ds.y.shape == (n,)
        assert set(ds.y.tolist()) == set(range(k)) and ds.num_outputs == k
    else:
        assert ds.y.is_floating_point() and ds.y.shape == (n,) and ds.num_outputs == 1
    assert ds.feature_names is not None and len(ds.feature_names) == d
    assert ds.spec == {"name": name}


def test_digits_are_pixels_over_16_and_wine_is_not_standardized():
    from sklearn.datasets import load_digits, load_wine

    digits = load_dataset("digits")
    np.testing.assert_allclose(digits.X.numpy(), load_digits().data / 16, rtol=1e-6)
    assert digits.X.max() == 1.0
    std = load_dataset("wine").X.std(0)
    assert std.max() / std.min() > 100  # raw, ill-scaled features are kept
    np.testing.assert_allclose(load_dataset("wine").X.numpy(), load_wine().data, rtol=1e-6)


def test_digits_read_without_sklearn_match_load_digits_exactly():
    from sklearn.datasets import load_digits

    from condlab.load.data import _digits_file, _sklearn

    assert _digits_file() is not None  # the fast path is the one taken
    X, y, names = _sklearn("digits")
    ref = load_digits()
    np.testing.assert_array_equal(X, ref.data / 16.0)
    np.testing.assert_array_equal(y, ref.target)
    assert names == list(ref.feature_names)


def test_diabetes_is_unscaled():
    ds = load_dataset("diabetes")
    assert ds.X[:, 0].mean() > 40  # age in years, not the centered/scaled sklearn default


def test_max_samples_takes_the_first_rows():
    full, head = load_dataset("digits"), load_dataset("digits", max_samples=512)
    assert len(head) == 512 and torch.equal(head.X, full.X[:512]) and torch.equal(head.y, full.y[:512])
    assert head.spec == {"name": "digits", "max_samples": 512}
    assert head.num_classes == 10


def test_list_datasets():
    names = list_datasets()
    assert set(BUNDLED) | {"linreg", "logreg"} == set(names)
    assert all(isinstance(d, str) and d for d in names.values())


# -- synthetic -------------------------------------------------------------------------------
def _cov(ds):
    return torch.cov(ds.X.double().T, correction=0)


@pytest.mark.parametrize("rotate", [False, True])
def test_exact_covariance_has_the_requested_condition_number(rotate):
    ds = load_dataset(f"linreg:n=200,d=6,kappa=1e4,rotate={str(rotate).lower()},exact=true,mean=3")
    C = _cov(ds)
    torch.testing.assert_close(C, ds.meta["covariance"], rtol=0, atol=1e-5)
    assert torch.linalg.cond(C).item() == pytest.approx(1e4, rel=1e-3)
    assert ds.meta["kappa"] == pytest.approx(1e4, rel=1e-9)
    eig = torch.linalg.eigvalsh(ds.meta["covariance"]).flip(0)
    torch.testing.assert_close(eig, torch.logspace(0, -4, 6, dtype=torch.float64))
    off = C - torch.diag(torch.diag(C))
    assert (off.abs().max() > 1e-2) == rotate  # rotation mixes the axes
    torch.testing.assert_close(ds.X.double().mean(0), torch.full((6,), 3.0, dtype=torch.float64))


def test_large_sample_covariance_converges_to_the_population():
    ds = load_dataset("linreg:n=100000,d=4,kappa=100,rotate=true")
    assert torch.linalg.cond(_cov(ds)).item() == pytest.approx(100, rel=0.05)
    U = ds.meta["basis"]
    torch.testing.assert_close(U.T @ U, torch.eye(4, dtype=torch.float64))


def test_eigs_scale_and_mean_lists():
    ds = load_dataset(
        {"name": "linreg", "n": 50, "d": 3, "eigs": [4.0, 1.0, 0.25], "scale": [1, 10, 100],
         "mean": [1, 2, 3], "exact": True}
    )
    expected = torch.diag(torch.tensor([4.0, 100.0, 2500.0], dtype=torch.float64))
    torch.testing.assert_close(ds.meta["covariance"], expected)
    torch.testing.assert_close(_cov(ds), expected, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(ds.X.double().mean(0), torch.tensor([1.0, 2, 3], dtype=torch.float64), atol=1e-4, rtol=0)


def test_blocks_give_the_paper_b_covariance():
    ds = load_dataset({"name": "linreg", "d": 5, "blocks": [2, 3], "e": 0.1, "rotate": False})
    C = ds.meta["covariance"]
    torch.testing.assert_close(torch.diag(C), torch.ones(5, dtype=torch.float64))
    assert C[0, 1] == pytest.approx(0.9) and C[2, 4] == pytest.approx(0.9)
    assert C[0, 2] == 0 and C[1, 4] == 0
    # eigenvalues of (1-e) 11^T + e I of size b: (1-e) b + e and e
    assert ds.meta["kappa"] == pytest.approx((0.9 * 3 + 0.1) / 0.1)


def test_linreg_targets_are_linear_without_noise():
    ds = load_dataset("linreg:n=64,d=5,noise=0")
    torch.testing.assert_close(ds.X.double() @ ds.meta["w_true"], ds.y.double(), rtol=1e-5, atol=1e-5)


def test_logreg_classes_and_noiseless_labels():
    ds = load_dataset("logreg:n=300,d=4,classes=3,noise=0,mean=5")
    assert ds.task == "classification" and ds.num_classes == 3 and ds.y.dtype == torch.long
    logits = (ds.X.double() - 5) @ ds.meta["w_true"]
    norms = torch.sqrt(torch.einsum("dk,de,ek->k", ds.meta["w_true"], ds.meta["covariance"], ds.meta["w_true"]))
    assert torch.equal((logits / norms).argmax(1), ds.y)
    noisy = load_dataset("logreg:n=300,d=4,classes=3,noise=1,mean=5")
    assert 0 < (noisy.y != ds.y).float().mean() < 0.6


def test_string_and_dict_forms_agree_and_specs_rebuild():
    a = load_dataset("linreg:n=32,d=3,kappa=1e3,rotate=true,mean=10,scale=[1,2,3]")
    b = load_dataset({"name": "linreg", "n": 32, "d": 3, "kappa": 1000, "rotate": True, "mean": 10,
                      "scale": [1, 2, 3]})
    assert torch.equal(a.X, b.X) and torch.equal(a.y, b.y)
    for ds in (a, load_dataset({"name": "linreg", "d": 5, "blocks": [2, 3]}),
               load_dataset("logreg:n=20,d=2,eigs=[1,0.5]", max_samples=10)):
        again = load_dataset(ds.spec)
        assert torch.equal(again.X, ds.X) and torch.equal(again.y, ds.y)


def test_seeds():
    a, b = load_dataset("linreg:n=8,d=2"), load_dataset("linreg:n=8,d=2", seed=1)
    assert not torch.equal(a.X, b.X)
    assert torch.equal(b.X, load_dataset("linreg:n=8,d=2,seed=1").X)
    assert b.spec["seed"] == 1


def test_parse_spec_values():
    assert parse_spec("linreg:kappa=1e3,rotate=true,scale=[1,10],n=5,name2=x") == {
        "name": "linreg", "kappa": 1000.0, "rotate": True, "scale": [1, 10], "n": 5, "name2": "x",
    }
    assert parse_spec("some/dir/data.npz") == {"path": "some/dir/data.npz"}
    assert parse_spec("data.txt") == {"path": "data.txt"}
    assert parse_spec("linreg:kappa=1.5") == {"name": "linreg", "kappa": 1.5}


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("mnist", "digits, iris, wine, breast_cancer, diabetes, linreg, logreg"),
        ("linreg:kapa=10", "'kapa'"),
        ("linreg:kappa=0.5", "kappa=0.5"),
        ("linreg:n=0", "n=0"),
        ("linreg:rotate=maybe", "rotate"),
        ("linreg:d=3,eigs=[1,2]", "eigs has 2 entries"),
        ("linreg:d=3,scale=[1,-1,1]", "scale"),
        ("linreg:d=3,blocks=[1,1]", "sum to 2"),
        ("linreg:d=3,blocks=[1,2],kappa=10", "not both"),
        ("linreg:d=3,blocks=[1,2],e=2", "e=2"),
        ("linreg:d=3,eigs=[1,2,3],kappa=10", "not both"),
        ("linreg:n=3,d=3,exact=true", "n > d"),
        ("linreg:classes=3", "'classes'"),
        ("logreg:classes=1", "classes=1"),
        ("digits:n=5", "takes no parameters"),
        ("linreg:n", "not key=value"),
        ({"name": "digits", "path": "x.npz"}, "exactly one"),
        ({"name": "iris", "task": "regression"}, "fixed task"),
    ],
)
def test_bad_dataset_specs(spec, needle):
    with pytest.raises(UsageError) as info:
        load_dataset(spec)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_bad_max_samples():
    with pytest.raises(UsageError, match="max_samples"):
        load_dataset("iris", max_samples=0)


# -- files -----------------------------------------------------------------------------------
def test_npz_round_trip(tmp_path):
    X, y = np.random.default_rng(0).normal(size=(30, 4)), np.arange(30) % 3
    np.savez(tmp_path / "d.npz", X=X, y=y)
    ds = load_dataset(str(tmp_path / "d.npz"))
    np.testing.assert_allclose(ds.X.numpy(), X, rtol=1e-6)
    assert ds.task == "classification" and ds.num_classes == 3 and torch.equal(ds.y, torch.as_tensor(y))
    assert ds.name == "d" and ds.spec == {"path": str(tmp_path / "d.npz")}


def test_npz_image_regression_multi_target(tmp_path):
    X, y = np.zeros((10, 1, 3, 3)), np.random.default_rng(0).normal(size=(10, 2))
    np.savez(tmp_path / "img.npz", X=X, y=y)
    ds = load_dataset(tmp_path / "img.npz")
    assert ds.input_shape == (1, 3, 3) and ds.task == "regression" and ds.num_outputs == 2


def test_pt_round_trip(tmp_path):
    X, y = torch.randn(20, 3), torch.randn(20)
    torch.save({"X": X, "y": y}, tmp_path / "d.pt")
    ds = load_dataset({"path": str(tmp_path / "d.pt")})
    assert torch.equal(ds.X, X) and torch.equal(ds.y, y) and ds.task == "regression"


def test_csv_default_and_named_targets(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,label,c\n1,2,1,0.5\n3,4,3,1.5\n5,6,1,2.5\n7,8,2,3.5\n")
    last = load_dataset(str(path))
    assert last.task == "regression" and last.feature_names == ("a", "b", "label")
    torch.testing.assert_close(last.y, torch.tensor([0.5, 1.5, 2.5, 3.5], dtype=torch.float64))
    named = load_dataset(str(path), target="label")
    assert named.task == "classification" and named.num_classes == 4  # labels as given: 0..3
    assert named.y.tolist() == [1, 3, 1, 2] and "classes" not in named.meta
    assert named.feature_names == ("a", "b", "c") and named.spec["target"] == "label"
    assert torch.equal(load_dataset(named.spec).y, named.y)
    forced = load_dataset({"path": str(path), "target": "label", "task": "regression"})
    assert forced.task == "regression" and forced.y.tolist() == [1.0, 3.0, 1.0, 2.0]


def test_csv_string_labels(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("x,kind\n1,cat\n2,dog\n3,cat\n")
    ds = load_dataset(str(path))
    assert ds.task == "classification" and ds.y.tolist() == [0, 1, 0] and ds.meta["classes"] == ["cat", "dog"]


def _write(tmp_path, name, kind):
    path = tmp_path / name
    if kind == "no_y":
        np.savez(path, X=np.zeros((3, 2)))
    elif kind == "mismatch":
        np.savez(path, X=np.zeros((3, 2)), y=np.zeros(4))
    elif kind == "nan_X":
        X = np.zeros((5, 2))
        X[3, 1] = np.nan
        np.savez(path, X=X, y=np.zeros(5))
    elif kind == "inf_csv":
        path.write_text("a,y\n1,2\ninf,3\n")
    elif kind == "bad_column":
        path.write_text("a,b,y\n1,x,2\n2,y,3\n")
    elif kind == "no_target":
        path.write_text("a,b\n1,2\n")
    elif kind == "no_header":
        path.write_text("1.0,2.0,0\n3.0,4.0,1\n")
    elif kind == "text":
        path.write_text("not a torch file")
    elif kind == "float_labels":
        np.savez(path, X=np.zeros((3, 2)), y=np.array([0.5, 1.0, 2.0]))
    elif kind == "pt_module":
        torch.save({"X": torch.nn.Linear(2, 2), "y": torch.zeros(2)}, path)
    else:
        path.write_text("")
    return str(path)


@pytest.mark.parametrize(
    "name, kind, extra, needle",
    [
        ("missing.npz", "none", {}, "does not exist"),
        ("d.txt", "other", {}, "unknown extension '.txt'"),
        ("d.npz", "no_y", {}, "needs arrays 'X' and 'y'"),
        ("d.npz", "mismatch", {}, "X has 3 rows but y has 4"),
        ("d.npz", "nan_X", {}, "1 NaN/Inf value(s) (first in row 3)"),
        ("d.csv", "inf_csv", {}, "NaN/Inf"),
        ("d.csv", "bad_column", {}, "column(s) b are not numeric"),
        ("d.csv", "no_target", {"target": "y"}, "no column 'y'"),
        ("d.csv", "no_header", {}, "needs a header row"),
        ("d.pt", "text", {}, "cannot read data file"),
        ("d.pt", "pt_module", {}, "cannot read data file"),
        ("d.npz", "float_labels", {"task": "classification"}, "integer labels"),
    ],
)
def test_file_errors(tmp_path, name, kind, extra, needle):
    path = tmp_path / name if kind == "none" else _write(tmp_path, name, kind)
    with pytest.raises(UsageError) as info:
        load_dataset({"path": str(path), **extra})
    assert needle in str(info.value) and "\n" not in str(info.value)


# -- batches and splits ----------------------------------------------------------------------
def test_make_batches():
    ds = load_dataset("linreg:n=10,d=2")
    batches = make_batches(ds, 4)
    assert [len(X) for X, _ in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([X for X, _ in batches]), ds.X)
    assert torch.equal(torch.cat([y for _, y in batches]), ds.y)
    assert len(make_batches(ds, None)) == 1 and len(make_batches(ds, 10)) == 1 and len(make_batches(ds, 99)) == 1
    for bad in (0, -1, 2.5, True):
        with pytest.raises(UsageError, match="batch size"):
            make_batches(ds, bad)


def test_train_test_split():
    ds = load_dataset("linreg:n=50,d=2")  # distinct rows
    train, test = train_test_split(ds, 0.2, seed=3)
    assert (len(train), len(test)) == (40, 10)
    rows = lambda d: [tuple(r) for r in d.X.tolist()]  # noqa: E731
    assert set(rows(train)) | set(rows(test)) == set(rows(ds)) and not set(rows(train)) & set(rows(test))
    order = {r: i for i, r in enumerate(rows(ds))}
    assert [order[r] for r in rows(test)] == sorted(order[r] for r in rows(test))
    assert torch.equal(train_test_split(ds, 0.2, seed=3)[1].X, test.X)
    assert not torch.equal(train_test_split(ds, 0.2, seed=4)[1].X, test.X)
    assert torch.equal(load_dataset(test.spec).X, test.X) and torch.equal(load_dataset(train.spec).y, train.y)
    with pytest.raises(UsageError, match="test fraction"):
        train_test_split(ds, 1.0)


def test_linreg_true_weights_can_be_set():
    """``w`` sets w* (a list, or one number for every feature); the noise draws stay the same,
    so only the noiseless part of y changes."""
    given = load_dataset("linreg:n=40,d=3,w=[1,-2,0.5],noise=0.1")
    drawn = load_dataset("linreg:n=40,d=3,noise=0.1")
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close(given.meta["w_true"], w)
    torch.testing.assert_close(given.y - given.X @ w, drawn.y - drawn.X @ drawn.meta["w_true"])
    zero = load_dataset({"name": "linreg", "n": 40, "d": 3, "w": 0, "noise": 0})
    assert torch.count_nonzero(zero.y) == 0
    assert load_dataset(given.spec).y.equal(given.y)  # the spec rebuilds it
    with pytest.raises(UsageError, match="w has 2 entries but d=3"):
        load_dataset("linreg:n=40,d=3,w=[1,2]")
    with pytest.raises(UsageError, match="no parameter 'w'"):
        load_dataset("logreg:n=40,d=3,w=[1,2,3]")


def test_a_long_synthetic_spec_is_not_taken_for_a_file_name():
    """A spec longer than the file system's name limit is parsed, never passed to stat()."""
    spec = "linreg:n=16,d=300,noise=0,mean=[" + ",".join(["3.0"] * 300) + "]"
    assert len(spec) > 1000
    ds = load_dataset(spec)
    assert ds.X.shape == (16, 300)
    torch.testing.assert_close(ds.X.mean(0), torch.full((300,), 3.0, dtype=ds.X.dtype), atol=3, rtol=0)
