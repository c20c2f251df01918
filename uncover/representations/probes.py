"""Probes that read a binary property from activations, scikit-learn style (fit / predict / score).

* ``LogisticProbe``: L2 logistic regression (scikit-learn) on standardised features.
* ``MassMeanProbe``: the difference of class means (Marks & Tegmark 2023); with ``covariance=True``
  the direction is whitened by the pooled within-class covariance (their "IID" variant).
* ``SparseProbe``: logistic regression on the k neurons that best separate the classes (Gurnee 2023).
* ``MLPProbe``: one hidden layer, trained with Adam.

Every probe maps features ``X [n, d]`` to a logit (``decision_function``; > 0 means label 1), and saves
to a folder (``probe.save(path)``, ``load_probe(path)``). ``selectivity`` runs Hewitt & Liang's control
task; ``layer_sweep`` fits one probe per layer; ``pca_view`` projects representations to 2-D.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from uncover.core.results import Progress, no_progress
from uncover.core.results import Result
from uncover.core.scoped import seeded
from uncover.errors import UncoverError, closest

ArrayLike = "torch.Tensor | np.ndarray | Sequence"


def as_features(X: ArrayLike) -> torch.Tensor:
    """Features as float32 [n, d]."""
    X = torch.as_tensor(np.asarray(X) if not isinstance(X, torch.Tensor) else X).float().cpu()
    if X.ndim != 2:
        raise UncoverError(f"features must be 2-D [n_examples, d], got shape {tuple(X.shape)}")
    return X


def as_labels(y: ArrayLike, n: int | None = None) -> torch.Tensor:
    """Binary labels as long [n]; checks they are 0/1 and match ``n`` examples."""
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).long().cpu().reshape(-1)
    if n is not None and len(y) != n:
        raise UncoverError(f"{len(y)} labels for {n} examples; pass one 0/1 label per row of X")
    if not bool(((y == 0) | (y == 1)).all()):
        raise UncoverError(f"labels must be 0 or 1, got values {sorted(set(y.tolist()))[:5]}")
    return y


def _check_both_classes(y: torch.Tensor) -> None:
    if y.min() == y.max():
        raise UncoverError(f"all {len(y)} training labels are {int(y[0])}; a probe needs examples of both classes")


class Probe(Result):
    """Base class: subclasses implement ``fit`` and ``decision_function`` and list their state."""

    kind: ClassVar[str] = ""

    def fit(self, X: ArrayLike, y: ArrayLike) -> "Probe":
        raise NotImplementedError

    def decision_function(self, X: ArrayLike) -> torch.Tensor:
        """Logits [n]; positive means label 1."""
        raise NotImplementedError

    def predict_proba(self, X: ArrayLike) -> torch.Tensor:
        """P(label = 1) [n]."""
        return torch.sigmoid(self.decision_function(X))

    def predict(self, X: ArrayLike) -> torch.Tensor:
        """Labels [n] (0/1)."""
        return (self.decision_function(X) > 0).long()

    def score(self, X: ArrayLike, y: ArrayLike) -> float:
        """Accuracy in [0, 1]."""
        X = as_features(X)
        return float((self.predict(X) == as_labels(y, len(X))).float().mean())

    def _check_fitted(self, X: torch.Tensor, d: int | None) -> None:
        if d is None:
            raise UncoverError(f"this {type(self).__name__} is not fitted yet; call .fit(X, y) first")
        if X.shape[1] != d:
            raise UncoverError(f"probe was fitted on {d} features; got {X.shape[1]}")

    # ---- saving ----------------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, hyper-parameters) that rebuild the fitted probe."""
        raise NotImplementedError

    def to_fields(self) -> dict[str, Any]:
        tensors, params = self.state()
        return {"params": params, "tensors": tensors}

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> "Probe":
        probe = cls(**fields["params"])
        probe._set(fields["tensors"])
        return probe


