// rlx serve: the click-to-segment page. Plain JavaScript and canvas, no build step.
//
// Two stacked canvases at the image's own pixel size (CSS scales them to fit):
//   #view  -- the image with the current mask (or every mask) blended over it;
//   #marks -- the clicks and the box, drawn on top, and where the pointer events land.
// Keeping the marks on their own canvas means #view changes only where a mask is.
// The page talks to the server only through the JSON API documented in the README.
"use strict";

const $ = (id) => document.getElementById(id);
const TINT = [30, 144, 255];          // the mask colour (as rlx segment's overlay)
const FG = "#00dc00", BG = "#e61414", BOX = "#ffc800";
const DRAG_MIN = 5;                   // screen pixels before a press becomes a box

const S = {
  id: null, width: 0, height: 0, bitmap: null, base: null,
  points: [], box: null, history: [],
  masks: [], best: 0, selected: 0,    // [{png, score, area, bits}]
  everything: null,                   // {annotations, bits: [Uint8Array]}
  seq: 0, version: 0, synthetic: false,
};

function setState(state) { document.body.dataset.state = state; }

function status(text, error = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", error);
}

function busy(on) { $("busy").hidden = !on; }

async function api(method, path, body, json = true) {
  const init = { method };
  if (body !== undefined) {
    init.body = json ? JSON.stringify(body) : body;
    if (json) init.headers = { "Content-Type": "application/json" };
  }
  const r = await fetch(path, init);
  let data = null;
  try { data = await r.json(); } catch (e) { data = { error: `HTTP ${r.status}` }; }
  if (!r.ok) {
    const err = new Error(data.error || `HTTP ${r.status}`);
    err.status = r.status;
    throw err;
  }
  return data;
}

// ---- health: model, profile, synthetic weights ---------------------------------------------

async function health() {
  try {
    const h = await api("GET", "/api/health");
    $("model-info").textContent =
      `model ${h.model} · profile ${h.profile} (${h.backend}) · device ${h.device}`;
    S.synthetic = h.synthetic;
    if (h.synthetic) {
      $("synthetic").textContent = "SYNTHETIC weights: " + h.warning;
      $("synthetic").hidden = false;
    }
    S.canEverything = !!h.everything;
  } catch (e) {
    $("model-info").textContent = "server not reachable";
  }
}

// ---- opening an image -------------------------------------------------------------------------

async function openFile(file) {
  if (!file) return;
  const previous = S.id;
  Object.assign(S, { id: null, points: [], box: null, history: [], masks: [], everything: null });
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch (e) {
    status(`${file.name}: the browser cannot read this file as an image`, true);
    return;
  }
  S.bitmap = bitmap;
  S.width = bitmap.width; S.height = bitmap.height;
  for (const c of [$("view"), $("marks")]) { c.width = S.width; c.height = S.height; }
  const ctx = $("view").getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  S.base = ctx.getImageData(0, 0, S.width, S.height);
  $("layers").hidden = false;
  drawMarks(); renderCandidates(); updateButtons();
  setState("encoding"); busy(true);
  const t0 = performance.now();
  const timer = setInterval(() => status(
    `Encoding ${file.name} (${S.width}x${S.height}) on the server... ` +
    `${((performance.now() - t0) / 1000).toFixed(1)} s`), 100);
  if (previous) api("DELETE", `/api/images/${previous}`).catch(() => {});
  try {
    const form = new FormData();
    form.append("file", file, file.name);
    const r = await api("POST", "/api/images", form, false);
    if (r.width !== S.width || r.height !== S.height) {
      throw new Error(`the server decoded ${r.width}x${r.height}, the browser ${S.width}x${S.height}`);
    }
    S.id = r.id;
    $("stage").dataset.imageId = r.id;
    setState("ready");
    status(`Encoded in ${(r.encode_ms / 1000).toFixed(2)} s. Click an object; shift-click or ` +
           "right-click for background; drag for a box.");
  } catch (e) {
    setState("error");
    status(`Upload failed: ${e.message}`, true);
  } finally {
    clearInterval(timer); busy(false); updateButtons();
  }
}

