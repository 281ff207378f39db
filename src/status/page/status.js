// The status page: polls /api/v1/status (and /api/v1/links) every REFRESH_MS and renders
// it. Everything from the engine is inserted as text, never as HTML.
"use strict";

const REFRESH_MS = 1500;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function num(v, digits) {
  return v === null || v === undefined ? "–" : Number(v).toFixed(digits === undefined ? 2 : digits);
}

function pct(v) {
  return v === null || v === undefined ? "–" : (100 * v).toFixed(1) + "%";
}

function age(unixS, nowS) {
  if (unixS === null || unixS === undefined) return "never";
  const s = Math.max(0, nowS - unixS);
  return s < 1 ? "just now" : s.toFixed(1) + " s ago";
}

function showValue(value) {
  if (!value) return "";
  if (value.vector) {
    const v = value.vector;
    return v.length <= 6 ? v.map((x) => Number(x).toFixed(2)).join(", ") : v.length + " values";
  }
  if (value.tokens) return "tokens [" + value.tokens.join(" ") + "]";
  return JSON.stringify(value);
}

function swatch(color) {
  const s = el("span", { class: "swatch" });
  s.style.background = color;
  return s;
}

function renderBudget(budget) {
  const box = document.getElementById("budget");
  box.replaceChildren();
  for (const b of budget) {
    if (b.budget === null) continue;
    const share = b.budget > 0 ? b.used / b.budget : 0;
    const fill = el("div", { class: share > 1 ? "fill over" : "fill" });
    fill.style.width = Math.min(100, 100 * share).toFixed(1) + "%";
    const unit = b.resource === "memory_mb" ? "MB" : "ms/frame";
    box.append(
      el("div", { class: "bar", "data-resource": b.resource },
        el("div", {}, `${b.resource}: ${num(b.used, 1)} of ${num(b.budget, 1)} ${unit}`),
        el("div", { class: "track" }, fill)));
  }
}

const cards = new Map();

function cameraCard(cam) {
  let card = cards.get(cam.id);
  if (!card) {
    const img = el("img", { alt: "latest frame of " + cam.id });
    card = {
      root: el("div", { class: "camera", id: "camera-" + cam.id, "data-camera": cam.id }),
      title: el("h3", {}, cam.id),
      img,
      facts: el("div", { class: "facts" }),
      legend: el("div", { class: "legend" }),
      table: el("table", { class: "outputs" }),
    };
    card.root.append(card.title, el("a", { href: snapshotUrl(cam.id, true) }, img),
      card.facts, card.legend, card.table);
    cards.set(cam.id, card);
  }
  return card;
}

function snapshotUrl(id, overlay) {
  return "/api/v1/cameras/" + encodeURIComponent(id) + "/snapshot.jpg" + (overlay ? "?overlay=1" : "");
}

function renderCameras(status) {
  const box = document.getElementById("cameras");
  const seen = new Set();
  for (const cam of status.cameras) {
    seen.add(cam.id);
    const card = cameraCard(cam);
    if (cam.frames > 0) {
      card.img.src = snapshotUrl(cam.id, true) + "&t=" + cam.frames;
    }
    card.facts.replaceChildren(
      el("span", { class: "state-" + cam.state }, cam.state),
      el("span", {}, `${num(cam.fps, 1)} fps analysed`),
      el("span", {}, `${cam.frames} frames`),
      el("span", {}, `${cam.dropped} dropped`),
      el("span", {}, `${cam.reconnects} reconnects`),
      el("span", {}, "last frame " + age(cam.last_frame_unix_s, status.unix_s)),
      el("div", { class: "muted" }, cam.uri));
    card.legend.replaceChildren(...cam.boxes.map((b) =>
      el("span", {}, swatch(b.color), `${b.model}: ${b.count} boxes (exact)`)));
    const head = el("tr", {}, el("th", {}, "model"), el("th", {}, "output"), el("th", {}, "how"),
      el("th", {}, "sources"), el("th", {}, "score"), el("th", {}, "uncertainty"));
    const rows = cam.outputs.map((r) => {
      let how = r.how;
      if (r.how === "exact" && r.profiling) how = "exact (profiling)";
      if (r.how === "reused") {
        // Policy hybrid: the model's last exact output on this camera, and how old it is.
        how = `reused (frame ${r.from_seq}${r.age_s === undefined ? "" : `, ${num(r.age_s, 1)} s old`})`;
      }
      return el("tr", { "data-model": r.model },
        el("td", {}, r.model),
        el("td", {}, r.how === "unavailable" ? r.reason : showValue(r.value)),
        el("td", { class: "how-" + r.how }, how),
        el("td", {}, (r.sources || []).join(", ")),
        el("td", { class: "num" }, r.how === "predicted" ? num(r.score) : ""),
        el("td", { class: "num" }, r.how === "predicted" ? num(r.uncertainty, 3) : ""));
    });
    card.table.replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
    if (card.root.parentNode !== box) box.append(card.root);
  }
  for (const [id, card] of cards) {
    if (!seen.has(id)) {
      card.root.remove();
      cards.delete(id);
    }
  }
}