class LinearProbe(Probe):
    """A probe whose logit is ``X @ weight + bias``; ``direction`` is the unit weight vector."""

    weight: torch.Tensor | None = None
    bias: float = 0.0

    def decision_function(self, X: ArrayLike) -> torch.Tensor:
        X = as_features(X)
        self._check_fitted(X, None if self.weight is None else len(self.weight))
        return X @ self.weight + self.bias

    @property
    def direction(self) -> torch.Tensor:
        """The unit vector [d] along which the probe's logit grows."""
        self._check_fitted(torch.zeros(1, 0 if self.weight is None else len(self.weight)),
                           None if self.weight is None else len(self.weight))
        return self.weight / self.weight.norm()

    def params(self) -> dict[str, Any]:
        return {}

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {"weight": self.weight, "bias": torch.tensor([self.bias])}, self.params()

    def _set(self, tensors: dict[str, torch.Tensor]) -> None:
        self.weight, self.bias = tensors["weight"].float(), float(tensors["bias"][0])


class LogisticProbe(LinearProbe):
    """L2-regularised logistic regression on standardised features (scikit-learn's lbfgs solver);
    the scaling is folded back into ``weight`` and ``bias``. C: inverse regularisation strength."""

    kind = "logistic"

    def __init__(self, C: float = 1.0, max_iter: int = 2000):
        self.C, self.max_iter = C, max_iter

    def params(self) -> dict[str, Any]:
        return {"C": self.C, "max_iter": self.max_iter}

    def fit(self, X: ArrayLike, y: ArrayLike) -> "LogisticProbe":
        X = as_features(X)
        y = as_labels(y, len(X))
        _check_both_classes(y)
        mean, std = X.mean(0), X.std(0).clamp_min(1e-6)
        clf = LogisticRegression(C=self.C, max_iter=self.max_iter)
        clf.fit(((X - mean) / std).double().numpy(), y.numpy())
        w = torch.from_numpy(clf.coef_[0]).float() / std
        self.weight = w
        self.bias = float(clf.intercept_[0]) - float(w @ mean)
        return self


class MassMeanProbe(LinearProbe):
    """Direction = mean(X | y=1) - mean(X | y=0), threshold at the midpoint of the two means.

    covariance=True whitens the direction by the pooled within-class covariance,
    ``w = (Sigma + ridge * tr(Sigma)/d * I)^-1 (mu1 - mu0)`` (Marks & Tegmark's IID mass-mean probe).
    """

    kind = "mass_mean"

    def __init__(self, covariance: bool = False, ridge: float = 1e-2):
        self.covariance, self.ridge = covariance, ridge

    def params(self) -> dict[str, Any]:
        return {"covariance": self.covariance, "ridge": self.ridge}

    def fit(self, X: ArrayLike, y: ArrayLike) -> "MassMeanProbe":
        X = as_features(X).double()
        y = as_labels(y, len(X))
        _check_both_classes(y)
        mu1, mu0 = X[y == 1].mean(0), X[y == 0].mean(0)
        w = mu1 - mu0
        if self.covariance:
            centred = torch.cat([X[y == 1] - mu1, X[y == 0] - mu0])
            sigma = centred.T @ centred / len(X)
            d = sigma.shape[0]
            sigma = sigma + self.ridge * torch.trace(sigma) / d * torch.eye(d, dtype=sigma.dtype)
            w = torch.linalg.solve(sigma, w)
        self.weight = w.float()
        self.bias = float(-(w @ (mu1 + mu0) / 2))
        return self


class SparseProbe(LinearProbe):
    """Logistic regression restricted to k features (neurons), chosen by the class-mean gap in units
    of the pooled standard deviation (Gurnee 2023's mean-difference ranking). ``neurons`` lists them;
    ``weight`` is zero elsewhere."""

    kind = "sparse"

    def __init__(self, k: int = 8, C: float = 1.0):
        if k < 1:
            raise UncoverError(f"k must be at least 1 neuron, got {k}")
        self.k, self.C = k, C
        self.neurons: torch.Tensor | None = None

    def params(self) -> dict[str, Any]:
        return {"k": self.k, "C": self.C}

    def fit(self, X: ArrayLike, y: ArrayLike) -> "SparseProbe":
        X = as_features(X)
        y = as_labels(y, len(X))
        _check_both_classes(y)
        if self.k > X.shape[1]:
            raise UncoverError(f"k={self.k} exceeds the {X.shape[1]} features")
        self.neurons = rank_neurons(X, y)[: self.k].sort().values
        inner = LogisticProbe(C=self.C).fit(X[:, self.neurons], y)
        self.weight = torch.zeros(X.shape[1])
        self.weight[self.neurons] = inner.weight
        self.bias = inner.bias
        return self

    def _set(self, tensors: dict[str, torch.Tensor]) -> None:
        super()._set(tensors)
        self.neurons = torch.nonzero(self.weight).flatten()


