"""The one owner of the evaluation results under ``assets/<dataset>/eval/``: file names, splits,
and the λ each stored result used, per (method, S, split). precompute writes through it; the
engine and the UI read through it.

    subsets.npy, queries.npz, outputs.npy                    LDS ground truth
    lds.json                                                 one row per (method, S, split)
    answers.json                                             rows of stored answers without LDS (``answers`` stage)
    scores/<method>_S<S>_<split>.npy, pred/…                 stored benchmark scores and predictions
    counterfactual.json, counterfactual_images.npz, counterfactual_removed.npz
    lesson.json                                              the lesson's duplicate search / timestep walk
    known.json                                               text-to-image known answers (``known`` stage)
Every file is written atomically by a ``save_…`` method here; nothing else names them.
"""
from __future__ import annotations

import os
from functools import cached_property

import numpy as np

from ..files import load_npy, read_json, save_npy, save_npz, write_json

SPLITS = ("validation", "generated")  # split id 0, 1 in queries.npz


def s_key(uses_timesteps: bool, S: int | None) -> int | None:
    """The S a result is filed under: None for methods without timesteps."""
    return int(S) if uses_timesteps and S is not None else None


def tag(method: str, S: int | None, split: str) -> str:
    return f"{method}_S{S}_{split}"


class EvalResults:
    def __init__(self, folder: str):
        self.folder = folder

    def path(self, *parts: str) -> str:
        return os.path.join(self.folder, *parts)

    # ---- benchmark queries ----
    @property
    def has_queries(self) -> bool:
        return os.path.exists(self.path("queries.npz"))

    @cached_property
    def queries(self) -> dict | None:
        """x (Q, C, H, W), uid, split (0 validation / 1 generated), val_pos, gen_seed; read once."""
        return dict(np.load(self.path("queries.npz"), allow_pickle=False)) if self.has_queries else None

    def save_queries(self, **arrays: np.ndarray) -> None:
        """x, uid, split, val_pos, gen_seed (see ``queries``)."""
        os.makedirs(self.folder, exist_ok=True)
        save_npz(self.path("queries.npz"), **arrays)
        self.__dict__.pop("queries", None)

    def split_of(self, i: int) -> tuple[str, int]:
        """(split name, column within that split) of benchmark query i."""
        split = self.queries["split"]
        return SPLITS[int(split[i])], i - int(np.flatnonzero(split == split[i])[0])

    def columns(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.queries["split"] == SPLITS.index(split))

    # ---- LDS ----
    @property
    def has_lds(self) -> bool:
        return os.path.exists(self.path("lds.json"))

    def lds(self) -> dict:
        return read_json(self.path("lds.json")) if self.has_lds else {"rows": []}

    @cached_property
    def _rows(self) -> dict:
        return {(r["method"], r["S"], r["split"]): r for r in self.lds()["rows"]}

    def row(self, method: str, S: int | None, split: str) -> dict | None:
        return self._rows.get((method, S, split))

    @cached_property
    def _answer_rows(self) -> dict:
        p = self.path("answers.json")
        rows = read_json(p)["rows"] if os.path.exists(p) else []
        return {(r["method"], r["S"], r["split"]): r for r in rows}

    def answer_row(self, method: str, S: int | None, split: str) -> dict | None:
        """What stored scores of (method, S, split) were made with (λ, projection): the LDS row, else the row of
        a first answer stored before any LDS (a model the maintainer has not retrained yet)."""
        return self.row(method, S, split) or self._answer_rows.get((method, S, split))

    def save_answer(self, row: dict, scores: np.ndarray) -> None:
        """Stores a first answer: its scores and its answers.json row (no predictions: no LDS behind it)."""
        os.makedirs(self.path("scores"), exist_ok=True)
        save_npy(self.path("scores", tag(row["method"], row["S"], row["split"]) + ".npy"), scores.astype(np.float16))
        rows = {**self._answer_rows, (row["method"], row["S"], row["split"]): row}
        write_json(self.path("answers.json"), {"rows": list(rows.values())})
        self.__dict__.pop("_answer_rows", None)

    def lam(self, method: str, S: int | None, split: str) -> float | None:
        """The λ that the stored scores of (method, S, split) used (tuned on the tuning subsets)."""
        r = self.row(method, S, split)
        return None if r is None else r["lambda"]

    def stored_scores(self, method: str, S: int | None, split: str) -> np.ndarray | None:
        p = self.path("scores", tag(method, S, split) + ".npy")
        return load_npy(p) if os.path.exists(p) and self.answer_row(method, S, split) else None

    def stored_pred(self, method: str, S: int | None, split: str) -> np.ndarray | None:
        p = self.path("pred", tag(method, S, split) + ".npy")
        return load_npy(p, mmap=False) if os.path.exists(p) else None

    def outputs(self) -> np.ndarray:
        return load_npy(self.path("outputs.npy"), mmap=False).astype(np.float64)

    def save_outputs(self, outputs: np.ndarray) -> None:
        """(subsets, queries) ground-truth losses of the retrained models."""
        save_npy(self.path("outputs.npy"), outputs)

    @property
    def has_subsets(self) -> bool:
        return os.path.exists(self.path("subsets.npy"))

    def subsets(self) -> np.ndarray:
        return load_npy(self.path("subsets.npy"), mmap=False)

    def save_subsets(self, subsets: np.ndarray) -> None:
        os.makedirs(self.folder, exist_ok=True)
        save_npy(self.path("subsets.npy"), subsets)

    def save_lds(self, results: dict) -> None:
        """lds.json as a whole (its config and totals; rows are added by ``save_result``)."""
        write_json(self.path("lds.json"), results)
        self.__dict__.pop("_rows", None)

    def save_result(self, row: dict, scores: np.ndarray, pred: np.ndarray, results: dict) -> None:
        """Stores one (method, S, split) result: its scores, predictions and its lds.json row."""
        t = tag(row["method"], row["S"], row["split"])
        for sub, arr in (("scores", scores.astype(np.float16)), ("pred", pred.astype(np.float32))):
            os.makedirs(self.path(sub), exist_ok=True)
            save_npy(self.path(sub, t + ".npy"), arr)
        results["rows"] = [r for r in results["rows"] if (r["method"], r["S"], r["split"]) !=
                           (row["method"], row["S"], row["split"])] + [row]
        self.save_lds(results)

    # ---- the lesson's duplicate search and timestep walk (precompute/lesson.py) ----
    def lesson(self) -> dict:
        p = self.path("lesson.json")
        return read_json(p) if os.path.exists(p) else {}

    def save_lesson(self, lesson: dict) -> None:
        write_json(self.path("lesson.json"), lesson)

    # ---- text-to-image known answers (precompute/emoji.py) ----
    def known(self) -> dict | None:
        p = self.path("known.json")
        return read_json(p) if os.path.exists(p) else None

    def save_known(self, known: dict) -> None:
        os.makedirs(self.folder, exist_ok=True)
        write_json(self.path("known.json"), known)

    # ---- counterfactual ----
    @property
    def has_counterfactual(self) -> bool:
        return os.path.exists(self.path("counterfactual.json"))

    def counterfactual(self) -> tuple[dict, dict] | None:
        """(counterfactual.json, images {original, <removal>: (Q, C, H, W)}) or None."""
        if not self.has_counterfactual:
            return None
        return read_json(self.path("counterfactual.json")), dict(
            np.load(self.path("counterfactual_images.npz"), allow_pickle=False))

    def removed(self) -> dict:
        """{seeds (the emoji model: queries), <method>: (Q, k) removed training indices}, or {} before the
        counterfactual stage."""
        p = self.path("counterfactual_removed.npz")
        return dict(np.load(p, allow_pickle=False)) if os.path.exists(p) else {}

    def save_removed(self, removed: dict) -> None:
        os.makedirs(self.folder, exist_ok=True)
        save_npz(self.path("counterfactual_removed.npz"), **removed)

    def save_counterfactual(self, result: dict, images: dict) -> None:
        """The images first, then counterfactual.json (whose presence says the result is complete)."""
        save_npz(self.path("counterfactual_images.npz"), **images)
        write_json(self.path("counterfactual.json"), result)

