"use strict";
(() => {
  const { api, el, rows } = SL;
  const $ = (id) => document.getElementById(id);
  const num = (v, d = 0) => (v === null || v === undefined ? "-" : Number(v).toLocaleString(undefined,
    { maximumFractionDigits: d }));
  const COLS = {
    serve: [["accelerator", (r) => r.accelerator], ["precision", (r) => r.precision || "-"],
      ["chips/replica", (r) => r.chips_per_replica ?? "-"], ["replicas", (r) => num(r.replicas)],
      ["chips", (r) => num(r.chips)], ["batch", (r) => r.batch ? `${r.batch}/${r.max_batch}` : "-"],
      ["out tok/s", (r) => num(r.tokens_per_s)], ["TTFT s", (r) => num(r.ttft_s, 2)],
      ["TPOT ms", (r) => (r.tpot_s === null ? "-" : num(r.tpot_s * 1e3))], ["$/M tok", (r) => num(r.usd_per_million_tokens, 3)],
      ["note", (r) => r.reason || (r.notes || []).join("; ")]],
    train: [["accelerator", (r) => r.accelerator], ["min chips (mem)", (r) => num(r.min_chips_memory)],
      ["chips", (r) => num(r.chips)], ["layout", (r) => r.layout || "-"], ["tokens/s", (r) => num(r.tokens_per_s)],
      ["MFU", (r) => (r.mfu === null || r.mfu === undefined ? "-" : (r.mfu * 100).toFixed(1) + "%")],
      ["days", (r) => num(r.days, 1)], ["chip-hours", (r) => num(r.chip_hours)], ["cost $", (r) => num(r.usd)],
      ["note", (r) => r.reason || (r.notes || []).join("; ")]],
  };
  async function run(kind, form) {
    const p = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (String(v).trim()) p.set(k, String(v).trim());
    $("plan-error").hidden = true;
    try {
      const data = await api(`/v1/plan/${kind}?` + p);
      document.querySelector("#plan thead").replaceChildren(el("tr", {}, COLS[kind].map(([h]) => el("th", { text: h }))));
      rows(document.querySelector("#plan tbody"), data, (r) => COLS[kind].map(([, f]) => f(r)));
    } catch (e) {
      $("plan-error").textContent = e.message; $("plan-error").hidden = false;
    }
  }
  for (const kind of ["serve", "train"]) {
    $(kind + "-form").addEventListener("submit", (ev) => { ev.preventDefault(); run(kind, ev.target); });
  }
})();
