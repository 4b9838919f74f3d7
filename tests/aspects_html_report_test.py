"""Tests of e2s_tf.aspects.html_report and e2s_tf.aspects.figures.

The page's text is checked without a browser (escaping, relative links only,
n/a with counts, a table per aspect, the atomic write). Then a real headless
Chromium opens a report made here, from real WAVs and PNGs, and checks what a
reader gets: every player loads its file and reports the item's duration,
every image decodes, and nothing is requested from outside the report's
folder. Chromium is Debian's `chromium` with `chromium-driver`, driven by
Selenium with explicit paths, so nothing is downloaded at run time; a missing
browser fails the test (CI installs it) unless E2S_SKIP_BROWSER=1.
"""

from __future__ import annotations

import base64
import html.parser
import json
import math
import os
import pathlib
import struct

import numpy as np
import pytest
import soundfile as sf

from e2s_tf import spectral
from e2s_tf.aspects import figures
from e2s_tf.aspects import html_report

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL_HINT = ("apt-get install chromium chromium-driver (Debian; CI's "
                ".ci/run installs them), or set E2S_SKIP_BROWSER=1 to skip")
WAIT_SECONDS = 30.0
SAMPLE_RATE = spectral.DEFAULT.sample_rate
# A player must report the item's duration within one frame hop.
DURATION_TOLERANCE = spectral.DEFAULT.hop_seconds
HOSTILE_ID = "<script>x</script>/a b#c"
SYSTEMS = ("reference", "model", "oracle_griffin_lim", "floor")


class _Page(html.parser.HTMLParser):
  """Every start tag with its attributes, and the cell texts of the tables."""

  def __init__(self, text):
    super().__init__(convert_charrefs=True)
    self.tags = []
    self.tables = []  # [(attrs, [[cell text]])]
    self._cell = None
    self.feed(text)

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    self.tags.append((tag, attrs))
    if tag == "table":
      self.tables.append((attrs, []))
    elif tag == "tr" and self.tables:
      self.tables[-1][1].append([])
    elif tag in ("td", "th") and self.tables:
      self._cell = []
      self.tables[-1][1][-1].append(self._cell)

  def handle_endtag(self, tag):
    if tag in ("td", "th") and self._cell is not None:
      row = self.tables[-1][1][-1]
      row[-1] = "".join(self._cell).strip()
      self._cell = None

  def handle_data(self, data):
    if self._cell is not None:
      self._cell.append(data)

  def table(self, **attrs):
    """{row header: {column header: cell}} of the one table with `attrs`."""
    found = [rows for a, rows in self.tables
             if all(a.get(k) == v for k, v in attrs.items())]
    assert len(found) == 1, (attrs, [a for a, _ in self.tables])
    header, *body = found[0]
    return {row[0]: dict(zip(header[1:], row[1:])) for row in body}

  def links(self):
    return [(tag, key, value) for tag, attrs in self.tags
            for key, value in attrs.items()
            if key in ("src", "href", "poster", "srcset", "action", "data")
            and value is not None]


def _summary():
  return {
      "reference": {"num_items": 2, "lsd_db": 0.0, "pesq_wb": None,
                    "speaker_cosine": 1.0, "num_na": {"pesq_wb": 2}},
      "model": {"num_items": 2, "lsd_db": 1.23456, "stoi": 0.75,
                "pesq_wb": 2.5, "f0_rmse_cents": 123.45,
                "phone_error_rate": float("nan"),
                "speaker_cosine": 0.612, "num_na": {"pesq_wb": 1,
                                                    "phone_error_rate": 2}},
      "oracle_griffin_lim": {"num_items": 2, "lsd_db": 0.9, "stoi": 0.9,
                             "pesq_wb": 3.1, "f0_rmse_cents": 20.0,
                             "speaker_cosine": 0.95, "num_na": {}},
      "floor": {"num_items": 2, "lsd_db": 4.0, "stoi": 0.2, "pesq_wb": 1.1,
                "f0_rmse_cents": 900.0, "speaker_cosine": 0.1},
  }


