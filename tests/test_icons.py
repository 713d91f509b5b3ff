"""The icons showcase: the 48→32 known answers per method, the style mix, and the page without the themes."""
import os

import numpy as np
import pytest

# floors a little under the values measured on all 952 pairs (assets/icons/eval/lesson.json, written by
# ``python -m precompute lesson --dataset icons``): (top-1, top-5)
# measured: pixel cosine 0.692 / 0.766, embedding 0.474 / 0.603, TRAK 0.629 / 0.839, D-TRAK 0.817 / 0.958, NDA 0.699 / 0.762
FLOORS = {"pixel-cos": (0.65, 0.73), "embedding-cos": (0.44, 0.57), "trak": (0.60, 0.80), "dtrak": (0.78, 0.93),
          "nda": (0.66, 0.73)}


@pytest.fixture(scope="module")
def icons_engine():
    from explorer.datasets import data_missing
    from explorer.engine import Engine
    if why := data_missing("icons"):
        if os.environ.get("CI"):
            raise AssertionError(why)
        pytest.skip(why)
    return Engine("icons")


def test_known_answers_per_method_meet_the_measured_floors_and_reproduce(icons_engine):
    from explorer.attribution.features import KNOWN_UID
    from explorer.attribution.timesteps import TimestepStrategy
    from explorer.datasets.icons import ICON_ROOT, icon_tensor, known_answers
    from explorer.task import Query
    eng = icons_engine
    kn = eng.results.lesson()["known"]
    pairs = known_answers(eng.data)
    assert [p for p, _ in pairs] == kn["original"] and len(pairs) > 900
    for name, (top1, top5) in FLOORS.items():
        rank = np.array(kn["methods"][name]["rank"])
        assert kn["methods"][name]["top1"] == pytest.approx(np.mean(rank == 0))
        assert kn["methods"][name]["top5"] == pytest.approx(np.mean(rank < 5))
        assert np.mean(rank == 0) >= top1 and np.mean(rank < 5) >= top5, name
    top1 = {m: r["top1"] for m, r in kn["methods"].items()}
    assert top1["dtrak"] > max(top1["trak"], top1["pixel-cos"], top1["nda"])  # the paper's point, on unplanted copies
    # the stored ranks are what the engine answers now (a sample of 16 pairs, D-TRAK and pixel cosine)
    sample = list(range(0, len(pairs), len(pairs) // 16))[:16]
    queries = [Query("upload", icon_tensor(pairs[i][1]), KNOWN_UID + pairs[i][0]) for i in sample]
    assert all(os.path.relpath(pairs[i][1], ICON_ROOT) == kn["files"][i] for i in sample)
    for name in ("pixel-cos", "dtrak"):
        s = eng.scores(queries, name, TimestepStrategy("uniform", kn["S"]))
        orig = np.array([pairs[i][0] for i in sample])
        rank = (s > s[np.arange(len(sample)), orig][:, None]).sum(1)
        stored = np.array(kn["methods"][name]["rank"])[sample]
        assert (rank == stored).mean() >= 0.9, (name, rank, stored)


def test_the_class_mix_splits_the_top_proponents_by_artist(icons_engine):
    from explorer.ui.answers import mix_plot
    eng = icons_engine
    styles = np.array(eng.data.meta["style"])[eng.data.train_idx]
    top = np.array([int(np.flatnonzero(styles == "tango")[0])] + np.flatnonzero(styles == "oxygen")[:7].tolist())
    fig = mix_plot(eng, top, np.zeros(len(eng.data.train_idx)))  # scores only split credit (emoji)
    by_name = {t.name: np.asarray(t.y) for t in fig.data}
    assert set(by_name) == {"Oxygen", "Tango"}
    assert by_name["Tango"].sum() == 1 and by_name["Oxygen"].sum() == 7
    labels = eng.data.train_labels.numpy()
    assert by_name["Oxygen"][labels[top[1]]] >= 1 and by_name["Tango"][labels[top[0]]] == 1
    share = np.mean(styles == "oxygen")
    assert f"Oxygen 7 · Tango 1" in fig.layout.title.text and f"Oxygen {100 * share:.0f} %" in fig.layout.title.text


def test_without_the_themes_the_icons_model_is_not_offered(monkeypatch, tmp_path):
    import explorer.datasets.icons
    from explorer import ui
    if "icons" not in ui._trained():
        pytest.skip("no icons model in assets/")
    monkeypatch.setattr(explorer.datasets.icons, "ICON_ROOT", str(tmp_path))
    assert "icons" not in ui.available_datasets() and "digits" in ui.available_datasets()
    note = ui.unavailable_note()
    assert note.startswith("The icons model is not offered here") and "apt-get" not in note
    with pytest.raises(ui.Problem, match="no model called 'icons'"):
        ui.engine("icons")


def test_the_lesson_shows_unplanted_copies_from_the_icons(icons_engine):
    from explorer.engine import Engine
    from explorer.lesson import step_duplicates
    kn = icons_engine.results.lesson()["known"]
    step = step_duplicates(Engine("shapes"), icons_engine)
    dtrak = kn["methods"]["dtrak"]
    assert step.numbers["icons_dtrak_top1"] == dtrak["top1"] and step.numbers["icons_pairs"] == len(kn["original"])
    assert f"first for **{dtrak['top1']:.0%}**" in step.text
    known = step.panels[-1]
    assert len(known.items) == 6
    for j in range(3):
        found = dtrak["top"][j][0] == kn["original"][j]
        assert known.items[2 * j + 1][1][1] == ("ORIGINAL" if found else "not it")
        assert np.array_equal(known.items[2 * j + 1][0].numpy(), icons_engine.data.train_x[dtrak["top"][j][0]].numpy())
