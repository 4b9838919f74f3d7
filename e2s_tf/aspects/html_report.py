"""The evaluation's page to listen: one self-contained `report.html`.

report.md gives the numbers; this page puts them next to the sound. It holds
the run's facts, the retention of each aspect (where the model lies between
the floor system and the oracle), one table of metrics per aspect (signal,
content, prosody, identity, naturalness) and, per item shown, a player and a
spectrogram for every system, so that a reader hears what a number means.

The page is written beside the files it plays (audio/..., figures/...) and
must keep working when that folder is copied, mailed or served as it is, and
must never reach the network. Hence:
  - inline CSS only: no script, no external font or style sheet, and a
    Content-Security-Policy that forbids anything else;
  - every link relative to the page's folder, each path segment URL-quoted
    (ids may hold spaces or `#`); a path that is absolute, names a URL
    scheme or steps out of the folder (`..`) is a ValueError, never a link;
  - everything that comes from data (ids, paths, facts, metric and system
    names) HTML-escaped.
A metric that did not apply shows as "n/a", and a mean over fewer items than
the system's says how many were n/a ("0.123 (2 n/a)"): never a silent 0.
"""

from __future__ import annotations

import html
import math
import numbers
import os
import re
from typing import Any, Mapping, Optional, Sequence
import urllib.parse

from e2s_tf import fileio
from e2s_tf.aspects import profile

REPORT_FILE = "report.html"

# Aspect -> its metrics (the order of the page), and which are lower-better.
ASPECTS = profile.ASPECTS
LOWER_IS_BETTER = profile.LOWER_IS_BETTER