def _retention():
  return {
      "signal": {"metric": "lsd_db", "model": 1.23456, "floor": 4.0,
                 "oracle": 0.9, "retention": 0.8921},
      "prosody": {"metric": "f0_rmse_cents", "model": 123.45, "floor": 900.0,
                  "oracle": 20.0, "retention": 0.8824},
      "identity": {"metric": "speaker_cosine", "model": 0.612, "floor": 0.1,
                   "oracle": 0.95, "retention": 0.6024},
      "content": {"metric": "phone_error_rate", "model": None, "floor": 0.9,
                  "oracle": 0.2, "retention": None},
  }


def _media(item_id=HOSTILE_ID, seconds=1.5):
  return [{"id": item_id, "seconds": seconds, "systems": {
      system: {"audio": f"audio/{system}/{item_id}.wav",
               "figure": (f"figures/{system}/{item_id}.png"
                          if system != "floor" else None)}
      for system in SYSTEMS}}]


def _render(**overrides):
  kwargs = dict(title="Evaluation: <multiscale> on test",
                facts=[("model", "/runs/export"),
                       ("command", "e2s-evaluate --out_dir='<b>\"x\"</b>'")],
                summary=_summary(), retention=_retention(), media=_media(),
                retention_figure_path="figures/retention.png")
  kwargs.update(overrides)
  return html_report.render(**kwargs)


def test_hostile_id_is_escaped_in_text_and_quoted_in_links():
  text = _render()
  assert "<script" not in text.lower()
  assert "&lt;script&gt;x&lt;/script&gt;/a b#c" in text
  assert "&lt;b&gt;&quot;x&quot;&lt;/b&gt;" in text  # a fact
  page = _Page(text)
  audios = [a for tag, a in page.tags if tag == "audio"]
  assert [a["data-system"] for a in audios] == list(SYSTEMS)
  assert {a["data-item"] for a in audios} == {HOSTILE_ID}
  assert {a["data-seconds"] for a in audios} == {"1.5"}
  assert all(a["preload"] == "metadata" and "controls" in a for a in audios)
  assert audios[1]["src"] == ("audio/model/%3Cscript%3Ex%3C/script%3E/"
                              "a%20b%23c.wav")
  images = [a for tag, a in page.tags if tag == "img"]
  assert len(images) == 1 + 3  # the retention figure, 3 spectrograms
  assert all(a.get("alt") for a in images)
  assert images[1]["src"] == ("figures/reference/%3Cscript%3Ex%3C/script%3E/"
                              "a%20b%23c.png")
  assert "no figure" in text  # the floor's


def test_page_is_self_contained():
  page = _Page(_render())
  tags = {tag for tag, _ in page.tags}
  assert not tags & {"script", "link", "iframe", "object", "embed", "base"}
  for tag, key, value in page.links():
    assert not value.startswith(("/", "\\")) and ":" not in value.split(
        "/")[0], (tag, key, value)
    assert ".." not in value.split("/"), (tag, key, value)
  csp = [a["content"] for tag, a in page.tags
         if a.get("http-equiv") == "Content-Security-Policy"]
  assert csp and "default-src 'none'" in csp[0]


@pytest.mark.parametrize("path", [
    "/tmp/x.wav", "../x.wav", "audio/../../x.wav", "audio/model/..",
    "http://example.com/x.wav", "file:///etc/passwd", "javascript:alert(1)",
    "C:/x.wav", "a\\..\\b.wav", "", "./"])
@pytest.mark.parametrize("where", ["audio", "figure", "retention_figure"])
def test_path_outside_the_folder_raises(path, where):
  media = _media()
  if where == "retention_figure":
    with pytest.raises(ValueError):
      _render(retention_figure_path=path)
    return
  media[0]["systems"]["model"][where] = path
  with pytest.raises(ValueError):
    _render(media=media)


def test_relative_url_quotes_every_segment():
  assert html_report.relative_url("audio/model/spk1/utt3.wav") == (
      "audio/model/spk1/utt3.wav")
  assert html_report.relative_url("./figures//a b#c?.png") == (
      "figures/a%20b%23c%3F.png")
  assert html_report.relative_url("audio/ü.wav") == "audio/%C3%BC.wav"