def rank_neurons(X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Feature indices [d], best first, by |mean(X|1) - mean(X|0)| / pooled std."""
    gap = (X[y == 1].mean(0) - X[y == 0].mean(0)).abs()
    pooled = torch.sqrt((X[y == 1].var(0) + X[y == 0].var(0)) / 2).clamp_min(1e-6)
    return torch.argsort(gap / pooled, descending=True)


class MLPProbe(Probe):
    """A one-hidden-layer ReLU network on standardised features, trained full-batch with Adam on the
    logistic loss. hidden: width; epochs: full-batch steps; weight_decay: AdamW decay."""

    kind = "mlp"

    def __init__(self, hidden: int = 64, epochs: int = 300, lr: float = 1e-2, weight_decay: float = 1e-2,
                 seed: int = 0):
        self.hidden, self.epochs, self.lr, self.weight_decay, self.seed = hidden, epochs, lr, weight_decay, seed
        self.net: torch.nn.Sequential | None = None
        self.mean = self.std = None

    def _build(self, d: int) -> torch.nn.Sequential:
        with seeded(self.seed):
            return torch.nn.Sequential(torch.nn.Linear(d, self.hidden), torch.nn.ReLU(),
                                       torch.nn.Linear(self.hidden, 1))

    def fit(self, X: ArrayLike, y: ArrayLike) -> "MLPProbe":
        X = as_features(X)
        y = as_labels(y, len(X))
        _check_both_classes(y)
        self.mean, self.std = X.mean(0), X.std(0).clamp_min(1e-6)
        Z = (X - self.mean) / self.std
        self.net = self._build(X.shape[1])
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        with torch.enable_grad():
            for _ in range(self.epochs):
                loss = torch.nn.functional.binary_cross_entropy_with_logits(self.net(Z)[:, 0], y.float())
                opt.zero_grad()
                loss.backward()
                opt.step()
        return self

    @torch.no_grad()
    def decision_function(self, X: ArrayLike) -> torch.Tensor:
        X = as_features(X)
        self._check_fitted(X, None if self.mean is None else len(self.mean))
        return self.net((X - self.mean) / self.std)[:, 0]

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        tensors.update(mean=self.mean, std=self.std)
        params = {"hidden": self.hidden, "epochs": self.epochs, "lr": self.lr,
                  "weight_decay": self.weight_decay, "seed": self.seed}
        return tensors, params

    def _set(self, tensors: dict[str, torch.Tensor]) -> None:
        self.mean, self.std = tensors["mean"], tensors["std"]
        self.net = self._build(len(self.mean))
        self.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})


PROBES: dict[str, Callable[..., Probe]] = {
    "logistic": LogisticProbe,
    "mass_mean": MassMeanProbe,
    "mass_mean_iid": lambda **kw: MassMeanProbe(covariance=True, **kw),
    "sparse": SparseProbe,
    "mlp": MLPProbe,
}


def make_probe(kind: str, **params: Any) -> Probe:
    """A fresh probe by name: one of ``PROBES`` ("logistic", "mass_mean", "mass_mean_iid", "sparse", "mlp")."""
    if kind not in PROBES:
        hint = closest(kind, PROBES)
        raise UncoverError(f"unknown probe {kind!r}; choose from {sorted(PROBES)}"
                           + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    return PROBES[kind](**params)


def load_probe(path: str | Path) -> Probe:
    """A probe saved with ``probe.save(path)`` (the uncover result folder format)."""
    return Probe.load(path)


# ---- control task ------------------------------------------------------------------------------------
def control_labels(keys: Sequence[str], seed: int = 0) -> torch.Tensor:
    """Hewitt & Liang's control task: each distinct key (e.g. a statement's subject) gets a random
    label, the same wherever the key appears; half of the keys get 1. Returns long [len(keys)]."""
    distinct = sorted(set(keys))
    rng = random.Random(seed)
    ones = set(rng.sample(distinct, len(distinct) // 2))
    return torch.tensor([int(k in ones) for k in keys])


@dataclass
class Selectivity(Result):
    """Held-out accuracy on the real task and on the control task; selectivity is their difference."""

    task_accuracy: float
    control_accuracy: float

    @property
    def selectivity(self) -> float:
        return self.task_accuracy - self.control_accuracy


def selectivity(kind: str, X_train: ArrayLike, y_train: ArrayLike, keys_train: Sequence[str],
                X_test: ArrayLike, y_test: ArrayLike, keys_test: Sequence[str], seed: int = 0,
                **params: Any) -> Selectivity:
    """Fit probe ``kind`` on the task and on the control task; report both held-out accuracies.

    keys_*: the word type of each example; control labels are a fixed random function of it, so only
    a probe that memorises types can fit them (high selectivity = the probe reads the property, not
    the identity).
    """
    labels = control_labels(list(keys_train) + list(keys_test), seed)
    c_train, c_test = labels[: len(keys_train)], labels[len(keys_train):]
    task = make_probe(kind, **params).fit(X_train, y_train).score(X_test, y_test)
    control = make_probe(kind, **params).fit(X_train, c_train).score(X_test, c_test)
    return Selectivity(task, control)


# ---- per-layer sweep ---------------------------------------------------------------------------------
@dataclass
class LayerSweep(Result):
    """Probe accuracy by layer. Accuracies are [len(layers)] in [0, 1]; ``transfer`` holds the held-out
    families' accuracies (same probes, other data)."""

    layers: list[int]
    probe: str
    train_accuracy: torch.Tensor
    test_accuracy: torch.Tensor
    transfer: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def best_layer(self) -> int:
        """The layer with the highest held-out accuracy (first one on ties)."""
        return self.layers[int(torch.argmax(self.test_accuracy))]