// ---- prompts ------------------------------------------------------------------------------------

function imagePoint(ev) {
  const r = $("marks").getBoundingClientRect();
  const x = (ev.clientX - r.left) * S.width / r.width;
  const y = (ev.clientY - r.top) * S.height / r.height;
  return [Math.min(Math.max(x, 0), S.width), Math.min(Math.max(y, 0), S.height)];
}

let press = null;

function onPointerDown(ev) {
  if (!S.id) return;
  ev.preventDefault();
  press = { x: ev.clientX, y: ev.clientY, p: imagePoint(ev), button: ev.button, shift: ev.shiftKey, drag: false };
  $("marks").setPointerCapture(ev.pointerId);
}

function onPointerMove(ev) {
  if (!press) return;
  if (Math.hypot(ev.clientX - press.x, ev.clientY - press.y) >= DRAG_MIN && press.button === 0) press.drag = true;
  if (press.drag) drawMarks(boxOf(press.p, imagePoint(ev)));
}

function boxOf(a, b) {
  return [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
}

function onPointerUp(ev) {
  if (!press) return;
  const p = press; press = null;
  S.history.push({ points: S.points.slice(), box: S.box });
  if (p.drag) {
    S.box = boxOf(p.p, imagePoint(ev));
  } else {
    const label = (p.shift || p.button === 2) ? 0 : 1;
    S.points.push([p.p[0], p.p[1], label]);
  }
  S.everything = null;
  predict();
}

async function predict() {
  drawMarks(); updateButtons();
  if (!S.points.length && !S.box) {
    S.masks = []; render(); renderCandidates(); updateButtons();
    return;
  }
  const seq = ++S.seq;
  const body = {
    points: S.points.map(([x, y, l]) => [round2(x), round2(y), l]),
    box: S.box ? S.box.map(round2) : null,
    multimask: $("multimask").checked,
    refine: $("refine").checked && S.masks.length > 0,
  };
  setState("predicting");
  try {
    const r = await api("POST", `/api/images/${S.id}/masks`, body);
    const bits = await Promise.all(r.masks.map((m) => decodePng(m.png)));
    if (seq !== S.seq) return;      // a newer click has been sent meanwhile
    S.masks = r.masks.map((m, i) => ({ ...m, bits: bits[i] }));
    S.best = r.best; S.selected = r.best;
    status(`${r.masks.length} mask${r.masks.length > 1 ? "s" : ""}, best score ` +
           `${r.masks[r.best].score.toFixed(3)}; decoder ${r.decode_ms.toFixed(1)} ms`);
    setState("ready");
  } catch (e) {
    if (seq !== S.seq) return;
    setState("ready");
    status(e.status === 404 ? "The server no longer holds this image: open it again." : e.message, true);
    return;
  }
  render(); renderCandidates(); updateButtons();
}

function round2(v) { return Math.round(v * 100) / 100; }

async function decodePng(b64) {
  const img = new Image();
  img.src = "data:image/png;base64," + b64;
  await img.decode();
  const c = document.createElement("canvas");
  c.width = S.width; c.height = S.height;
  const ctx = c.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, S.width, S.height).data;
  const bits = new Uint8Array(S.width * S.height);
  for (let i = 0; i < bits.length; i++) bits[i] = d[4 * i] > 127 ? 1 : 0;
  return bits;
}

// ---- drawing -------------------------------------------------------------------------------------

