// lookalike's page: pick, drop or paste an image; see the images that look like it; select one to search with it.
// Plain JavaScript, no build step, nothing loaded from elsewhere. Talks to the HTTP API of the same server.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const els = {
    stats: $("stats"), drop: $("drop"), pick: $("pick"), file: $("file"), k: $("k"), fast: $("fast"),
    preview: $("preview"), previewImg: $("preview-img"), previewCaption: $("preview-caption"), hint: $("drop-hint"),
    summary: $("summary"), error: $("error"), empty: $("empty"), grid: $("grid"),
    tokenForm: $("token-form"), token: $("token"), resultsTitle: $("results-title"),
  };

  const { api, setToken, withToken } = window.lookalikeClient; // client.js: the token and API calls

  // --- small helpers ------------------------------------------------------------------------------------------------
  function baseName(path) {
    const parts = String(path).split(/[\\/]/);
    return parts[parts.length - 1] || String(path);
  }

  function formatBytes(bytes) {
    const units = ["B", "KB", "MB", "GB", "TB"];
    let value = bytes;
    let unit = 0;
    while (value >= 1000 && unit < units.length - 1) {
      value /= 1000;
      unit += 1;
    }
    return (unit ? value.toFixed(value < 10 ? 1 : 0) : String(value)) + " " + units[unit];
  }

  function plural(count, word) {
    return count.toLocaleString() + " " + word + (count === 1 ? "" : "s");
  }

  function showError(message) {
    els.error.textContent = message;
    els.error.hidden = !message;
  }

  function needToken(error) {
    if (error && error.status === 401) {
      els.tokenForm.hidden = false;
      els.token.focus();
      return true;
    }
    return false;
  }

  // --- collection stats ---------------------------------------------------------------------------------------
  async function loadStats() {
    try {
      const s = await api("/api/stats");
      const model = String(s.embedder || "").split("@")[0] || "unknown model";
      const parts = [plural(s.images, "image")];
      if (s.skipped) parts.push(s.skipped.toLocaleString() + " skipped");
      const bytes = Object.values(s.bytes_on_disk || {}).reduce((sum, size) => sum + size, 0);
      parts.push(model, s.index_factory + " index (" + plural(s.index_vectors, "vector") + ")", formatBytes(bytes));
      els.stats.textContent = parts.join(" · ");
      els.stats.title = s.embedder + ", " + s.dim + "-d, " + s.metric;
      return true;
    } catch (error) {
      els.stats.textContent = "Collection unavailable";
      if (!needToken(error)) showError(error.message);
      return false;
    }
  }

  // --- searching ----------------------------------------------------------------------------------------------
  let sequence = 0; // only the latest search may draw its results
  let previewUrl = null;

  function setPreview(src, caption, isBlob) {
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = isBlob ? src : null;
    els.previewImg.src = src;
    els.previewImg.alt = "Query: " + caption;
    els.previewCaption.textContent = caption;
    els.preview.hidden = false;
    els.hint.textContent = "Drop or paste another image, or";
    els.pick.textContent = "Choose another…";
  }

  async function run(request, caption) {
    const mine = ++sequence;
    showError("");
    els.summary.textContent = "Searching…";
    els.grid.setAttribute("aria-busy", "true");
    try {
      const body = await request();
      if (mine !== sequence) return;
      render(body, caption);
    } catch (error) {
      if (mine !== sequence) return;
      els.summary.textContent = "";
      els.grid.replaceChildren();
      delete els.grid.dataset.query;
      els.empty.hidden = false;
      if (!needToken(error)) showError(error.message);
    } finally {
      if (mine === sequence) els.grid.removeAttribute("aria-busy");
    }
  }

  function searchFile(file) {
    if (!file) return;
    const name = file.name || "pasted image";
    setPreview(URL.createObjectURL(file), name, true);
    if (location.hash) history.pushState(null, "", location.pathname + location.search);
    const form = new FormData();
    form.append("image", file, name);
    form.append("k", els.k.value);
    if (els.fast.checked) form.append("fast", "true");
    run(() => api("/api/search", { method: "POST", body: form }), name);
  }

  function searchId(id) {
    setPreview(withToken("/api/thumbs/" + id), "image #" + id, false);
    run(async () => {
      const body = await api("/api/search?id=" + encodeURIComponent(id) + "&k=" + encodeURIComponent(els.k.value));
      setPreview(withToken("/api/thumbs/" + id), baseName(body.query.path) + " (#" + id + ")", false);
      return body;
    }, "#" + id);
  }

  function render(body, caption) {
    const results = body.results || [];
    els.grid.replaceChildren();
    els.empty.hidden = results.length > 0;
    if (!results.length) els.empty.textContent = "No results: the collection is empty.";
    const queryId = body.query && body.query.id;
    const cards = results.map((hit, rank) => card(hit, rank + 1, hit.id === queryId));
    if (results.some((hit) => typeof hit.copy === "boolean")) {
      // The accurate search says which results are copies of the query: show them apart, copies first.
      const copies = cards.filter((item, index) => results[index].copy);
      const others = cards.filter((item, index) => !results[index].copy);
      if (copies.length) els.grid.append(groupTitle("Copies", copies.length), ...copies);
      if (others.length) els.grid.append(groupTitle("Look-alikes", others.length), ...others);
    } else {
      els.grid.append(...cards);
    }
    els.grid.dataset.query = queryId ? "id:" + queryId : "upload:" + caption;
    els.summary.textContent = plural(results.length, "result") + " in " + Math.round(body.took_ms) + " ms";
  }

  function groupTitle(text, count) {
    const item = document.createElement("li");
    item.className = "group-title";
    item.setAttribute("role", "presentation");
    const heading = document.createElement("h3");
    heading.textContent = text + " (" + count + ")";
    item.appendChild(heading);
    return item;
  }

  function card(hit, rank, isQuery) {
    const name = baseName(hit.path);
    const item = document.createElement("li");
    item.className = "card" + (isQuery ? " is-query" : "");
    item.dataset.id = hit.id;

    const button = document.createElement("button");
    button.type = "button";
    button.className = "thumb";
    button.setAttribute("aria-label", "Search with " + name + " (#" + hit.id + ")");
    button.title = "Search with this image";
    const img = document.createElement("img");
    img.src = withToken("/api/thumbs/" + hit.id);
    img.alt = "";
    img.loading = "lazy";
    img.decoding = "async";
    img.addEventListener("error", () => item.classList.add("broken"), { once: true });
    button.appendChild(img);
    button.addEventListener("click", () => {
      if (idFromHash() === String(hit.id)) searchId(String(hit.id));
      else location.hash = "id=" + hit.id;
    });

    const meta = document.createElement("div");
    meta.className = "meta";
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = hit.score.toFixed(3);
    score.title = "cosine similarity (1 = the same picture)";
    const badge = document.createElement("span");
    badge.className = "rank";
    badge.textContent = isQuery ? "query" : "#" + rank;
    const open = document.createElement("a");
    open.className = "open";
    open.href = withToken("/api/images/" + hit.id);
    open.target = "_blank";
    open.rel = "noopener noreferrer";
    open.textContent = "Original";
    open.setAttribute("aria-label", "Open the original of " + name);
    meta.append(badge, score);
    if (typeof hit.copy_score === "number") {
      const copyScore = "copy score " + hit.copy_score.toFixed(2) + " (a copy from 0.50)";
      score.title += "; " + copyScore;
      if (hit.copy) {
        // Look-alikes already sit under their own heading: only copies need a badge.
        const copy = document.createElement("span");
        copy.className = "copy";
        copy.textContent = "copy";
        copy.title = copyScore;
        meta.append(copy);
      }
    }
    if (hit.evidence && hit.evidence.verified) meta.append(whyButton(hit, item, img));
    meta.append(open);

    const file = document.createElement("p");
    file.className = "name";
    file.textContent = name;
    file.title = hit.path;

    const bar = document.createElement("div");
    bar.className = "meter";
    bar.style.setProperty("--score", String(Math.max(0, Math.min(1, hit.score))));
    bar.setAttribute("aria-hidden", "true");

    item.append(button, bar, meta, file);
    return item;
  }

  // --- why a hit is a copy: the matched region and the verified matches, drawn ---------------------------------
  const SVG = "http://www.w3.org/2000/svg";
  const SIDE = 240; // each picture's box in the drawing, in SVG units
  const GAP = 48;

  function svg(name, attributes) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
    return node;
  }

  function fitted(image, left) {
    // The picture's box, keeping its aspect ratio inside SIDE x SIDE (square until the image has loaded).
    const width = image.naturalWidth || 1;
    const height = image.naturalHeight || 1;
    const scale = SIDE / Math.max(width, height);
    return { x: left + (SIDE - width * scale) / 2, y: (SIDE - height * scale) / 2, w: width * scale, h: height * scale };
  }

  function describe(evidence) {
    const [left, top, right, bottom] = evidence.box;
    const whole = left === 0 && top === 0 && right === 1 && bottom === 1;
    const where = whole ? "all of the query" : "part of the query";
    const mirrored = evidence.mirrored ? ", the query mirrored" : "";
    return "Found by the " + evidence.view + " view (" + where + "); verified by " + evidence.inliers +
      " local matches under one perspective mapping" + mirrored + ".";
  }

  function evidenceFigure(hit, hitImage) {
    const evidence = hit.evidence;
    const query = fitted(els.previewImg, 0);
    const found = fitted(hitImage, SIDE + GAP);
    const drawing = svg("svg", { viewBox: "0 0 " + (2 * SIDE + GAP) + " " + SIDE, class: "matches", role: "img" });
    drawing.setAttribute("aria-label", "The query and " + baseName(hit.path) + ", with their matched points joined");
    drawing.append(
      svg("image", { href: els.previewImg.currentSrc || els.previewImg.src, x: query.x, y: query.y,
        width: query.w, height: query.h, preserveAspectRatio: "none" }),
      svg("image", { href: hitImage.currentSrc || hitImage.src, x: found.x, y: found.y,
        width: found.w, height: found.h, preserveAspectRatio: "none" }),
    );
    const region = evidence.region || evidence.box;
    drawing.append(svg("rect", { class: "region", x: query.x + region[0] * query.w, y: query.y + region[1] * query.h,
      width: (region[2] - region[0]) * query.w, height: (region[3] - region[1]) * query.h }));
    for (const [qx, qy, hx, hy] of evidence.matches || []) {
      drawing.append(svg("line", { class: "match", x1: query.x + qx * query.w, y1: query.y + qy * query.h,
        x2: found.x + hx * found.w, y2: found.y + hy * found.h }));
    }
    const figure = document.createElement("figure");
    const caption = document.createElement("figcaption");
    caption.textContent = describe(evidence);
    figure.append(drawing, caption);
    const row = document.createElement("li");
    row.className = "evidence";
    row.setAttribute("role", "presentation");
    row.append(figure);
    return row;
  }

  function whyButton(hit, item, hitImage) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "why";
    button.textContent = "Why?";
    button.setAttribute("aria-expanded", "false");
    button.setAttribute("aria-label", "Why " + baseName(hit.path) + " is a copy of the query");
    let shown = null;
    button.addEventListener("click", () => {
      if (shown) {
        shown.remove();
        shown = null;
      } else {
        shown = evidenceFigure(hit, hitImage);
        item.after(shown);
      }
      button.setAttribute("aria-expanded", String(Boolean(shown)));
    });
    return button;
  }

  function idFromHash() {
    const match = /^#id=(\d+)$/.exec(location.hash);
    return match ? match[1] : null;
  }

  // --- wiring ---------------------------------------------------------------------------------------------------
  els.previewImg.addEventListener("error", () => {
    els.preview.hidden = true; // not a picture the browser can show (the server says why)
  });
  els.pick.addEventListener("click", () => els.file.click());
  els.file.addEventListener("change", () => {
    searchFile(els.file.files && els.file.files[0]);
    els.file.value = "";
  });

  let dragDepth = 0;
  document.addEventListener("dragenter", (event) => {
    if (!event.dataTransfer || !Array.from(event.dataTransfer.types).includes("Files")) return;
    dragDepth += 1;
    els.drop.classList.add("dragging");
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) els.drop.classList.remove("dragging");
  });
  document.addEventListener("dragover", (event) => event.preventDefault());
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    dragDepth = 0;
    els.drop.classList.remove("dragging");
    const files = event.dataTransfer && event.dataTransfer.files;
    if (files && files.length) searchFile(files[0]);
  });
  document.addEventListener("paste", (event) => {
    const items = (event.clipboardData && event.clipboardData.items) || [];
    for (const item of items) {
      if (item.kind === "file" && item.type.startsWith("image/")) {
        event.preventDefault();
        searchFile(item.getAsFile());
        return;
      }
    }
  });

  window.addEventListener("hashchange", () => {
    const id = idFromHash();
    if (id) {
      searchId(id);
      els.resultsTitle.focus({ preventScroll: true });
    }
  });
  els.k.addEventListener("change", () => {
    const id = idFromHash();
    if (id) searchId(id);
  });

  els.tokenForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    setToken(els.token.value.trim());
    showError("");
    if (await loadStats()) {
      els.tokenForm.hidden = true;
      const id = idFromHash();
      if (id) searchId(id);
    }
  });

  loadStats().then((ok) => {
    const id = idFromHash();
    if (ok && id) searchId(id);
  });
})();
