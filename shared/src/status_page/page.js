// Portico's status page: fetches page.json every `refresh` seconds (query parameter,
// default 2) and redraws. Every value is set with textContent: backend names, probe
// reasons and event texts come from configs and from backends, never trusted as HTML.
"use strict";

const params = new URLSearchParams(location.search);
const REFRESH_S = Math.max(0.2, Number(params.get("refresh")) || 2);

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function badge(word) {
  return el("span", word, "badge " + word.split(":")[0]);
}

function row(cells, attrs) {
  const tr = el("tr");
  for (const c of cells) {
    const td = el("td");
    if (c instanceof Node) td.appendChild(c); else td.textContent = String(c);
    tr.appendChild(td);
  }
  for (const [k, v] of Object.entries(attrs || {})) tr.setAttribute(k, v);
  return tr;
}

function renderVips(vips) {
  const box = document.getElementById("vips");
  box.replaceChildren();
  if (vips.length === 0) { box.appendChild(el("p", "no VIPs", "muted")); return; }
  for (const v of vips) {
    const h = el("h3");
    h.appendChild(el("span", v.name));
    h.appendChild(badge(v.up ? "up" : "down"));
    h.appendChild(el("span", `${v.mode} on ${v.listen} · ${v.healthy}/${v.backends.length} healthy · ${v.active} open`, "muted"));
    box.appendChild(h);
    const t = el("table");
    t.setAttribute("data-vip", v.name);
    const head = el("thead");
    const hr = el("tr");
    for (const h of ["backend", "address", "state", "admin", "weight", "sessions", "last check"]) {
      hr.appendChild(el("th", h));
    }
    head.appendChild(hr);
    t.appendChild(head);
    const body = el("tbody");
    for (const b of v.backends) {
      body.appendChild(row(
        [b.name, b.address, badge(b.state), badge(b.admin), b.weight, b.active, el("span", b.check, "check")],
        { "data-backend": `${v.name}/${b.name}`, "data-state": b.state, "data-admin": b.admin },
      ));
    }
    t.appendChild(body);
    box.appendChild(t);
  }
}

function renderSites(sites) {
  const body = document.querySelector("#sites tbody");
  body.replaceChildren();
  document.getElementById("sites-section").hidden = sites.length === 0;
  for (const s of sites) {
    body.appendChild(row(
      [s.name, badge(s.up ? "up" : "down"), s.override || "-", `${s.passing}/${s.keepalives}`, s.since],
      { "data-site": s.name, "data-state": s.up ? "up" : "down" },
    ));
  }
}

function renderNames(names) {
  const body = document.querySelector("#names tbody");
  body.replaceChildren();
  document.getElementById("names-section").hidden = names.length === 0;
  for (const n of names) body.appendChild(row([n.name, n.answer], { "data-name": n.name }));
}

function renderEvents(events) {
  const list = document.getElementById("events");
  list.replaceChildren();
  for (const e of events.slice().reverse()) list.appendChild(el("li", e));
}

async function refresh() {
  try {
    const resp = await fetch("page.json", { cache: "no-store" });
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    const doc = await resp.json();
    renderVips(doc.vips);
    renderSites(doc.sites);
    renderNames(doc.names);
    renderEvents(doc.events);
    document.getElementById("updated").textContent =
      "updated " + new Date().toLocaleTimeString() + " · every " + REFRESH_S + " s";
    document.getElementById("stale").hidden = true;
    document.body.setAttribute("data-rendered", String(Date.now()));
  } catch (e) {
    document.getElementById("stale").hidden = false;
  } finally {
    setTimeout(refresh, REFRESH_S * 1000);
  }
}

refresh();
