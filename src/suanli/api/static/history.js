// Over time: allocation, running/waiting jobs and waiting jobs by reason, from the controller's samples.
"use strict";
(() => {
  const { api, poll } = SL;
  const charts = {};
  const COLOURS = ["#2f6fde", "#e8743b", "#19a979", "#945ecf", "#ed4a7b", "#13a4b4", "#bf399e", "#6c8893", "#ee6868"];
  function chart(id, title, series, data) {
    const box = document.getElementById(id);
    const width = Math.max(400, box.clientWidth || 800);
    const opts = { width, height: 220, series: [{}, ...series.map((s, i) => ({ label: s, stroke: COLOURS[i % COLOURS.length],
      width: 2 }))], axes: [{}, { size: 60 }], scales: { x: { time: true } } };
    if (charts[id]) charts[id].destroy();
    box.replaceChildren();
    charts[id] = new uPlot(opts, data, box);
  }
  async function load() {
    const w = document.getElementById("window").value;
    const h = await api("/v1/history?window=" + w);
    const t = h.samples.map((s) => s.at);
    chart("chart-alloc", "devices", ["allocated", "total"], [t, h.samples.map((s) => s.allocated),
      h.samples.map((s) => s.total)]);
    chart("chart-queue", "jobs", ["running", "waiting"], [t, h.samples.map((s) => s.running),
      h.samples.map((s) => s.pending)]);
    const codes = [...new Set(h.samples.flatMap((s) => Object.keys(s.reasons || {})))].sort();
    chart("chart-reasons", "waiting", codes.length ? codes : ["none"], [t, ...(codes.length ? codes : ["none"]).map((c) =>
      h.samples.map((s) => (s.reasons || {})[c] || 0))]);
    document.getElementById("history-info").textContent =
      `${h.samples.length} samples, every ${h.step_s} s` + (h.samples.length ? "" : " (none yet: the controller samples as it runs)");
    document.body.dataset.ready = "1";
  }
  document.getElementById("window").addEventListener("change", () => load().catch(SL.showError));
  poll(load, 15000);
})();