function render() {
  if (!S.base) return;
  const ctx = $("view").getContext("2d", { willReadFrequently: true });
  const out = new ImageData(new Uint8ClampedArray(S.base.data), S.width, S.height);
  const d = out.data;
  if (S.everything) {
    // each pixel takes the colour of the smallest mask covering it (big masks first, small on
    // top), blended once: overlapping masks do not wash the image out
    const owner = new Int32Array(S.width * S.height).fill(-1);
    const order = S.everything.bits.map((b, k) => k)
      .sort((a, b) => S.everything.areas[b] - S.everything.areas[a]);
    for (const k of order) {
      const bits = S.everything.bits[k];
      for (let i = 0; i < bits.length; i++) if (bits[i]) owner[i] = k;
    }
    const colours = S.everything.bits.map((b, k) => colour(k));
    for (let i = 0, j = 0; i < owner.length; i++, j += 4) {
      const k = owner[i];
      if (k < 0) continue;
      const rgb = colours[k];
      d[j] = (d[j] + rgb[0] + 1) >> 1;
      d[j + 1] = (d[j + 1] + rgb[1] + 1) >> 1;
      d[j + 2] = (d[j + 2] + rgb[2] + 1) >> 1;
    }
  } else if (S.masks.length) {
    blend(d, S.masks[S.selected].bits, TINT);
  }
  ctx.putImageData(out, 0, 0);
  $("stage").dataset.version = String(++S.version);
}

function blend(d, bits, rgb) {
  for (let i = 0, j = 0; i < bits.length; i++, j += 4) {
    if (!bits[i]) continue;
    d[j] = (d[j] + rgb[0] + 1) >> 1;
    d[j + 1] = (d[j + 1] + rgb[1] + 1) >> 1;
    d[j + 2] = (d[j + 2] + rgb[2] + 1) >> 1;
  }
}

function colour(k) {   // well-spread hues, golden-angle steps
  const h = (k * 137.508) % 360, s = 0.75, l = 0.55;
  const f = (n) => {
    const a = s * Math.min(l, 1 - l), t = (n + h / 30) % 12;
    return Math.round(255 * (l - a * Math.max(-1, Math.min(t - 3, 9 - t, 1))));
  };
  return [f(0), f(8), f(4)];
}

function drawMarks(preview) {
  const c = $("marks"), ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  const r = Math.max(4, Math.round(Math.min(S.width, S.height) / 90));
  ctx.lineWidth = Math.max(2, r / 2.5);
  const box = preview || S.box;
  if (box) {
    ctx.strokeStyle = BOX;
    ctx.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]);
  }
  for (const [x, y, l] of S.points) {
    ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI);
    ctx.fillStyle = l ? FG : BG; ctx.fill();
    ctx.strokeStyle = "#fff"; ctx.stroke();
  }
}

function renderCandidates() {
  const el = $("candidates");
  el.textContent = "";
  if (S.everything) {
    const n = S.everything.bits.length;
    el.textContent = `${n} object${n === 1 ? "" : "s"} found`;
    return;
  }
  S.masks.forEach((m, i) => {
    const b = document.createElement("button");
    b.textContent = `mask ${i + 1}: score ${m.score.toFixed(3)}`;
    b.className = "candidate" + (i === S.selected ? " selected" : "");
    b.onclick = () => { S.selected = i; render(); renderCandidates(); };
    el.appendChild(b);
  });
}

function updateButtons() {
  const ready = !!S.id;
  $("undo").disabled = !ready || !S.history.length;
  $("clear").disabled = !ready || (!S.points.length && !S.box && !S.everything);
  $("everything").disabled = !ready || S.canEverything === false;
  $("download-mask").disabled = !S.masks.length || !!S.everything;
  $("download-coco").disabled = !S.everything;
}

// ---- everything ----------------------------------------------------------------------------------

function rleDecode(rle) {
  // COCO run-length encoding: column-major runs, starting with a run of zeros; `counts` is a
  // list of numbers or the compressed string form (6 bits per char, delta-coded from run 2).
  const [h, w] = rle.size;
  let counts = rle.counts;
  if (typeof counts === "string") {
    const s = counts, out = [];
    let p = 0;
    while (p < s.length) {
      let x = 0, k = 0, more = 1;
      while (more) {
        const c = s.charCodeAt(p) - 48;
        x |= (c & 0x1f) << (5 * k);
        more = c & 0x20; p++; k++;
        if (!more && (c & 0x10)) x |= -1 << (5 * k);
      }
      if (out.length > 2) x += out[out.length - 2];
      out.push(x);
    }
    counts = out;
  }
  const bits = new Uint8Array(w * h);
  let i = 0, v = 0;
  for (const n of counts) {
    if (v) for (let j = i; j < i + n; j++) bits[(j % h) * w + Math.floor(j / h)] = 1;
    i += n; v ^= 1;
  }
  return bits;
}

