"""The trust report in a real browser: headless Chromium renders it at 1280 and 800 px wide and
the page itself reports whether anything sticks out to the right (horizontal scrolling) and
whether every image decoded. Checked on a synthetic report built here and on the project's
``reports/trust_report.html`` when notebook 10 has written it. Skipped only without Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from helpers import report, trust  # noqa: E402
from helpers.paths import PROJECT_ROOT  # noqa: E402

WIDTHS = (1280, 800)
BROWSER = next(
    (shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)),
    None,
)
needs_browser = pytest.mark.skipif(
    BROWSER is None, reason="no chromium binary on PATH (.ci/run installs it)"
)

# Runs after load: measures the layout, then writes the result into a hidden <pre> that
# --dump-dom prints. Injected into a copy of the page, only for the test.
_CHECK = """<script>
window.addEventListener("load", function () {
  var w = window.innerWidth, over = [];
  document.querySelectorAll("body *").forEach(function (el) {
    var r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > w + 0.5)
      over.push(el.tagName.toLowerCase() + (el.className ? "." + el.className : "")
                + " right=" + Math.round(r.right));
  });
  var images = Array.prototype.map.call(document.images, function (im) {
    return {loaded: im.complete && im.naturalWidth > 0, alt: im.alt};
  });
  var out = {scrollWidth: document.documentElement.scrollWidth, innerWidth: w,
             overflowing: over.slice(0, 15), n_overflowing: over.length, images: images};
  var pre = document.createElement("pre");
  pre.id = "layout-check"; pre.hidden = true; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def layout(page, tmp_path, width: int) -> dict:
    """Render ``page`` (a path) headless at ``width`` px and return what the page measured."""
    text = page.read_text(encoding="utf-8")
    probe = tmp_path / f"probe_{width}_{page.stem}.html"
    probe.write_text(
        text.replace("</body>", _CHECK + "</body>", 1) if "</body>" in text else text + _CHECK,
        encoding="utf-8",
    )
    result = subprocess.run(
        [
            BROWSER,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={width},2000",
            "--virtual-time-budget=3000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r'<pre id="layout-check" hidden="">(.*?)</pre>', result.stdout, re.S)
    assert found, (
        f"the page did not report its layout (chromium rc {result.returncode}): "
        f"{result.stderr[-800:]}"
    )
    return json.loads(
        found.group(1)
        .replace("&quot;", '"')
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
    )


def assert_fits(check: dict, width: int):
    assert check["innerWidth"] == width
    assert check["scrollWidth"] <= check["innerWidth"], (
        f"horizontal scrolling at {width} px: {check}"
    )
    assert check["n_overflowing"] == 0, (
        f"elements past the right edge at {width} px: {check['overflowing']}"
    )
    broken = [im["alt"] for im in check["images"] if not im["loaded"]]
    assert not broken, f"images that did not load: {broken}"


# ----------------------------------------------------------------------------- a synthetic report
CLASSES = [
    "buildings",
    "forest",
    "glacier",
    "mountain_range_with_a_very_long_unbroken_class_name",
    "sea and coast (beaches, cliffs, harbours and the open water)",
    "street",
]


class _History:
    def __init__(self, preds, labels):
        self.test_preds, self.test_labels, self.classes = preds, labels, CLASSES


def synthetic_report(path, *, never_predicted: bool = False):
    """A realistic report: 6 classes (two with long names), 10 test images each, all sources,
    example images and figures. ``never_predicted``: one class is never predicted."""
    rng = np.random.default_rng(0)
    n_per, c = 10, len(CLASSES)
    labels = np.repeat(np.arange(c), n_per)
    logits = rng.normal(size=(len(labels), c))
    logits[np.arange(len(labels)), labels] += rng.uniform(0.5, 4, len(labels))
    if never_predicted:
        logits[:, 0] = -10
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    preds = np.stack(
        [
            np.where(
                rng.random(len(labels)) < 0.5 + 0.1 * e, labels, rng.integers(0, c, len(labels))
            )
            for e in range(4)
        ]
        + [probs.argmax(1)]
    )
    rows = []
    for region in ("whole", "object", "background"):
        for i, y in enumerate(labels[::2]):
            image = 2 * i
            wrong = bool(probs[image].argmax() != y)
            eps = float(rng.uniform(0.002, 0.05))
            rows.append(
                {
                    "image": image,
                    "region": region,
                    "label": y,
                    "epsilon": 0.0 if wrong else eps,
                    "flipped": not wrong and eps < 0.04,
                    "already_wrong": wrong,
                    "flip_class": (y + 1) % c,
                }
            )
    fragility = pd.DataFrame(rows)
    fragility.loc[~fragility["flipped"] & ~fragility["already_wrong"], "epsilon"] = np.nan
    fragility.attrs["max_eps"] = 16 / 255
    masks = np.zeros((len(labels), 16, 16), bool)
    masks[:, 4:12, 3:13] = True
    maps = rng.random((len(labels), 16, 16)) + masks * rng.uniform(0, 3, (len(labels), 1, 1))
    per_image = [(1.0,) * 5, (0.3, 0.2, 0.4, 0.35, 0.25), (0.1, 0.0, 0.2, 0.15, 0.05)]
    sanity = pd.DataFrame(
        {
            "method": ["gradcam"] * 3,
            "stage": ["original", "head", "body"],
            "spearman_abs": [1.0, 0.3, 0.1],
            "per_image": per_image,
            "per_image_undefined": [(False,) * 5] * 3,
        }
    )
    sources = {
        "predictions (02)": trust.per_class_from_predictions(labels, probs, CLASSES),
        "training history (03)": trust.per_class_from_history(_History(preds, labels)),
        "attacks (09)": trust.per_class_from_fragility(fragility, CLASSES),
        "sanity check (06)": trust.from_sanity_check(sanity, "gradcam", CLASSES),
        "Grad-CAM on the masks (05)": trust.per_class_localisation(maps, masks, labels, CLASSES),
    }
    table = trust.score(trust.build_table(sources))
    images = (
        rng.random((len(labels), 3, 64, 64)) * 0.5 + np.linspace(0, 0.5, 64)[None, None, None, :]
    )
    examples = report.class_examples(images, labels, probs, CLASSES, fragility=fragility)
    fig, ax = plt.subplots(figsize=(12, 4))
    ax.plot(np.arange(20), rng.random(20))
    ax.set_title("a deliberately wide figure")
    figure_file = path.parent / "wide_figure.png"
    wide, ax = plt.subplots(figsize=(30, 3), dpi=100)
    ax.imshow(rng.random((30, 300)), aspect="auto")
    wide.savefig(figure_file)
    plt.close("all")
    return report.write_html(
        table,
        path,
        verdicts=trust.verdicts(table),
        title="Trust report: a synthetic model",
        model="A synthetic classifier with a long description that should wrap on narrow screens",
        data="60 synthetic test images, 10 per class",
        n_images={"test images": 60, "attacked": 30, "explained": 60},
        examples=examples,
        figures={
            "A line (60 test images)": (fig, "60 test images"),
            "A 3000 px wide figure from a file": (figure_file, "30 attacked images"),
        },
        csv="trust.csv",
        notes=["Synthetic numbers, for the layout test only."],
    )


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    return synthetic_report(folder / "trust.html"), synthetic_report(
        folder / "weak.html", never_predicted=True
    )


def test_synthetic_report_is_small_and_self_contained(synthetic):
    for path in synthetic:
        page = path.read_text(encoding="utf-8")
        assert path.stat().st_size < report.MAX_BYTES
        for forbidden in ("http://", "https://", "<script", "<link", "@import", 'src="file'):
            assert forbidden not in page
        n_examples = len(re.findall(r'<figure><img alt="(?:Right|Wrong|Most fragile)', page))
        assert (
            n_examples >= 6 and page.count("<img") == 2 + 2 + n_examples
        )  # ranking, components, figures, examples
    weak = synthetic[1].read_text(encoding="utf-8")
    assert "not defined (the model never predicts this class)" in weak


@needs_browser
@pytest.mark.parametrize("width", WIDTHS)
def test_synthetic_report_fits_the_window(synthetic, tmp_path, width):
    for path in synthetic:
        check = layout(path, tmp_path, width)
        assert_fits(check, width)
        assert len(check["images"]) >= 2 + 2 + 6  # ranking and component charts, figures, examples


@needs_browser
@pytest.mark.parametrize("width", WIDTHS)
def test_project_report_fits_the_window(tmp_path, width):
    path = PROJECT_ROOT / "reports" / "trust_report.html"
    if not path.is_file():
        pytest.skip(f"{path} not written yet (notebook 10 writes it; nbval runs it)")
    assert path.stat().st_size < report.MAX_BYTES
    assert_fits(layout(path, tmp_path, width), width)


@needs_browser
def test_the_check_catches_a_wide_table_and_a_broken_image(tmp_path):
    bad = tmp_path / "bad.html"
    cells = "".join(f"<td>column_number_{i}_with_a_long_name</td>" for i in range(40))
    bad.write_text(
        "<!DOCTYPE html><html><body><p>fine</p>"
        f"<table><tr>{cells}</tr></table>"
        '<img alt="broken" src="data:image/png;base64,AAAA"></body></html>',
        encoding="utf-8",
    )
    check = layout(bad, tmp_path, 800)
    assert check["scrollWidth"] > 800 and check["n_overflowing"] > 0
    assert [im["loaded"] for im in check["images"]] == [False]
    with pytest.raises(AssertionError, match="horizontal scrolling"):
        assert_fits(check, 800)
    # and a page that fits passes
    good = tmp_path / "good.html"
    good.write_text("<!DOCTYPE html><html><body><p>fine</p></body></html>", encoding="utf-8")
    assert_fits(layout(good, tmp_path, 800), 800)