def test_tables_group_metrics_by_aspect_with_arrows_and_na_counts():
  page = _Page(_render())
  signal = page.table(**{"data-aspect": "signal"})
  assert list(signal) == list(_summary())  # rows in the summary's order
  assert list(signal["model"]) == ["items", "lsd_db ↓", "stoi ↑",
                                   "pesq_wb ↑"]
  assert signal["model"]["lsd_db ↓"] == "1.235"
  assert signal["model"]["pesq_wb ↑"] == "2.500 (1 n/a)"
  assert signal["reference"]["pesq_wb ↑"] == "n/a"
  assert signal["reference"]["stoi ↑"] == "\u2014"  # not computed for it
  assert signal["floor"]["items"] == "2"
  content = page.table(**{"data-aspect": "content"})
  assert content["model"]["phone_error_rate ↓"] == "n/a"  # NaN
  prosody = page.table(**{"data-aspect": "prosody"})
  assert prosody["model"]["f0_rmse_cents ↓"] == "123.5"
  identity = page.table(**{"data-aspect": "identity"})
  assert identity["oracle_griffin_lim"]["speaker_cosine ↑"] == "0.950"
  aspects = [a["data-aspect"] for a, _ in page.tables if "data-aspect" in a]
  assert aspects == ["signal", "content", "prosody", "identity"]
  assert "No metric of this aspect was computed" in _render()  # naturalness


def test_metric_of_no_aspect_goes_to_other():
  summary = _summary()
  summary["model"]["new_metric"] = 0.5
  other = _Page(_render(summary=summary)).table(**{"data-aspect": "other"})
  assert other["model"]["new_metric"] == "0.500"
  assert other["floor"]["new_metric"] == "\u2014"  # not computed


def test_retention_table_in_aspect_order_and_empty_retention():
  page = _Page(_render())
  table = page.table(**{"class": "retention"})
  assert list(table) == ["signal", "content", "prosody", "identity"]
  assert table["signal"] == {"metric": "lsd_db ↓", "floor": "4.000",
                             "model": "1.235", "oracle": "0.900",
                             "retention": "0.892"}
  assert table["content"]["retention"] == "n/a"
  text = _render(retention={}, retention_figure_path=None)
  assert "Retention is not computed" in text
  assert 'class="retention"' not in text


def test_write_replaces_report_atomically(tmp_path):
  path = html_report.write(str(tmp_path), "t", [], _summary(), {}, _media())
  assert path == os.path.join(str(tmp_path), "report.html")
  first = pathlib.Path(path).read_text(encoding="utf-8")
  assert first.startswith("<!DOCTYPE html>")
  media = _media()
  media[0]["systems"]["model"]["audio"] = "/abs/x.wav"
  with pytest.raises(ValueError):
    html_report.write(str(tmp_path), "t2", [], _summary(), {}, media)
  assert pathlib.Path(path).read_text(encoding="utf-8") == first
  assert sorted(os.listdir(tmp_path)) == ["report.html"]


def _png_size(path):
  data = pathlib.Path(path).read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n", path
  return struct.unpack(">II", data[16:24])


def _tone(seconds, f0, sample_rate=SAMPLE_RATE):
  t = np.arange(int(round(seconds * sample_rate))) / sample_rate
  return (0.3 * sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6))
          ).astype(np.float32)


def test_spectrogram_figure_is_small_png(tmp_path):
  path = figures.spectrogram_figure(_tone(1.5, 200.0), SAMPLE_RATE,
                                    str(tmp_path / "a" / "b.png"), "model: b")
  assert _png_size(path) == (480, 160)
  short = figures.spectrogram_figure(np.zeros(10, np.float32), SAMPLE_RATE,
                                     str(tmp_path / "short.png"), "short")
  assert _png_size(short) == (480, 160)
  other_rate = figures.spectrogram_figure(_tone(0.5, 200.0, 22050), 22050,
                                          str(tmp_path / "22k.png"), "22k")
  assert _png_size(other_rate) == (480, 160)


def test_retention_figure_draws_outside_range_and_na(tmp_path):
  retention = _retention()
  retention["signal"]["retention"] = -0.4  # below the floor
  retention["prosody"]["retention"] = 1.3  # above the oracle
  path = figures.retention_figure(retention, str(tmp_path / "r.png"))
  width, height = _png_size(path)
  assert width > 300 and height > 100
  empty = figures.retention_figure({}, str(tmp_path / "empty.png"))
  assert _png_size(empty)[0] > 0


