// Shared by every page: the token (kept in this browser's localStorage), API calls, and safe DOM building.
// Nothing from the API is ever inserted as HTML: el() sets text only.
"use strict";
const SL = (() => {
  const KEY = "suanli.token";
  const token = () => localStorage.getItem(KEY);
  const login = () => { location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search); };

  async function api(path, opts = {}) {
    const t = token();
    if (!t) { login(); throw new Error("not logged in"); }
    const headers = Object.assign({ Authorization: "Bearer " + t }, opts.headers || {});
    const r = await fetch(path, Object.assign({}, opts, { headers }));
    if (r.status === 401) { localStorage.removeItem(KEY); login(); throw new Error("token refused"); }
    if (!r.ok) {
      let msg = r.status + " " + r.statusText;
      try { msg = (await r.json()).detail || msg; } catch (e) { /* not JSON */ }
      const err = new Error(msg); err.status = r.status; throw err;
    }
    return opts.raw ? r : r.json();
  }

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const k of kids.flat()) {
      if (k === null || k === undefined) continue;
      e.append(k instanceof Node ? k : document.createTextNode(String(k)));
    }
    return e;
  }

  function rows(tbody, items, cells) {
    const frag = document.createDocumentFragment();
    for (const it of items) frag.append(el("tr", {}, cells(it).map((c) => c instanceof Node && c.tagName === "TD"
      ? c : el("td", {}, c))));
    tbody.replaceChildren(frag);
  }

  function showError(e) {
    const p = document.getElementById("error");
    if (!p) return;
    p.textContent = e ? String(e.message || e) : "";
    p.hidden = !e;
  }

  const pad = (n) => String(n).padStart(2, "0");
  function when(t) {
    if (t === null || t === undefined) return "";
    const d = new Date(t * 1000);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  function ago(t) {
    const s = Math.max(0, Date.now() / 1000 - t);
    if (s < 60) return Math.round(s) + " s";
    if (s < 3600) return Math.round(s / 60) + " min";
    if (s < 86400) return (s / 3600).toFixed(1) + " h";
    return (s / 86400).toFixed(1) + " d";
  }
  // a stable colour per name (tenant, job)
  function hue(s) {
    let h = 0;
    for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) >>> 0;
    return `hsl(${h % 360} 65% 52%)`;
  }
  const jobLink = (id, text) => el("a", { href: "/ui/jobs/" + id, text: text === undefined ? String(id) : text });

  let me = null;
  async function whoami() {
    if (!me) me = await api("/v1/whoami");
    return me;
  }

  async function poll(fn, ms) {
    for (;;) {
      try { await fn(); showError(null); } catch (e) { if (e.status !== 401) showError(e); }
      await new Promise((r) => setTimeout(r, ms));
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const out = document.getElementById("logout");
    if (out) out.addEventListener("click", () => { localStorage.removeItem(KEY); login(); });
    if (document.body.dataset.page !== "login" && token()) {
      whoami().then((w) => {
        document.getElementById("who").textContent = w.admin ? "admin" : "tenant " + w.tenant;
      }).catch(() => {});
    }
  });
  return { KEY, token, api, el, rows, showError, when, ago, hue, jobLink, whoami, poll };
})();
