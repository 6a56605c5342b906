// lookalike's Duplicates view: the collection's duplicate groups, paged, the keeper framed; mark a group
// "not duplicates" or "keep all" (stored in the catalog; nothing here moves or deletes a file).
// Plain JavaScript, nothing loaded from elsewhere. Talks to the HTTP API of the same server.
"use strict";

(function () {
  const PAGE = 20;
  const $ = (id) => document.getElementById(id);
  const els = {
    tier: $("dup-tier"), prev: $("dup-prev"), next: $("dup-next"), summary: $("dup-summary"),
    error: $("dup-error"), groups: $("dup-groups"),
  };
  const { api, withToken } = window.lookalikeClient; // client.js: the token and API calls
  let offset = 0;
  let total = 0;
  let current = 0;

  function showError(message) {
    els.error.textContent = message || "";
    els.error.hidden = !message;
  }

  function baseName(path) {
    const parts = String(path).split(/[\\/]/);
    return parts[parts.length - 1] || String(path);
  }

  function figure(member, keeper) {
    const box = document.createElement("figure");
    if (member.id === keeper) box.className = "keep";
    const img = document.createElement("img");
    img.src = withToken("/api/thumbs/" + member.id);
    img.alt = baseName(member.path);
    img.loading = "lazy";
    const caption = document.createElement("figcaption");
    const label = member.id === keeper ? "keep" : "similarity " + member.similarity.toFixed(3);
    caption.textContent = label + " · " + member.path;
    box.append(img, caption);
    return box;
  }

  function groupItem(group, number) {
    const item = document.createElement("li");
    item.className = "dup-group";
    item.tabIndex = -1;
    const title = document.createElement("h2");
    title.textContent = "Group " + number + " · " + group.tier;
    const row = document.createElement("div");
    row.className = "dup-row";
    group.members.forEach((member) => row.append(figure(member, group.keep.id)));
    const actions = document.createElement("div");
    actions.className = "dup-actions";
    for (const [kind, text] of [["not-duplicates", "Not duplicates (n)"], ["keep-all", "Keep all (a)"]]) {
      const button = document.createElement("button");
      button.className = "button";
      button.type = "button";
      button.textContent = text;
      button.addEventListener("click", () => decide(group, kind));
      actions.append(button);
    }
    item.append(title, row, actions);
    item.dataset.index = String(number - 1 - offset);
    item.group = group;
    return item;
  }

  async function load() {
    showError("");
    try {
      const url = "/api/duplicates?tier=" + encodeURIComponent(els.tier.value) + "&offset=" + offset + "&limit=" + PAGE;
      const page = await api(url);
      total = page.total;
      els.groups.replaceChildren(...page.groups.map((group, i) => groupItem(group, offset + i + 1)));
      const last = Math.min(offset + PAGE, total);
      els.summary.textContent = total ? "Groups " + (offset + 1) + "–" + last + " of " + total : "No duplicates";
      els.prev.disabled = offset === 0;
      els.next.disabled = offset + PAGE >= total;
      select(Math.min(current, page.groups.length - 1));
    } catch (error) {
      showError(error.message);
    }
  }

  function select(index) {
    const items = Array.from(els.groups.children);
    if (!items.length) return;
    current = Math.max(0, Math.min(index, items.length - 1));
    items.forEach((item, i) => item.classList.toggle("current", i === current));
    items[current].focus();
  }

  async function decide(group, kind) {
    const words = kind === "not-duplicates" ? "these images are not duplicates" : "keep every image of this group";
    if (!window.confirm("Store the decision that " + words + "? Later groupings will respect it.")) return;
    try {
      await api("/api/duplicates/decisions", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ kind, ids: group.members.map((m) => m.id), confirm: true }),
      });
      await load();
    } catch (error) {
      showError(error.message);
    }
  }

  document.addEventListener("keydown", (event) => {
    if (event.target instanceof HTMLSelectElement || event.ctrlKey || event.metaKey || event.altKey) return;
    const item = els.groups.children[current];
    if (event.key === "j") select(current + 1);
    else if (event.key === "k") select(current - 1);
    else if ((event.key === "n" || event.key === "a") && item) decide(item.group, event.key === "n" ? "not-duplicates" : "keep-all");
  });
  els.tier.addEventListener("change", () => { offset = 0; current = 0; load(); });
  els.prev.addEventListener("click", () => { offset = Math.max(0, offset - PAGE); current = 0; load(); });
  els.next.addEventListener("click", () => { offset += PAGE; current = 0; load(); });
  load();
})();