# The browser test.

BROWSER_ITEMS = (("spk1/utt 1#a", 1.5), ("spk2/ünï <b>&c", 2.25))


def _make_report(out_dir: pathlib.Path):
  """Real WAVs and PNGs per item and system, the page; returns its media."""
  media = []
  for item_id, seconds in BROWSER_ITEMS:
    systems = {}
    for k, system in enumerate(SYSTEMS):
      audio = _tone(seconds, 120.0 + 40.0 * k)
      assert audio.shape[0] == seconds * SAMPLE_RATE
      wav = f"audio/{system}/{item_id}.wav"
      (out_dir / wav).parent.mkdir(parents=True, exist_ok=True)
      sf.write(str(out_dir / wav), audio, SAMPLE_RATE, subtype="PCM_16")
      png = f"figures/{system}/{item_id}.png"
      figures.spectrogram_figure(audio, SAMPLE_RATE, str(out_dir / png),
                                 f"{system}: {item_id}")
      systems[system] = {"audio": wav, "figure": png}
    media.append({"id": item_id, "seconds": seconds, "systems": systems})
  figures.retention_figure(_retention(),
                           str(out_dir / "figures" / "retention.png"))
  html_report.write(str(out_dir), "Evaluation: browser test",
                    [("data", str(out_dir))], _summary(), _retention(), media,
                    "figures/retention.png")
  return media


# Runs before any of the page's own content: records media events (they do
# not bubble, so in the capture phase) and Content-Security-Policy
# violations.
_RECORDER = """
window.__e2s = {loaded: [], errors: [], csp: []};
document.addEventListener('loadedmetadata', e => window.__e2s.loaded.push(
    e.target.currentSrc), true);
document.addEventListener('error', e => window.__e2s.errors.push(
    String(e.target.currentSrc || e.target.src || e.target.tagName)), true);
document.addEventListener('securitypolicyviolation', e => window.__e2s.csp
    .push(e.blockedURI + ' ' + e.violatedDirective), true);
"""
_SETTLED = """
const audios = Array.from(document.querySelectorAll('audio'));
const images = Array.from(document.images);
return audios.length > 0
    && audios.every(a => a.readyState >= 1 || a.error !== null)
    && images.every(i => i.complete);
"""
_STATE = """
return {
  audio: Array.from(document.querySelectorAll('audio')).map(a => ({
      system: a.dataset.system, item: a.dataset.item,
      seconds: Number(a.dataset.seconds), readyState: a.readyState,
      networkState: a.networkState, error: a.error && a.error.code,
      duration: a.duration, src: a.currentSrc})),
  images: Array.from(document.images).map(i => ({
      src: i.currentSrc, width: i.naturalWidth, height: i.naturalHeight})),
  events: window.__e2s,
};
"""


def _chrome(tmp_path, monkeypatch, chromium=CHROMIUM,
            chromedriver=CHROMEDRIVER):
  """A headless Chromium from Debian's packages; fails when not there.

  E2S_SKIP_BROWSER=1 skips instead (and never starts a browser)."""
  if os.environ.get("E2S_SKIP_BROWSER") == "1":
    pytest.skip("E2S_SKIP_BROWSER=1: the page is not opened in a browser")
  missing = [p for p in (chromium, chromedriver)
             if not os.access(p, os.X_OK)]
  if missing:
    pytest.fail(f"the browser test needs {missing}: {INSTALL_HINT}")
  try:
    from selenium import webdriver  # pylint: disable=g-import-not-at-top
    from selenium.webdriver.chrome import service  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    pytest.fail(f"selenium is missing ({e}): pip install -r requirements.txt")
  # Explicit driver and browser: Selenium Manager never runs or downloads.
  monkeypatch.setenv("SE_OFFLINE", "true")
  options = webdriver.ChromeOptions()
  options.binary_location = chromium
  for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
               "--disable-dev-shm-usage", "--allow-file-access-from-files",
               "--autoplay-policy=no-user-gesture-required", "--mute-audio",
               "--no-first-run", "--no-default-browser-check",
               "--disable-extensions", "--disable-background-networking",
               "--disable-component-update", "--disable-sync",
               "--window-size=1280,1600",
               f"--user-data-dir={tmp_path / 'chromium-profile'}"):
    options.add_argument(flag)
  options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
  driver_service = service.Service(
      chromedriver, log_output=str(tmp_path / "chromedriver.log"))
  return webdriver.Chrome(service=driver_service, options=options)