function renderModels(status) {
  const body = document.querySelector("#models tbody");
  body.replaceChildren(...status.models.map((m) => el("tr", { "data-model": m.id },
    el("td", {}, swatch(m.color), m.id),
    el("td", {}, m.active ? "yes" : "no (predicted)"),
    el("td", { class: "num" }, pct(m.measured_accuracy)),
    el("td", { class: "num" }, num(m.ensemble_score)),
    el("td", { class: "num" }, m.executions),
    el("td", { class: "num" }, m.predictions),
    el("td", { class: "num" }, m.failures))));
}

function renderLinks(links) {
  const head = document.querySelector("#links thead");
  const body = document.querySelector("#links tbody");
  head.replaceChildren(el("tr", {}, el("th", {}, "source \\ target"),
    ...links.models.map((m) => el("th", {}, m))));
  const rows = links.models.map((src, i) => el("tr", {},
    el("th", {}, src),
    ...links.models.map((_, j) => el("td", { class: "num" },
      i === j ? "·" : num(links.scores[i] && links.scores[i][j])))));
  if (links.ensembles.length) {
    rows.push(el("tr", {}, el("th", {}, "ensemble of the active set"),
      ...links.ensembles.map((s) => el("td", { class: "num" }, num(s)))));
  }
  body.replaceChildren(...rows);
}

function renderReselections(status) {
  const body = document.querySelector("#reselections tbody");
  body.replaceChildren(...status.reselections.map((r) => el("tr", {},
    el("td", {}, new Date(r.unix_s * 1000).toLocaleTimeString()),
    el("td", {}, r.cause),
    el("td", { class: "num" }, r.frames_seen),
    el("td", {}, r.active.join(", ") || "(none)"),
    el("td", { class: "num" }, num(r.objective)),
    el("td", {}, r.reason))));
}

function renderSummary(status) {
  document.getElementById("pipeline").textContent = status.pipeline;
  document.getElementById("phase").textContent = status.phase;
  document.getElementById("active").textContent = status.active.join(", ") || "(none)";
  document.getElementById("expected").textContent = pct(status.expected_accuracy);
  const n = status.next_reselection;
  let next = "–";
  if (n && n.at.in_frames !== undefined) next = `in ${n.at.in_frames} frames`;
  else if (n && n.in_video_s !== null) next = `in ${n.in_video_s.toFixed(1)} s of video`;
  document.getElementById("next").textContent = next;
  document.getElementById("updated").textContent =
    "updated " + new Date(status.unix_s * 1000).toLocaleTimeString();
}

async function refresh() {
  try {
    const [status, links] = await Promise.all([
      fetch("/api/v1/status", { cache: "no-store" }).then((r) => r.json()),
      fetch("/api/v1/links", { cache: "no-store" }).then((r) => r.json()),
    ]);
    renderSummary(status);
    renderBudget(status.budget);
    renderCameras(status);
    renderModels(status);
    renderLinks(links);
    renderReselections(status);
  } catch (e) {
    document.getElementById("updated").textContent = "cannot reach the engine: " + e;
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
