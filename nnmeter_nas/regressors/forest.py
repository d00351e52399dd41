"""Tree ensembles stored as plain arrays and evaluated with vectorised numpy.

A :class:`TreeEnsemble` holds every tree of a random forest (or a boosted ensemble) in flat
arrays, so it can be saved to ``.npz`` and loaded without pickle, and evaluated for a batch of
feature vectors without a Python loop over trees or rows.

Node arrays (one entry per node, all trees concatenated; child indices are global):

- ``left``, ``right``: child node index, ``-1`` at a leaf (int32)
- ``feature``: feature index tested at the node, ``-1`` at a leaf (int32)
- ``threshold``: go left when ``x[feature] <= threshold`` (float64)
- ``value``: the leaf's output (float64, in the transformed target space)
- ``roots``: index of each tree's root node (int32)

Prediction matches scikit-learn bit for bit for forests converted from it: inputs are cast to
float32 before comparison (as scikit-learn's trees do) and per-tree outputs are summed in tree
order before dividing by the number of trees.

Large batches, in a process that has evaluated many (row, tree) pairs or has scikit-learn
imported already, descend the trees in scikit-learn's compiled tree walk instead of numpy: all
trees become one scikit-learn ``Tree`` under a balanced "selector" that routes each (row, tree)
pair to its tree's root on an extra tree-index column. The comparisons are the same (float32
input against the float64 threshold, NaN to the left), so the leaves are the same; only the
walk is compiled.

Which walk answers is chosen per ensemble by :attr:`TreeEnsemble.tree_walk` (a constructor
keyword and a plain attribute, not saved with the ensemble): ``"auto"`` (default, as above: a
fresh process walks with numpy until an ensemble has walked ``_COMPILE_AFTER_PAIRS`` pairs or
scikit-learn is imported), ``"numpy"`` (never compiled) or ``"compiled"`` (large batches always
through scikit-learn's walk; :class:`~nnmeter_nas.errors.UsageError` where scikit-learn's
tree cannot be built). The walks reach the same leaves, so predictions are bit-identical; only
their speed differs.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

FORMAT = "nnmeter-nas-tree-ensemble"
FORMAT_VERSION = 1

_AGGREGATES = ("mean", "sum")
# Batches of at least this many rows x trees are deduplicated first (below it np.unique costs
# more than the tree walks it could save).
_DEDUPE_WORK = 4096
# From this many (row, tree) pairs on, the walk drops the pairs that reached their leaf.
_ACTIVE_SET_PAIRS = 1024
_TRANSFORMS = ("identity", "log")
_TREE_WALKS = ("auto", "numpy", "compiled")
# The compiled walk (see the module docstring) is used for batches of at least this many
# (row, tree) pairs, once scikit-learn is imported or this ensemble has walked
# _COMPILE_AFTER_PAIRS pairs with numpy (importing scikit-learn costs about a second; building
# the compiled form a few ms per 100,000 nodes); pairs go through it in chunks of _CHUNK_PAIRS.
_COMPILED_MIN_PAIRS = 2048
_COMPILE_AFTER_PAIRS = 2_000_000
_CHUNK_PAIRS = 1 << 19


@dataclass
class TreeEnsemble:
    """A regression tree ensemble as flat arrays.

    Parameters
    ----------
    left, right, feature, threshold, value, roots:
        Node arrays, see the module docstring.
    n_features:
        Number of input features each row must have.
    aggregate:
        ``"mean"`` (random forest) or ``"sum"`` (boosting) over trees.
    base:
        Constant added after aggregation (boosting's initial prediction; 0 for forests).
    target_transform:
        ``"identity"`` or ``"log"``: with ``"log"`` the trees predict ``log(latency_ms)`` and
        :meth:`predict` returns ``exp`` of it.
    meta:
        Free JSON-serialisable information (hyper-parameters, origin, validation error).
    tree_walk:
        How large batches (at least ``_COMPILED_MIN_PAIRS`` (row, tree) pairs) descend the
        trees: ``"auto"`` (numpy until this ensemble has walked ``_COMPILE_AFTER_PAIRS`` pairs
        or scikit-learn is imported, then scikit-learn's compiled walk), ``"numpy"`` or
        ``"compiled"``. Same leaves and bits in every walk; a runtime setting, not saved.
    """

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    value: np.ndarray
    roots: np.ndarray
    n_features: int
    aggregate: str = "mean"
    base: float = 0.0
    target_transform: str = "identity"
    meta: dict = field(default_factory=dict)
    tree_walk: str = "auto"

    def __post_init__(self) -> None:
        self.left = np.ascontiguousarray(self.left, dtype=np.int32)
        self.right = np.ascontiguousarray(self.right, dtype=np.int32)
        self.feature = np.ascontiguousarray(self.feature, dtype=np.int32)
        self.threshold = np.ascontiguousarray(self.threshold, dtype=np.float64)
        self.value = np.ascontiguousarray(self.value, dtype=np.float64)
        self.roots = np.ascontiguousarray(self.roots, dtype=np.int32)
        self.n_features = int(self.n_features)
        self.base = float(self.base)
        n = self.left.shape[0]
        for name in ("right", "feature", "threshold", "value"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"TreeEnsemble: array {name!r} has shape "
                                 f"{getattr(self, name).shape}, expected ({n},)")
        if self.aggregate not in _AGGREGATES:
            raise ValueError(f"TreeEnsemble: aggregate must be one of {_AGGREGATES}, "
                             f"got {self.aggregate!r}")
        if self.target_transform not in _TRANSFORMS:
            raise ValueError(f"TreeEnsemble: target_transform must be one of {_TRANSFORMS}, "
                             f"got {self.target_transform!r}")
        if self.tree_walk not in _TREE_WALKS:
            raise ValueError(f"TreeEnsemble: tree_walk must be one of {_TREE_WALKS}, "
                             f"got {self.tree_walk!r}")
        if self.roots.size == 0:
            raise ValueError("TreeEnsemble: no trees")
        is_leaf = self.left < 0
        if np.any(self.right[is_leaf] >= 0) or np.any(self.right[~is_leaf] < 0):
            raise ValueError("TreeEnsemble: inconsistent children (a node has one child)")
        inner = ~is_leaf
        if np.any(self.feature[inner] < 0) or np.any(self.feature[inner] >= self.n_features):
            raise ValueError("TreeEnsemble: a split tests a feature index outside "
                             f"[0, {self.n_features})")
        if np.any(self.left[inner] >= n) or np.any(self.right[inner] >= n) or \
                np.any(self.roots >= n) or np.any(self.roots < 0):
            raise ValueError("TreeEnsemble: a child or root index points outside the node arrays")
        # for small batches: leaves point to themselves, so all pairs take the same steps
        idx = np.arange(n, dtype=np.int32)
        self._left_walk = np.where(is_leaf, idx, self.left)
        self._right_walk = np.where(is_leaf, idx, self.right)
        self._feature_walk = np.where(is_leaf, 0, self.feature)
        # for large batches (index arrays, so numpy does not convert them at each gather):
        # _walk_children[2 * i] / [2 * i + 1]: node i's left / right child, a leaf's itself;
        # _walk_feature: -1 at leaves
        self._walk_children = np.stack([self._left_walk, self._right_walk],
                                       axis=1).ravel().astype(np.intp)
        self._walk_feature = np.where(is_leaf, -1, self.feature).astype(np.intp)
        self._walk_roots = self.roots.astype(np.intp)
        self._depth = self._max_depth()
        self._walked = 0  # (row, tree) pairs walked with numpy, until compiled
        self._compiled: Any = None  # (scikit-learn Tree, node offset), False if unavailable

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_compiled"] = None  # rebuilt where needed (a compiled tree is large)
        return state

    # ------------------------------------------------------------------ properties
    @property
    def n_trees(self) -> int:
        return int(self.roots.size)

    @property
    def n_nodes(self) -> int:
        return int(self.left.size)

    @property
    def max_depth(self) -> int:
        return self._depth

    def _max_depth(self) -> int:
        depth = np.zeros(self.n_nodes, dtype=np.int64)
        # Children always follow their parent in scikit-learn's layout, but do not rely on it.
        frontier = self.roots.copy()
        d = 0
        seen = 0
        while frontier.size:
            depth[frontier] = d
            seen += frontier.size
            if seen > self.n_nodes:
                raise ValueError("TreeEnsemble: the node arrays contain a cycle")
            inner = frontier[self.left[frontier] >= 0]
            frontier = np.concatenate([self.left[inner], self.right[inner]])
            d += 1
        return int(d - 1)

    # ------------------------------------------------------------------ prediction
    def apply(self, X: np.ndarray) -> np.ndarray:
        """Leaf index reached by each row in each tree, shape ``(n_rows, n_trees)``."""
        return self._apply_checked(self._check_X(X))

    def _apply_checked(self, X: np.ndarray) -> np.ndarray:
        """:meth:`apply` for rows already through :meth:`_check_X`.

        All (row, tree) pairs descend together, one level per step. In large batches the
        pairs that reached a leaf leave the active set (see below), so a step costs about
        what the pairs still inside a tree cost."""
        n, nt, nf = X.shape[0], self.n_trees, X.shape[1]
        if n * nt >= _COMPILED_MIN_PAIRS:
            compiled = self._compiled_walk(n * nt)
            if compiled is not None:
                return self._apply_compiled(X, *compiled)
            self._walked += n * nt
        if n * nt < _ACTIVE_SET_PAIRS:  # lockstep: less bookkeeping per step
            idx = np.broadcast_to(self.roots, (n, nt)).copy()
            rows = np.arange(n)[:, None]
            for _ in range(self._depth):
                # right when x > threshold, as below (so NaN goes left in every walk)
                go_right = X[rows, self._feature_walk[idx]] > self.threshold[idx]
                nxt = np.where(go_right, self._right_walk[idx], self._left_walk[idx])
                if np.array_equal(nxt, idx):
                    break
                idx = nxt
            return idx
        # Pairs laid out tree by tree (pair p = tree p // n, row p % n: a tree's nodes stay
        # in cache while its rows descend it), X row by row (x[row * nf + f]: a pair carries
        # its row's offset, so a level adds the feature to it, one operation). A pair at a
        # leaf stays there (the leaf is its own child, its feature -1 reads some other
        # value, harmlessly); the pairs at leaves leave the active arrays once they are half
        # of them, so a level costs what the pairs still inside a tree cost (trees are
        # ragged: most paths end well above the deepest leaf) without compacting at every
        # level. The arithmetic is in place on arrays each level makes afresh.
        feature, threshold, children = self._walk_feature, self.threshold, self._walk_children
        Xf = np.ascontiguousarray(X).ravel()
        node = np.repeat(self._walk_roots, n)
        out = node.copy()
        pos = np.arange(n * nt)
        base = np.tile(np.arange(0, n * nf, nf), nt)
        f = feature[node]
        while True:
            leaf = f < 0
            k = np.count_nonzero(leaf)
            if k:
                if k == node.size:
                    out[pos] = node
                    break
                if 2 * k >= node.size:
                    out[pos[leaf]] = node[leaf]
                    inner = ~leaf
                    node, pos, base, f = node[inner], pos[inner], base[inner], f[inner]
            f += base
            right = Xf[f] > threshold[node]  # left when x <= threshold (or NaN)
            node += node
            node += right  # (2 * node + right: the child's slot)
            node = children[node]
            f = feature[node]
        return out.reshape(nt, n).T

    def _compiled_walk(self, pairs: int) -> tuple[Any, int] | None:
        """The compiled form (scikit-learn ``Tree``, offset of node 0 of these arrays in it),
        built on first need; None while numpy walks (see :attr:`tree_walk`) or, in ``"auto"``,
        where scikit-learn's tree cannot be built."""
        walk = self.tree_walk
        if walk == "numpy":
            return None
        if walk not in _TREE_WALKS:  # an attribute set after construction
            raise ValueError(f"TreeEnsemble: tree_walk must be one of {_TREE_WALKS}, "
                             f"got {walk!r}")
        if self._compiled is False and walk == "auto":
            return None
        if self._compiled is None or self._compiled is False:
            import sys

            if walk == "auto" and "sklearn.tree._tree" not in sys.modules and \
                    self._walked + pairs < _COMPILE_AFTER_PAIRS:
                return None
            try:
                self._compiled = self._compile()
            except Exception as exc:  # no (or an unexpected) scikit-learn
                self._compiled = False
                if walk == "compiled":
                    from ..errors import UsageError

                    raise UsageError(
                        "TreeEnsemble: tree_walk='compiled' needs scikit-learn's tree "
                        f"({type(exc).__name__}: {exc}); use 'auto' or 'numpy'") from exc
                return None
        return self._compiled

    def _compile(self) -> tuple[Any, int]:
        """All trees as one scikit-learn ``Tree``: nodes ``0 .. off - 1`` select a tree by the
        extra feature ``n_features`` (the tree's index), node ``off + i`` is node ``i`` here."""
        from sklearn.tree._tree import Tree

        nt, nf, n = self.n_trees, self.n_features, self.n_nodes
        off = max(nt - 1, 1)  # one selector node even for a single tree (node 0 is the root)
        sel_left = np.zeros(off, dtype=np.int64)
        sel_right = np.zeros(off, dtype=np.int64)
        sel_thr = np.zeros(off, dtype=np.float64)
        roots = self.roots.astype(np.int64) + off
        if nt == 1:
            sel_left[0] = sel_right[0] = roots[0]
            sel_thr[0] = 0.5
        else:
            stack = [(0, nt, -1, 0)]  # (first tree, end, parent selector, 0 left / 1 right)
            count = 0
            while stack:
                lo, hi, parent, side = stack.pop()
                if hi - lo == 1:
                    node = int(roots[lo])
                else:
                    node = count
                    count += 1
                    mid = (lo + hi) // 2
                    sel_thr[node] = mid - 0.5  # tree index <= mid - 0.5: trees lo .. mid - 1
                    stack.append((mid, hi, node, 1))
                    stack.append((lo, mid, node, 0))
                if parent >= 0:
                    (sel_right if side else sel_left)[parent] = node
        kind = np.array([1], dtype=np.intp)
        dtype = Tree(nf + 1, kind, 1).__getstate__()["nodes"].dtype
        leaf = self.left < 0
        nodes = np.zeros(off + n, dtype=dtype)
        nodes["left_child"] = np.concatenate([sel_left, np.where(leaf, -1, self.left.astype(np.int64) + off)])
        nodes["right_child"] = np.concatenate([sel_right,
                                               np.where(leaf, -1, self.right.astype(np.int64) + off)])
        nodes["feature"] = np.concatenate([np.full(off, nf), np.where(leaf, -2, self.feature)])
        nodes["threshold"] = np.concatenate([sel_thr, np.where(leaf, -2.0, self.threshold)])
        names = dtype.names or ()
        if "missing_go_to_left" in names:
            nodes["missing_go_to_left"] = 1  # NaN goes left, as NaN > threshold is False
        for f in ("n_node_samples", "weighted_n_node_samples"):
            if f in names:
                nodes[f] = 1
        tree = Tree(nf + 1, kind, 1)
        tree.__setstate__({"max_depth": self._depth + int(np.ceil(np.log2(max(nt, 2)))),
                           "node_count": off + n, "nodes": nodes,
                           "values": np.zeros((off + n, 1, 1))})
        return tree, off

    def _apply_compiled(self, X: np.ndarray, tree: Any, off: int) -> np.ndarray:
        """:meth:`_apply_checked` through the compiled tree; pairs are laid out tree by tree
        (each tree's nodes stay in cache while its rows descend it)."""
        n, nt, nf = X.shape[0], self.n_trees, X.shape[1]
        X32 = X.astype(np.float32)
        out = np.empty((n, nt), dtype=np.int64)
        step = max(1, _CHUNK_PAIRS // nt)
        ids = np.arange(nt, dtype=np.float32)[:, None]
        for s in range(0, n, step):
            rows = X32[s:s + step]
            m = rows.shape[0]
            pairs = np.empty((nt, m, nf + 1), dtype=np.float32)
            pairs[:, :, :nf] = rows[None, :, :]
            pairs[:, :, nf] = ids
            leaves = tree.apply(pairs.reshape(nt * m, nf + 1))
            out[s:s + m] = leaves.reshape(nt, m).T - off
        return out

    def predict_transformed(self, X: np.ndarray) -> np.ndarray:
        """Ensemble output before the inverse target transform, shape ``(n_rows,)``.

        In large batches equal rows are evaluated once (many kernels of a batch of networks
        share their features); each row's output does not depend on the others, so this
        changes no bit."""
        X = self._check_X(X)
        if X.shape[0] == 0:
            return np.zeros(0)
        inverse = None
        if X.shape[0] > 1 and X.shape[0] * self.n_trees >= _DEDUPE_WORK:
            # rows compared as bytes (one sort of a 1-D array: several times faster than
            # np.unique(axis=0)); rows equal by value but not by bytes (0.0 and -0.0) are
            # just evaluated twice
            rows = np.ascontiguousarray(X).view(
                np.dtype((np.void, X.dtype.itemsize * X.shape[1]))).ravel()
            _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
            if first.size < X.shape[0]:
                X, inverse = X[first], inverse.ravel()
            else:
                inverse = None
        vals = self.value[self._apply_checked(X)]
        # cumsum adds trees in order, as scikit-learn does, so results match it exactly.
        out = np.cumsum(vals, axis=1)[:, -1]
        if self.aggregate == "mean":
            out = out / self.n_trees
        out = out + self.base
        return out if inverse is None else out[inverse]

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted latency (ms) for each row of ``X`` (shape ``(n_rows, n_features)``)."""
        out = self.predict_transformed(X)
        if self.target_transform == "log":
            out = np.exp(out)
        return out

    def _check_X(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"TreeEnsemble expects rows of {self.n_features} features, "
                             f"got an array of shape {X.shape}")
        # scikit-learn compares float32 inputs against float64 thresholds.
        return X.astype(np.float32).astype(np.float64)

    # ------------------------------------------------------------------ conversion
    @classmethod
    def from_sklearn(cls, estimator: Any, *, target_transform: str = "identity",
                     meta: Mapping | None = None) -> "TreeEnsemble":
        """Convert a fitted scikit-learn regressor.

        Supports ``RandomForestRegressor``, ``ExtraTreesRegressor``, ``DecisionTreeRegressor``
        and ``GradientBoostingRegressor`` (single output).
        """
        name = type(estimator).__name__
        if hasattr(estimator, "estimators_") and name == "GradientBoostingRegressor":
            trees = [e.tree_ for e in np.asarray(estimator.estimators_).ravel()]
            lr = float(estimator.learning_rate)
            init = estimator.init_
            if init == "zero":
                base = 0.0
            elif hasattr(init, "constant_"):
                base = float(np.ravel(init.constant_)[0])
            else:
                raise ValueError("TreeEnsemble.from_sklearn: only a constant or zero init is "
                                 f"supported for {name}, got {type(init).__name__}")
            return cls._from_tree_states([_tree_arrays(t) for t in trees], estimator,
                                         aggregate="sum", base=base, scale=lr,
                                         target_transform=target_transform, meta=meta)
        if hasattr(estimator, "estimators_"):
            trees = [e.tree_ for e in estimator.estimators_]
            aggregate = "mean"
        elif hasattr(estimator, "tree_"):
            trees = [estimator.tree_]
            aggregate = "mean"
        else:
            raise ValueError(f"TreeEnsemble.from_sklearn: {name} is not a fitted tree model")
        return cls._from_tree_states([_tree_arrays(t) for t in trees], estimator,
                                     aggregate=aggregate, target_transform=target_transform,
                                     meta=meta)

    @classmethod
    def from_tree_arrays(cls, trees: list[dict], n_features: int, *, aggregate: str = "mean",
                         base: float = 0.0, scale: float = 1.0,
                         target_transform: str = "identity",
                         meta: Mapping | None = None) -> "TreeEnsemble":
        """Build from per-tree dicts with local ``left/right/feature/threshold/value`` arrays
        (scikit-learn's layout: ``-1`` children at leaves, ``value`` one float per node)."""
        offset = 0
        parts: dict[str, list] = {k: [] for k in ("left", "right", "feature", "threshold",
                                                  "value")}
        roots = []
        for t in trees:
            left = np.asarray(t["left"], dtype=np.int64)
            right = np.asarray(t["right"], dtype=np.int64)
            leaf = left < 0
            parts["left"].append(np.where(leaf, -1, left + offset))
            parts["right"].append(np.where(leaf, -1, right + offset))
            parts["feature"].append(np.where(leaf, -1, np.asarray(t["feature"])))
            parts["threshold"].append(np.where(leaf, 0.0, np.asarray(t["threshold"],
                                                                      dtype=np.float64)))
            parts["value"].append(np.asarray(t["value"], dtype=np.float64) * scale)
            roots.append(offset)
            offset += left.size
        return cls(**{k: np.concatenate(v) for k, v in parts.items()},
                   roots=np.asarray(roots), n_features=n_features, aggregate=aggregate,
                   base=base, target_transform=target_transform, meta=dict(meta or {}))

    @classmethod
    def _from_tree_states(cls, trees, estimator, **kw) -> "TreeEnsemble":
        n_features = int(getattr(estimator, "n_features_in_", 0) or
                         getattr(estimator, "n_features_", 0))
        meta = dict(kw.pop("meta", None) or {})
        meta.setdefault("origin", f"sklearn.{type(estimator).__name__}")
        return cls.from_tree_arrays(trees, n_features, meta=meta, **kw)

    # ------------------------------------------------------------------ storage
    def to_npz_bytes(self) -> bytes:
        """Serialise to ``.npz`` bytes (no pickle; ``allow_pickle=False`` loads it)."""
        header = {"format": FORMAT, "format_version": FORMAT_VERSION,
                  "n_features": self.n_features, "aggregate": self.aggregate,
                  "base": self.base, "target_transform": self.target_transform,
                  "meta": self.meta}
        buf = io.BytesIO()
        np.savez_compressed(buf, left=self.left, right=self.right, feature=self.feature,
                            threshold=self.threshold, value=self.value, roots=self.roots,
                            header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
        return buf.getvalue()

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.to_npz_bytes())

    @classmethod
    def load(cls, path_or_bytes: str | Path | bytes) -> "TreeEnsemble":
        """Load from a ``.npz`` path or its bytes. Never unpickles.

        Raises :class:`~nnmeter_nas.errors.RegressorFileError` (a ``ValueError``) naming the
        file for anything that is not a tree-ensemble file :meth:`save` wrote.
        """
        from ..errors import RegressorFileError
        from .npz_file import read_regressor_npz

        keys = ("left", "right", "feature", "threshold", "value", "roots")
        label, redo, header, arrays = read_regressor_npz(path_or_bytes, keys, "tree-ensemble",
                                                         "TreeEnsemble.save")
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            got = header.get("format") if isinstance(header, dict) else type(header).__name__
            raise RegressorFileError(f"{label}not a tree-ensemble file (header format "
                                     f"{got!r}, expected {FORMAT!r}){redo}")
        version = header.get("format_version", 1)
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise RegressorFileError(f"{label}tree-ensemble format version {version} is newer "
                                     f"than this nnmeter_nas reads ({FORMAT_VERSION}); upgrade "
                                     "nnmeter-nas")
        missing = [k for k in ("n_features", "aggregate", "base", "target_transform")
                   if k not in header]
        if missing:
            raise RegressorFileError(f"{label}the tree-ensemble header lacks "
                                     f"{', '.join(repr(k) for k in missing)}{redo}")
        try:
            return cls(**arrays, n_features=header["n_features"],
                       aggregate=header["aggregate"], base=header["base"],
                       target_transform=header["target_transform"],
                       meta=header.get("meta", {}))
        except (TypeError, ValueError) as exc:
            raise RegressorFileError(f"{label}inconsistent tree ensemble ({exc}){redo}") \
                from None


def _tree_arrays(tree: Any) -> dict:
    """Node arrays of a fitted ``sklearn.tree._tree.Tree`` (single output)."""
    value = np.asarray(tree.value)
    if value.ndim != 3 or value.shape[1] != 1 or value.shape[2] != 1:
        raise ValueError(f"only single-output regression trees are supported "
                         f"(value shape {value.shape})")
    return {"left": tree.children_left, "right": tree.children_right, "feature": tree.feature,
            "threshold": tree.threshold, "value": value[:, 0, 0]}
