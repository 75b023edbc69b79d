"""The rating page: one image at a time, two answers, progress, nothing fetched from elsewhere.

The page talks only to the server that sent it (``/api/next``, ``/api/answer``); images come
inside those answers as ``data:`` URIs, so a card's URL never says what it is. The
Content-Security-Policy allows that and nothing else: the one script is allowed by its hash.
There is no feedback on correctness while rating (as in HYPE∞): a person who learned which
images are generated as they go would be measured on what they learned, not on the images.
"""

from __future__ import annotations

import base64
import hashlib
import html

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d232b;
       margin: 0; background: #f6f7f9; }
header { background: #1d2733; color: #f3f5f7; padding: 14px 28px 12px; }
header h1 { margin: 0 0 2px; font-size: 20px; font-weight: 600; }
header p { margin: 0; color: #b9c3cf; font-size: 13px; }
main { max-width: 640px; margin: 0 auto; padding: 12px 24px 40px; text-align: center; }
p.how { color: #4a5561; margin: 10px 0 16px; text-align: left; }
#card { display: block; margin: 0 auto; image-rendering: pixelated; background: #000;
        border: 1px solid #c9d0d8; }
.answers { display: flex; justify-content: center; gap: 18px; margin: 18px 0 10px; }
button { font: inherit; font-size: 17px; padding: 10px 0; width: 170px; border-radius: 6px;
         border: 1px solid #9aa6b3; background: #fff; cursor: pointer; }
button:hover:enabled { background: #eef3f9; }
button:disabled { color: #9aa6b3; cursor: default; }
kbd { font: 12px ui-monospace, monospace; border: 1px solid #b9c3cf; border-radius: 3px;
      padding: 0 4px; color: #4a5561; }
.progress { color: #4a5561; font-variant-numeric: tabular-nums; }
progress { width: 280px; height: 8px; vertical-align: middle; }
form { margin: 30px 0; }
input { font: inherit; padding: 6px 8px; width: 220px; }
.who { color: #7a8591; font-size: 13px; margin-top: 18px; }
.who button { font-size: 13px; width: auto; padding: 2px 8px; }
#problem { color: #a3281f; }
[hidden] { display: none !important; }
"""

SCRIPT = """
"use strict";
const $ = (id) => document.getElementById(id);
const fixed = document.body.dataset.rater;
let rater = fixed || localStorage.getItem("distgan-rater") || "";
let current = null, shownAt = 0, busy = true;

function setBusy(b) { busy = b; $("real").disabled = b; $("generated").disabled = b; }
function problem(text) { $("problem").textContent = text; $("problem").hidden = !text; }

function show(state) {
  problem("");
  current = state;
  $("progress").value = state.answered;
  $("progress").max = state.total;
  $("count").textContent = Math.min(state.answered + 1, state.total) + " of " + state.total;
  $("rater").textContent = rater;
  if (state.done) {
    $("rating").hidden = true;
    $("done").hidden = false;
    $("done-text").textContent = "All " + state.total + " images answered. Thank you, " +
      rater + ": your answers are saved, you can close this page.";
    return;
  }
  $("rating").hidden = false;
  $("done").hidden = true;
  setBusy(true);
  const img = $("card");
  img.src = state.image;
  img.decode().then(() => { shownAt = performance.now(); setBusy(false); },
                    () => problem("This image could not be shown; reload the page."));
}

function call(url, options) {
  return fetch(url, options).then((r) => r.json().then((body) => {
    if (!r.ok && r.status !== 409) { throw new Error(body.error || r.statusText); }
    return body;
  }));
}

function failed(err) {
  problem("The rating server did not answer (" + err.message + "). Answers given so far are " +
          "saved; start distgan rate again and reload this page.");
}

function start() {
  $("name-form").hidden = true;
  $("rating").hidden = false;
  $("change").hidden = !!fixed;
  $("who").hidden = false;
  call("/api/next?rater=" + encodeURIComponent(rater)).then(show, failed);
}

function answer(choice) {
  if (busy || !current || current.done) { return; }
  setBusy(true);
  const ms = Math.round(performance.now() - shownAt);
  call("/api/answer", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ rater: rater, index: current.index, answer: choice, ms: ms }),
  }).then(show, (err) => { setBusy(false); failed(err); });
}

$("real").addEventListener("click", () => answer("real"));
$("generated").addEventListener("click", () => answer("generated"));
document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT" || e.repeat || e.ctrlKey || e.metaKey || e.altKey) { return; }
  const key = e.key.toLowerCase();
  if (key === "r" || key === "arrowleft") { e.preventDefault(); answer("real"); }
  if (key === "g" || key === "arrowright") { e.preventDefault(); answer("generated"); }
});
$("name-form").addEventListener("submit", (e) => {
  e.preventDefault();
  rater = $("name").value.trim();
  if (!rater) { return; }
  localStorage.setItem("distgan-rater", rater);
  start();
});
$("change").addEventListener("click", () => {
  localStorage.removeItem("distgan-rater");
  rater = "";
  $("rating").hidden = true;
  $("done").hidden = true;
  $("who").hidden = true;
  $("name-form").hidden = false;
  $("name").focus();
});

if (rater) { start(); } else { $("name-form").hidden = false; $("name").focus(); }
"""

SCRIPT_HASH = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    f"script-src 'sha256-{SCRIPT_HASH}'; connect-src 'self'; form-action 'none'; base-uri 'none'"
)


def rating_page(
    title: str, subtitle: str, total: int, size: tuple[int, int], rater: str | None
) -> str:
    """The page's HTML. ``size``: the image's (width, height) on screen in CSS pixels;
    ``rater``: the name given with ``--rater`` (the page then asks for none)."""
    esc = html.escape
    fixed = f' data-rater="{esc(rater)}"' if rater else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>Real or generated? · {esc(title)}</title><style>{STYLE}</style></head>
<body{fixed}>
<header><h1>Real or generated?</h1><p>{esc(title)} · {esc(subtitle)}</p></header>
<main>
<p class="how">Each image is either a real one from the training data or one the generator made;
half of the {total} are real, half generated, in random order. Look as long as you like, then
answer <b>real</b> (<kbd>R</kbd> or <kbd>←</kbd>) or <b>generated</b> (<kbd>G</kbd> or
<kbd>→</kbd>). You will not be told whether you were right: every answer is saved as you give
it, so you can stop and come back later.</p>
<form id="name-form" hidden><label>Your name or initials:
<input id="name" autocomplete="off" maxlength="64"></label> <button>Start</button></form>
<div id="rating" hidden>
<img id="card" width="{size[0]}" height="{size[1]}" alt="the image to judge">
<div class="answers">
<button id="real" disabled>Real <kbd>R</kbd> <kbd>←</kbd></button>
<button id="generated" disabled>Generated <kbd>G</kbd> <kbd>→</kbd></button>
</div>
<div class="progress"><span id="count"></span> <progress id="progress" value="0" max="{total}">
</progress></div>
</div>
<div id="done" hidden><p id="done-text"></p></div>
<p id="problem" hidden></p>
<p class="who" id="who" hidden>rating as <span id="rater"></span>
<button id="change" type="button" hidden>not you?</button></p>
</main>
<script>{SCRIPT}</script>
</body></html>
"""