def _requests(driver, page_url):
  """URLs the page requested (from the DevTools Network events)."""
  urls = []
  for entry in driver.get_log("performance"):
    message = json.loads(entry["message"])["message"]
    if message.get("method") != "Network.requestWillBeSent":
      continue
    params = message["params"]
    urls.append((params.get("documentURL"), params["request"]["url"]))
  return [url for document, url in urls if document == page_url], [
      url for _, url in urls]


def test_report_plays_in_headless_chromium(tmp_path, monkeypatch):
  out_dir = tmp_path / "report"
  media = _make_report(out_dir)
  page_url = (out_dir / "report.html").as_uri()
  folder_url = out_dir.as_uri() + "/"
  driver = _chrome(tmp_path, monkeypatch)
  try:
    from selenium.common import exceptions  # pylint: disable=g-import-not-at-top
    from selenium.webdriver.support import wait  # pylint: disable=g-import-not-at-top
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                           {"source": _RECORDER})
    driver.get(page_url)
    try:
      wait.WebDriverWait(driver, WAIT_SECONDS, poll_frequency=0.1).until(
          lambda d: d.execute_script(_SETTLED))
    except exceptions.TimeoutException:
      pytest.fail(f"not loaded within {WAIT_SECONDS} s: "
                  f"{driver.execute_script(_STATE)}")
    state = driver.execute_script(_STATE)
    screenshot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True})
    in_page, every_request = _requests(driver, page_url)
  finally:
    driver.quit()

  expected = {(item["id"], system): item["seconds"] for item in media
              for system in item["systems"]}
  audios = state["audio"]
  assert {(a["item"], a["system"]) for a in audios} == set(expected)
  assert len(audios) == len(expected)
  for a in audios:
    where = f"{a['system']} {a['item']!r} ({a['src']})"
    assert a["error"] is None and a["readyState"] >= 1, (where, a)
    assert a["src"].startswith(folder_url), where
    seconds = expected[(a["item"], a["system"])]
    assert a["seconds"] == seconds, where  # data-seconds
    assert math.isfinite(a["duration"]), (where, a)
    assert abs(a["duration"] - seconds) <= DURATION_TOLERANCE, (where, a)
  events = state["events"]
  assert not events["errors"], events["errors"]
  assert not events["csp"], events["csp"]
  assert sorted(events["loaded"]) == sorted(a["src"] for a in audios)
  images = state["images"]
  assert len(images) == 1 + len(expected)  # retention + spectrograms
  for image in images:
    assert image["width"] > 0 and image["height"] > 0, image
    assert image["src"].startswith(folder_url), image
  # Nothing outside the folder: the page and its files, or the media
  # controls' own data: icons; no http(s) anywhere in the tab.
  assert page_url in in_page
  outside = [u for u in in_page
             if not (u.startswith(folder_url) or u.startswith("data:"))]
  assert not outside, outside
  network = [u for u in every_request
             if u.split(":", 1)[0].lower() in ("http", "https", "ws", "wss",
                                                "ftp")]
  assert not network, network
  wavs = {a["src"] for a in audios}
  assert wavs <= set(in_page)
  shot = tmp_path / "report.png"
  shot.write_bytes(base64.b64decode(screenshot["data"]))
  width, height = _png_size(shot)
  assert width >= 800 and height >= 1000, (width, height)
  assert shot.stat().st_size > 20_000


def test_missing_browser_fails_with_install_hint(tmp_path, monkeypatch):
  monkeypatch.delenv("E2S_SKIP_BROWSER", raising=False)
  with pytest.raises(pytest.fail.Exception,
                     match="apt-get install chromium chromium-driver"):
    _chrome(tmp_path, monkeypatch, chromium=str(tmp_path / "no-chromium"))
  monkeypatch.setenv("E2S_SKIP_BROWSER", "1")
  with pytest.raises(pytest.skip.Exception):
    _chrome(tmp_path, monkeypatch, chromium=str(tmp_path / "no-chromium"))