async function everything() {
  if (!S.id) return;
  setState("predicting"); busy(true);
  const t0 = performance.now();
  const timer = setInterval(() => status(`Segmenting everything... ` +
    `${((performance.now() - t0) / 1000).toFixed(1)} s`), 100);
  try {
    const r = await api("POST", `/api/images/${S.id}/everything`, {
      points_per_side: parseInt($("pps").value, 10),
      pred_iou_thresh: parseFloat($("iou-thresh").value),
      stability_score_thresh: parseFloat($("stab-thresh").value),
      box_nms_thresh: parseFloat($("nms-thresh").value),
    });
    S.history.push({ points: S.points.slice(), box: S.box });
    S.points = []; S.box = null; S.masks = [];
    S.everything = { response: r, bits: r.annotations.map((a) => rleDecode(a.segmentation)),
                     areas: r.annotations.map((a) => a.area) };
    status(`${r.annotations.length} masks in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    setState("ready");
    drawMarks(); render(); renderCandidates();
  } catch (e) {
    setState("ready");
    status(`Segment everything failed: ${e.message}`, true);
  } finally {
    clearInterval(timer); busy(false); updateButtons();
  }
}

// ---- downloads, undo, clear ----------------------------------------------------------------------

function download(name, href) {
  const a = document.createElement("a");
  a.href = href; a.download = name;
  document.body.appendChild(a); a.click(); a.remove();
}

function downloadMask() {
  const m = S.masks[S.selected];
  if (m) download("mask.png", "data:image/png;base64," + m.png);
}

function downloadCoco() {
  if (!S.everything) return;
  const blob = new Blob([JSON.stringify(S.everything.response, null, 1)], { type: "application/json" });
  const url = URL.createObjectURL(blob);
  download("masks.coco.json", url);
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function undo() {
  const prev = S.history.pop();
  if (!prev) return;
  S.points = prev.points; S.box = prev.box; S.everything = null;
  predict();
}

function clearAll() {
  if (S.points.length || S.box || S.everything) S.history.push({ points: S.points.slice(), box: S.box });
  S.points = []; S.box = null; S.everything = null;
  predict();
}

// ---- wiring ----------------------------------------------------------------------------------------

function init() {
  $("file").addEventListener("change", (ev) => openFile(ev.target.files[0]));
  const marks = $("marks");
  marks.addEventListener("pointerdown", onPointerDown);
  marks.addEventListener("pointermove", onPointerMove);
  marks.addEventListener("pointerup", onPointerUp);
  marks.addEventListener("contextmenu", (ev) => ev.preventDefault());
  $("undo").onclick = undo;
  $("clear").onclick = clearAll;
  $("everything").onclick = everything;
  $("download-mask").onclick = downloadMask;
  $("download-coco").onclick = downloadCoco;
  $("multimask").onchange = () => predict();
  document.addEventListener("keydown", (ev) => {
    if ((ev.ctrlKey || ev.metaKey) && ev.key === "z") { ev.preventDefault(); undo(); }
    if (ev.key === "Escape") clearAll();
  });
  for (const t of ["dragenter", "dragover"]) {
    document.addEventListener(t, (ev) => { ev.preventDefault(); document.body.classList.add("dragging"); });
  }
  document.addEventListener("dragleave", () => document.body.classList.remove("dragging"));
  document.addEventListener("drop", (ev) => {
    ev.preventDefault(); document.body.classList.remove("dragging");
    if (ev.dataTransfer.files.length) openFile(ev.dataTransfer.files[0]);
  });
  health();
}

init();