# Summary keys that are counts, not metrics.
_COUNT_KEYS = frozenset({"num_items", "num_na", "num_skipped", "items"})
# Where a summary has metrics that no aspect names.
_OTHER = "other"
# "http:", "file:", "javascript:" ...: a URL, not a relative path.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
margin:1.5em auto;max-width:72em;padding:0 1em;color:#1d1d1f;background:#fff}
h1{font-size:1.6em;margin-bottom:.3em}h2{margin-top:1.6em;
border-bottom:1px solid #ddd;padding-bottom:.2em}h3{margin:1.2em 0 .4em}
table{border-collapse:collapse;margin:.5em 0 1em}
th,td{border:1px solid #ddd;padding:.25em .6em;vertical-align:middle}
thead th{background:#f4f4f6}td.num{text-align:right;
font-variant-numeric:tabular-nums}td.na{color:#888;text-align:right}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.15em 1em}
dl.facts dt{font-weight:600}dl.facts dd{margin:0;word-break:break-all}
code{font-size:.92em}.note{color:#555;font-size:.92em}
table.items th{text-align:left;white-space:nowrap}
table.items img{display:block;max-width:100%;height:auto}
audio{width:18em}figure{margin:.5em 0}img.retention{max-width:100%}
"""
# Nothing but what the page itself holds and the files beside it.
_CSP = ("default-src 'none'; style-src 'unsafe-inline'; "
        "img-src 'self' file:; media-src 'self' file:")


def relative_url(path: str) -> str:
  """A path relative to the page's folder as a quoted, relative URL.

  Args:
    path: `/`-separated, relative to the folder of report.html, e.g.
      `audio/model/spk1/utt 3#b.wav`. Empty and `.` segments are dropped.

  Returns:
    The URL, every segment quoted (`audio/model/spk1/utt%203%23b.wav`); not
    yet HTML-escaped.

  Raises:
    ValueError: the path is empty, absolute (`/x`, `C:/x`, `\\\\host\\x`),
      a URL (`http:...`, `file:...`), holds a backslash or NUL, or has a `..`
      segment: a link that could leave the folder.
  """
  if not isinstance(path, str) or not path.strip():
    raise ValueError(f"not a relative path: {path!r}")
  if "\\" in path or "\x00" in path:
    raise ValueError(f"{path!r}: backslash or NUL in a page link")
  if path.startswith("/") or os.path.isabs(path) or _SCHEME.match(path):
    raise ValueError(f"{path!r}: page links must be relative to the "
                     "report's folder, not absolute paths or URLs")
  segments = [s for s in path.split("/") if s not in ("", ".")]
  if ".." in segments:
    raise ValueError(f"{path!r}: a '..' segment would leave the report's "
                     "folder")
  if not segments:
    raise ValueError(f"not a relative path: {path!r}")
  return "/".join(urllib.parse.quote(s, safe="") for s in segments)


def _attr(path: str) -> str:
  """relative_url(path), escaped for an HTML attribute."""
  return html.escape(relative_url(path), quote=True)


def _e(value: Any) -> str:
  return html.escape(str(value), quote=True)


def _number(value: Any) -> Optional[float]:
  """The value as a finite float, or None for None/NaN/inf/non-numbers."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    return None
  value = float(value)
  return value if math.isfinite(value) else None


def _format(value: float) -> str:
  return f"{value:.1f}" if abs(value) >= 100 else f"{value:.3f}"


def _arrow(metric: str) -> str:
  known = any(metric in names for names in ASPECTS.values())
  if not known:
    return ""
  return " ↓" if metric in LOWER_IS_BETTER else " ↑"


def _cell(stats: Mapping[str, Any], metric: str) -> str:
  """One table cell: the mean, its n/a count, n/a, or — (not computed for
  this system, as in report.md)."""
  if metric not in stats:
    return ('<td class="na" title="not computed for this system">'
            '—</td>')
  value = _number(stats.get(metric))
  num_na = stats.get("num_na") or {}
  na = num_na.get(metric, 0) if isinstance(num_na, Mapping) else 0
  na = int(na) if _number(na) is not None else 0
  items = stats.get("num_items")
  of = f" of {int(items)}" if _number(items) is not None else ""
  if value is None:
    title = f"{na}{of} items n/a" if na else "not measured for this system"
    return f'<td class="na" title="{_e(title)}">n/a</td>'
  text = _format(value)
  if na:
    return (f'<td class="num" title="{_e(f"{na}{of} items n/a")}">{text} '
            f'({na} n/a)</td>')
  return f'<td class="num">{text}</td>'


def _metrics_by_aspect(summary: Mapping[str, Mapping[str, Any]]
                       ) -> list[tuple[str, list[str]]]:
  """[(aspect, metrics present in some system)], "other" last if any."""
  present = set()
  for stats in summary.values():
    present.update(k for k in stats if k not in _COUNT_KEYS)
  out = [(aspect, [m for m in names if m in present])
         for aspect, names in ASPECTS.items()]
  known = {m for names in ASPECTS.values() for m in names}
  # A metric is a number or None (n/a) in some system; other keys are not.
  others = sorted(m for m in present - known if any(
      m in s and (s[m] is None or _number(s[m]) is not None)
      for s in summary.values()))
  if others:
    out.append((_OTHER, others))
  return out


def _aspect_table(aspect: str, metrics: Sequence[str],
                  summary: Mapping[str, Mapping[str, Any]]) -> list[str]:
  out = [f'<h3 id="aspect-{_e(aspect)}">{_e(aspect)}</h3>']
  if not metrics:
    out.append('<p class="note">No metric of this aspect was computed.</p>')
    return out
  head = "".join(
      f'<th title="{"lower" if m in LOWER_IS_BETTER else "higher"} is '
      f'better">{_e(m)}{_arrow(m)}</th>' if _arrow(m) else f"<th>{_e(m)}</th>"
      for m in metrics)
  out.append(f'<table class="aspect" data-aspect="{_e(aspect)}"><thead><tr>'
             f"<th>system</th><th>items</th>{head}</tr></thead><tbody>")
  for system, stats in summary.items():
    items = _number(stats.get("num_items"))
    items_cell = (f'<td class="num">{int(items)}</td>' if items is not None
                  else '<td class="na">n/a</td>')
    cells = "".join(_cell(stats, m) for m in metrics)
    out.append(f"<tr><th>{_e(system)}</th>{items_cell}{cells}</tr>")
  out.append("</tbody></table>")
  return out


def _retention_section(retention: Mapping[str, Mapping[str, Any]],
                       figure_path: Optional[str]) -> list[str]:
  out = ['<h2 id="retention">Retention by aspect</h2>']
  if not retention:
    out.append('<p class="note">Retention is not computed: it needs the '
               "model, the oracle and a floor (evaluate --floor=EXPORT).</p>")
    return out
  out.append('<p class="note">retention = (model − floor) / (oracle − floor) '
             "on the aspect's metric: 0 is the floor, 1 the oracle; values "
             "outside [0, 1] are shown as they are.</p>")
  if figure_path is not None:
    out.append(f'<figure><img class="retention" src="{_attr(figure_path)}" '
               'alt="retention by aspect, between floor (0) and oracle (1)">'
               "</figure>")
  out.append('<table class="retention"><thead><tr><th>aspect</th>'
             "<th>metric</th><th>floor</th><th>model</th><th>oracle</th>"
             "<th>retention</th></tr></thead><tbody>")
  for aspect, row in _ordered(retention):
    row = row or {}
    metric = row.get("metric")
    cells = "".join(
        (f'<td class="num">{_format(v)}</td>' if v is not None
         else '<td class="na">n/a</td>')
        for v in (_number(row.get(k)) for k in
                  ("floor", "model", "oracle", "retention")))
    metric_cell = (f"<td>{_e(metric)}{_arrow(str(metric))}</td>" if metric
                   else '<td class="na">n/a</td>')
    out.append(f"<tr><th>{_e(aspect)}</th>{metric_cell}{cells}</tr>")
  out.append("</tbody></table>")
  return out


def _ordered(retention: Mapping[str, Any]) -> list[tuple[str, Any]]:
  """The retention rows in the order of ASPECTS, unknown aspects after."""
  order = {a: i for i, a in enumerate(ASPECTS)}
  return sorted(retention.items(), key=lambda kv: order.get(kv[0], len(order)))


def _item_section(index: int, item: Mapping[str, Any]) -> list[str]:
  item_id = str(item["id"])
  seconds = _number(item.get("seconds"))
  if seconds is None or seconds < 0:
    raise ValueError(f"item {item_id!r}: seconds must be a non-negative "
                     f"number, got {item.get('seconds')!r}")
  out = [f'<section class="item" id="item-{index}" data-item="{_e(item_id)}">'
         f"<h3><code>{_e(item_id)}</code> ({seconds:.2f} s)</h3>",
         '<table class="items"><tbody>']
  for system, files in (item.get("systems") or {}).items():
    files = files or {}
    audio, figure = files.get("audio"), files.get("figure")
    label = f"{system}: {item_id}"
    if audio is not None:
      player = (f'<audio controls preload="metadata" src="{_attr(audio)}" '
                f'data-system="{_e(system)}" data-item="{_e(item_id)}" '
                f'data-seconds="{seconds!r}" '
                f'aria-label="{_e(label)}"></audio>')
    else:
      player = '<span class="na">no audio</span>'
    if figure is not None:
      image = (f'<img src="{_attr(figure)}" data-system="{_e(system)}" '
               f'data-item="{_e(item_id)}" '
               f'alt="{_e(f"log-magnitude spectrogram of {label}")}">')
    else:
      image = '<span class="na">no figure</span>'
    out.append(f"<tr><th>{_e(system)}</th><td>{player}</td>"
               f"<td>{image}</td></tr>")
  out.append("</tbody></table></section>")
  return out


def render(title: str, facts: Sequence[tuple[str, str]],
           summary: Mapping[str, Mapping[str, Any]],
           retention: Mapping[str, Mapping[str, Any]],
           media: Sequence[Mapping[str, Any]],
           retention_figure_path: Optional[str] = None) -> str:
  """The page as one HTML5 string.

  Args:
    title: the page's title and heading.
    facts: (label, value) pairs shown under the title (model dir, data dir,
      split, number of items, command...).
    summary: system -> {metric: mean (float, or None/NaN for n/a),
      "num_items": int, "num_na": {metric: items where it was n/a}}, in the
      order of the page's rows.
    retention: aspect -> {"metric", "model", "floor", "oracle",
      "retention"} (floats or None); may be empty (no floor system).
    media: per item shown, {"id", "seconds", "systems": {system: {"audio":
      path or None, "figure": path or None}}}; paths relative to the page's
      folder.
    retention_figure_path: the retention figure, relative to the page's
      folder, or None.

  Returns:
    The HTML text.

  Raises:
    ValueError: a path is absolute, a URL or has a `..` segment (see
      relative_url), or an item's duration is not a number.
  """
  body = [f"<h1>{_e(title)}</h1>"]
  if facts:
    body.append('<dl class="facts">')
    body.extend(f"<dt>{_e(label)}</dt><dd>{_e(value)}</dd>"
                for label, value in facts)
    body.append("</dl>")
  body.extend(_retention_section(retention, retention_figure_path))
  body.append('<h2 id="metrics">Metrics by aspect</h2>')
  body.append('<p class="note">Means over the items; ↓ lower is better, ↑ '
              "higher is better; n/a: the metric did not apply, with the "
              "number of items where it did not; \u2014: not computed for "
              "the system.</p>")
  for aspect, metrics in _metrics_by_aspect(summary):
    body.extend(_aspect_table(aspect, metrics, summary))
  body.append('<h2 id="listen">Listen</h2>')
  if not media:
    body.append('<p class="note">No audio examples were written.</p>')
  for index, item in enumerate(media):
    body.extend(_item_section(index, item))
  return "\n".join([
      "<!DOCTYPE html>",
      '<html lang="en">',
      "<head>",
      '<meta charset="utf-8">',
      f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
      '<meta name="viewport" content="width=device-width, initial-scale=1">',
      '<meta name="referrer" content="no-referrer">',
      f"<title>{_e(title)}</title>",
      f"<style>{_CSS}</style>",
      "</head>",
      "<body>",
      *body,
      "</body>",
      "</html>",
      ""])


def write(out_dir: str, title: str, facts: Sequence[tuple[str, str]],
          summary: Mapping[str, Mapping[str, Any]],
          retention: Mapping[str, Mapping[str, Any]],
          media: Sequence[Mapping[str, Any]],
          retention_figure_path: Optional[str] = None) -> str:
  """Renders the page (see render) into out_dir/report.html atomically.

  The text goes to a temporary file in out_dir that replaces report.html in
  one `os.replace` (fileio.replacing): a reader or a failed run sees the
  previous page or the new one whole. Nothing is written when render raises.

  Returns:
    The path of report.html.
  """
  text = render(title, facts, summary, retention, media,
                retention_figure_path)
  path = os.path.join(out_dir, REPORT_FILE)
  with fileio.replacing(path) as f:
    f.write(text)
  return path