def split_indices(labels: ArrayLike, test_frac: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, test) index arrays."""
    y = as_labels(labels).numpy()
    if not 0 < test_frac < 1:
        raise UncoverError(f"test_frac must be between 0 and 1, got {test_frac}")
    return train_test_split(np.arange(len(y)), test_size=test_frac, random_state=seed, stratify=y)


def layer_sweep(acts: torch.Tensor, labels: ArrayLike, probe: str = "logistic", layers: Sequence[int] | None = None,
                test_frac: float = 0.25, seed: int = 0,
                transfer: dict[str, tuple[torch.Tensor, ArrayLike]] | None = None,
                progress: Progress = no_progress, **params: Any) -> LayerSweep:
    """Fit one probe per layer on ``acts [n_layers, n, d]`` (from ``collect_activations``).

    The same stratified split is used at every layer. transfer: name -> (acts [n_layers, m, d], labels)
    of other families, scored with each layer's probe. layers: the layer numbers of acts' first axis.
    """
    if acts.ndim != 3:
        raise UncoverError(f"acts must be [n_layers, n, d], got shape {tuple(acts.shape)}")
    layers = list(range(acts.shape[0])) if layers is None else list(layers)
    if len(layers) != acts.shape[0]:
        raise UncoverError(f"{len(layers)} layer numbers for {acts.shape[0]} layers of activations")
    y = as_labels(labels, acts.shape[1])
    train, test = split_indices(y, test_frac, seed)
    transfer = transfer or {}
    train_acc, test_acc = [], []
    moved = {name: [] for name in transfer}
    steps = progress(range(len(layers)), f"{probe} probes by layer")
    for i in steps:
        p = make_probe(probe, **params).fit(acts[i, train], y[train])
        train_acc.append(p.score(acts[i, train], y[train]))
        test_acc.append(p.score(acts[i, test], y[test]))
        for name, (t_acts, t_labels) in transfer.items():
            moved[name].append(p.score(t_acts[i], t_labels))
    return LayerSweep(layers, probe, torch.tensor(train_acc), torch.tensor(test_acc),
                      {k: torch.tensor(v) for k, v in moved.items()})


# ---- PCA view ----------------------------------------------------------------------------------------
@dataclass
class PCAView(Result):
    """2-D (or k-D) coordinates [n, k] of representations, with labels and explained variance ratios."""

    coords: torch.Tensor
    labels: torch.Tensor
    explained_variance_ratio: torch.Tensor


def pca_view(X: ArrayLike, labels: ArrayLike, n_components: int = 2) -> PCAView:
    """Project ``X [n, d]`` on its top principal components (scikit-learn PCA, centred)."""
    X = as_features(X)
    pca = PCA(n_components=n_components).fit(X.double().numpy())
    coords = torch.from_numpy(pca.transform(X.double().numpy())).float()
    return PCAView(coords, as_labels(labels, len(X)), torch.from_numpy(pca.explained_variance_ratio_).float())
